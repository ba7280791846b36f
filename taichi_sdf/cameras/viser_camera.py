"""Conversions between a browser viewer's camera (viser: position, orientation quaternion, vertical
field of view) and the project's `Camera`. viser uses OpenCV axes too (+x right, +y down, +z forward),
so the orientation is the camera-to-world rotation `R_world_cam` as a unit quaternion (w, x, y, z).

numpy and torch only: viser itself is imported by the viewer modules, never here.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from taichi_sdf.cameras.camera import Camera

__all__ = ["camera_from_viser", "viser_pose", "vertical_fov", "quaternion_to_matrix", "matrix_to_quaternion"]


def quaternion_to_matrix(wxyz) -> np.ndarray:
    """`[4]` quaternion (w, x, y, z; any non-zero length) -> `[3, 3]` rotation matrix."""
    q = np.asarray(wxyz, dtype=np.float64).reshape(4)
    n = float(np.linalg.norm(q))
    if not math.isfinite(n) or n < 1e-12:
        raise ValueError(f"wxyz: expected a finite non-zero quaternion, got {q.tolist()}")
    w, x, y, z = q / n
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])  # fmt: skip


def matrix_to_quaternion(R) -> np.ndarray:
    """`[3, 3]` rotation matrix -> `[4]` unit quaternion (w, x, y, z) with w >= 0 (Shepperd's method)."""
    R = np.asarray(R, dtype=np.float64).reshape(3, 3)
    tr = R[0, 0] + R[1, 1] + R[2, 2]
    if tr > 0:
        s = 2.0 * math.sqrt(tr + 1.0)
        q = [0.25 * s, (R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s]
    elif R[0, 0] > R[1, 1] and R[0, 0] > R[2, 2]:
        s = 2.0 * math.sqrt(1.0 + R[0, 0] - R[1, 1] - R[2, 2])
        q = [(R[2, 1] - R[1, 2]) / s, 0.25 * s, (R[0, 1] + R[1, 0]) / s, (R[0, 2] + R[2, 0]) / s]
    elif R[1, 1] > R[2, 2]:
        s = 2.0 * math.sqrt(1.0 + R[1, 1] - R[0, 0] - R[2, 2])
        q = [(R[0, 2] - R[2, 0]) / s, (R[0, 1] + R[1, 0]) / s, 0.25 * s, (R[1, 2] + R[2, 1]) / s]
    else:
        s = 2.0 * math.sqrt(1.0 + R[2, 2] - R[0, 0] - R[1, 1])
        q = [(R[1, 0] - R[0, 1]) / s, (R[0, 2] + R[2, 0]) / s, (R[1, 2] + R[2, 1]) / s, 0.25 * s]
    q = np.array(q)
    q /= np.linalg.norm(q)
    return -q if q[0] < 0 else q


def camera_from_viser(position, wxyz, fov_y: float, width: int, height: int) -> Camera:
    """The pinhole `Camera` (one, float32, CPU) of a viser camera for a `width x height` image.

    Args:
        position: `[3]` camera centre in world coordinates.
        wxyz: `[4]` orientation, the camera-to-world rotation (OpenCV axes).
        fov_y: vertical field of view in radians, in (0, pi).
        width, height: image size in pixels; square pixels, principal point at the image centre.
    """
    if not (isinstance(fov_y, (int, float)) and 0 < fov_y < math.pi):
        raise ValueError(f"fov_y: expected radians in (0, pi), got {fov_y!r}")
    if not (isinstance(width, int) and isinstance(height, int) and width >= 1 and height >= 1):
        raise ValueError(f"width, height: expected positive ints, got {width!r}, {height!r}")
    c = np.asarray(position, dtype=np.float64).reshape(3)
    if not np.isfinite(c).all():
        raise ValueError(f"position: expected a finite [3] point, got {c.tolist()}")
    R_world_cam = quaternion_to_matrix(wxyz)
    T = np.eye(4)
    T[:3, :3] = R_world_cam.T
    T[:3, 3] = -R_world_cam.T @ c
    f = 0.5 * height / math.tan(0.5 * fov_y)
    K = np.array([[f, 0.0, 0.5 * width], [0.0, f, 0.5 * height], [0.0, 0.0, 1.0]])
    return Camera(torch.tensor(K, dtype=torch.float32)[None], torch.tensor(T, dtype=torch.float32)[None], width, height)


def viser_pose(camera: Camera, index: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(wxyz `[4]`, position `[3]`) of camera `index` of a batch: where viser draws its frustum."""
    T = camera.T_world_cam[index].detach().double().cpu().numpy()
    return matrix_to_quaternion(T[:3, :3]), T[:3, 3].copy()


def vertical_fov(camera: Camera, index: int = 0) -> float:
    """Vertical field of view in radians of camera `index` (from fy and the image height)."""
    fy = float(camera.K[index, 1, 1])
    return 2.0 * math.atan(0.5 * camera.height / fy)
