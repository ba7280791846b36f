"""DIST's marching kernels (B1ueber2y/DIST-Renderer `SDFRenderer`): aggressive marching
`t += alpha * clamp(f, -clamp, clamp)` with early exit, and the nearest-neighbour upsampling of its
coarse-to-fine pixel pyramid. Driven by `taichi_sdf.implicit.marchers.dist`; fields are SDFs
(negative inside) whose level set 0 is traced.
"""

import functools
from types import SimpleNamespace

import taichi as ti

from taichi_sdf.kernels.dtypes import ti_float


@functools.cache
def dist_kernels(dtype: str) -> SimpleNamespace:
    """The kernels of `DISTMarcher` for `dtype` ("f32" | "f64")."""
    f = ti_float(dtype)
    vec = ti.types.ndarray(dtype=f, ndim=2)
    arr = ti.types.ndarray(dtype=f, ndim=1)
    iarr = ti.types.ndarray(dtype=ti.i32, ndim=1)

    @ti.kernel
    def dist_gather(o: vec, d: vec, t: arr, active: iarr, points: vec, slots: iarr, count: iarr):
        """Points of the active rays (the first evaluation of a level)."""
        count[0] = 0
        for r in range(o.shape[0]):
            if active[r] != 0:
                k = ti.atomic_add(count[0], 1)
                slots[k] = r
                for c in ti.static(range(3)):
                    points[k, c] = o[r, c] + t[r] * d[r, c]

    @ti.kernel
    def dist_step_gather(vals: arr, slots: iarr, o: vec, d: vec, t: arr, t_far: arr, active: iarr,
                         best_f: arr, best_t: arr, converged: iarr, next_points: vec, next_slots: iarr,
                         count: iarr, alpha: f, clamp: f, eps: f, gather: ti.i32):  # fmt: skip
        """t += alpha * clamp(f, -clamp, clamp); a ray stops on |f| < eps or past its far bound; the
        rays still active (when `gather`) write their next points."""
        count[0] = 0
        for k in range(vals.shape[0]):
            r = slots[k]
            v = vals[k]
            if ti.abs(v) < ti.abs(best_f[r]):
                best_f[r] = v
                best_t[r] = t[r]
            if ti.abs(v) < eps:
                converged[r] = 1
                active[r] = 0
            else:
                t[r] += alpha * ti.min(ti.max(v, -clamp), clamp)
                if t[r] > t_far[r]:
                    active[r] = 0
                elif gather != 0:
                    j = ti.atomic_add(count[0], 1)
                    next_slots[j] = r
                    for c in ti.static(range(3)):
                        next_points[j, c] = o[r, c] + t[r] * d[r, c]

    @ti.kernel
    def upsample_nearest(coarse: ti.types.ndarray(dtype=f, ndim=3), fine: ti.types.ndarray(dtype=f, ndim=3)):
        """fine[b, i, j] = coarse[b, i // 2, j // 2] (clamped at the border)."""
        for b, i, j in fine:
            fine[b, i, j] = coarse[b, ti.min(i // 2, coarse.shape[1] - 1), ti.min(j // 2, coarse.shape[2] - 1)]

    return SimpleNamespace(dist_gather=dist_gather, dist_step_gather=dist_step_gather, upsample_nearest=upsample_nearest)
