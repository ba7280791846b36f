"""Per-pixel camera rays (OpenCV pinhole, pixel centres at +0.5), differentiable in K and pose.

Both kernels are loop-free per pixel, so Taichi's reverse-mode autodiff is exact for them.
"""


import functools

import taichi as ti

from taichi_sdf.kernels.dtypes import ti_float


@ti.func
def _pixel_ray(K: ti.template(), T: ti.template(), b, u, v):
    """World-space origin and unit direction of the ray through continuous pixel (u, v) of camera b.

    K: [B, 3, 3] intrinsics (fx, skew, cx / fy, cy), T: [B, 4, 4] T_cam_world = [R | t].
    """
    fx = K[b, 0, 0]
    skew = K[b, 0, 1]
    fy = K[b, 1, 1]
    y = (v - K[b, 1, 2]) / fy
    x = (u - K[b, 0, 2] - skew * y) / fx
    # d_world = R^T [x, y, 1]
    dx = T[b, 0, 0] * x + T[b, 1, 0] * y + T[b, 2, 0]
    dy = T[b, 0, 1] * x + T[b, 1, 1] * y + T[b, 2, 1]
    dz = T[b, 0, 2] * x + T[b, 1, 2] * y + T[b, 2, 2]
    inv_norm = 1.0 / ti.sqrt(dx * dx + dy * dy + dz * dz)
    # origin = camera centre = -R^T t
    ox = -(T[b, 0, 0] * T[b, 0, 3] + T[b, 1, 0] * T[b, 1, 3] + T[b, 2, 0] * T[b, 2, 3])
    oy = -(T[b, 0, 1] * T[b, 0, 3] + T[b, 1, 1] * T[b, 1, 3] + T[b, 2, 1] * T[b, 2, 3])
    oz = -(T[b, 0, 2] * T[b, 0, 3] + T[b, 1, 2] * T[b, 1, 3] + T[b, 2, 2] * T[b, 2, 3])
    return ti.Vector([ox, oy, oz]), ti.Vector([dx * inv_norm, dy * inv_norm, dz * inv_norm])


@functools.cache
def image_rays_kernel(dtype: str):
    """kernel(K [B,3,3], T_cam_world [B,4,4], origins [B,H,W,3], directions [B,H,W,3])."""
    f = ti_float(dtype)

    @ti.kernel
    def image_rays(
        K: ti.types.ndarray(dtype=f, ndim=3),
        T: ti.types.ndarray(dtype=f, ndim=3),
        origins: ti.types.ndarray(dtype=f, ndim=4),
        directions: ti.types.ndarray(dtype=f, ndim=4),
    ):
        for b, i, j in ti.ndrange(directions.shape[0], directions.shape[1], directions.shape[2]):
            o, d = _pixel_ray(K, T, b, ti.cast(j, f) + 0.5, ti.cast(i, f) + 0.5)
            for c in ti.static(range(3)):
                origins[b, i, j, c] = o[c]
                directions[b, i, j, c] = d[c]

    return image_rays


@functools.cache
def pixel_rays_kernel(dtype: str):
    """kernel(K [B,3,3], T_cam_world [B,4,4], pixels [B,N,2], origins [B,N,3], directions [B,N,3])."""
    f = ti_float(dtype)

    @ti.kernel
    def pixel_rays(
        K: ti.types.ndarray(dtype=f, ndim=3),
        T: ti.types.ndarray(dtype=f, ndim=3),
        pixels: ti.types.ndarray(dtype=f, ndim=3),
        origins: ti.types.ndarray(dtype=f, ndim=3),
        directions: ti.types.ndarray(dtype=f, ndim=3),
    ):
        for b, n in ti.ndrange(pixels.shape[0], pixels.shape[1]):
            o, d = _pixel_ray(K, T, b, pixels[b, n, 0], pixels[b, n, 1])
            for c in ti.static(range(3)):
                origins[b, n, c] = o[c]
                directions[b, n, c] = d[c]

    return pixel_rays
