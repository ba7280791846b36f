"""Camera rays as a differentiable Taichi op (gradients flow to K, the pose and pixel positions).

Conventions: OpenCV pinhole camera (x right, y down, z forward), `T_cam_world = [R | t]`, pixel
(i, j) (row, column) has its centre at (u, v) = (j + 0.5, i + 0.5). Directions are unit length, so the
ray parameter t is the Euclidean distance from the camera centre; multiply by `z_per_t` to get the
camera z-depth.
"""

from __future__ import annotations

import functools

import torch

from taichi_sdf.core.bridge import KernelOp
from taichi_sdf.core.dtypes import dtype_name
from taichi_sdf.core.validation import FLOAT_DTYPES, check_same_dtype, check_tensor
from taichi_sdf.kernels.cameras.rays import image_rays_kernel, pixel_rays_kernel


def _check_camera_tensors(K, T_cam_world, dims):
    check_tensor("K", K, shape=("B", 3, 3), dims=dims, dtype=FLOAT_DTYPES)
    check_tensor("T_cam_world", T_cam_world, shape=("B", 4, 4), dims=dims, dtype=FLOAT_DTYPES)
    check_same_dtype(K=K, T_cam_world=T_cam_world)


def image_rays(
    K: torch.Tensor,  # [B, 3, 3]
    T_cam_world: torch.Tensor,  # [B, 4, 4]
    height: int,
    width: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays through every pixel centre of B cameras.

    Args:
        K: `[B, 3, 3]` intrinsics in pixels (pixel centres at +0.5).
        T_cam_world: `[B, 4, 4]` world-to-camera transforms.
        height, width: image size in pixels.

    Returns:
        origins `[B, H, W, 3]` (the camera centres) and unit directions `[B, H, W, 3]`.

    Example:
        >>> cam = taichi_sdf.cameras.camera.look_at(torch.tensor([[0., 0., -3.]]), torch.zeros(1, 3))
        >>> o, d = image_rays(cam.K, cam.T_cam_world, cam.height, cam.width)
    """
    _check_camera_tensors(K, T_cam_world, {})
    if not (isinstance(height, int) and isinstance(width, int) and height > 0 and width > 0):
        raise ValueError(f"height, width: expected positive ints, got {height!r}, {width!r}")
    name = dtype_name(K.dtype)
    op = _image_rays_op(name)
    return op(K, T_cam_world, alloc_args=(height, width))


def pixel_rays(
    K: torch.Tensor,  # [B, 3, 3]
    T_cam_world: torch.Tensor,  # [B, 4, 4]
    pixels: torch.Tensor,  # [B, N, 2]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays through given continuous pixel positions `(u, v)` (e.g. random training pixels).

    Args:
        pixels: `[B, N, 2]` (u, v) positions; the centre of pixel (row i, column j) is (j + 0.5, i + 0.5).

    Returns:
        origins `[B, N, 3]` and unit directions `[B, N, 3]`.
    """
    dims: dict[str, int] = {}
    _check_camera_tensors(K, T_cam_world, dims)
    check_tensor("pixels", pixels, shape=("B", None, 2), dims=dims, dtype=K.dtype)
    return _pixel_rays_op(dtype_name(K.dtype))(K, T_cam_world, pixels)


@functools.cache
def _image_rays_op(dtype: str) -> KernelOp:
    return KernelOp(
        name="image_rays",
        forward=image_rays_kernel(dtype),
        allocate=lambda K, T, height, width: (
            K.new_empty(K.shape[0], height, width, 3),
            K.new_empty(K.shape[0], height, width, 3),
        ),
        input_names=("K", "T_cam_world"),
    )


@functools.cache
def _pixel_rays_op(dtype: str) -> KernelOp:
    return KernelOp(
        name="pixel_rays",
        forward=pixel_rays_kernel(dtype),
        allocate=lambda K, T, pixels: (
            K.new_empty(*pixels.shape[:2], 3),
            K.new_empty(*pixels.shape[:2], 3),
        ),
        input_names=("K", "T_cam_world", "pixels"),
    )


def z_per_t(T_cam_world: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """Camera z-depth per unit of ray distance: `z = t * z_per_t`.

    Args:
        T_cam_world: `[B, 4, 4]`; directions: `[B, ..., 3]` unit world directions.

    Returns:
        `[B, ...]` the cosine between each ray and the camera's optical axis.
    """
    axis = T_cam_world[:, 2, :3]  # camera z axis in world coordinates: row 2 of R
    shape = (axis.shape[0],) + (1,) * (directions.dim() - 2) + (3,)
    return (directions * axis.reshape(shape)).sum(-1)


def ray_box_interval(
    origins: torch.Tensor,  # [N, 3]
    directions: torch.Tensor,  # [N, 3]
    half_size: float = 0.5,
    padding: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where rays cross the cube `[-h, h]^3`, `h = half_size + padding / 2` (DVR's unit cube is
    `half_size = 0.5`; its `padding` widens the side by `padding`, as in im2mesh `check_ray_intersection_
    with_unit_cube`). Slab test; the near end is clamped at 0 for origins inside the cube.

    Returns:
        t_near, t_far `[N]` (in units of `directions`; 0 for rays that miss) and hit `[N]` bool.
    """
    h = half_size + padding / 2
    with torch.no_grad():
        safe = torch.where(directions.abs() < 1e-12, torch.full_like(directions, 1e-12), directions)
        t0, t1 = (-h - origins) / safe, (h - origins) / safe
        near = torch.minimum(t0, t1).amax(dim=-1).clamp_min(0.0)
        far = torch.maximum(t0, t1).amin(dim=-1)
        hit = far > near
        zero = torch.zeros_like(near)
        return torch.where(hit, near, zero), torch.where(hit, far, zero), hit
