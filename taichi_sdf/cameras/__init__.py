"""Cameras (OpenCV convention, conversions from/to IDR, NeRF, DVR), ray generation kernels and pose
refinement."""

from taichi_sdf.cameras.camera import (
    Camera,
    decompose_projection,
    fibonacci_cameras,
    fibonacci_sphere,
    intrinsics,
    invert_rigid,
    look_at,
    look_at_poses,
    orbit_cameras,
)

__all__ = [
    "Camera", "decompose_projection", "fibonacci_cameras", "fibonacci_sphere", "intrinsics", "invert_rigid",
    "look_at", "look_at_poses", "orbit_cameras",
]  # fmt: skip
