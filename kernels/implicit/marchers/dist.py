"""DIST's marching kernels (B1ueber2y/DIST-Renderer `SDFRenderer`): aggressive marching
`t += alpha * clamp(f, -clamp, clamp)` with early exit, and the nearest-neighbour upsampling of its
coarse-to-fine pixel pyramid. Driven by `taichi_sdf.implicit.marchers.dist`; fields are SDFs
(negative inside) whose level set 0 is traced.

`dist_step_gather_buffered` is the same step that also keeps, per ray, the K samples of smallest |f|
in ascending order (DIST's `buffer_size` samples of its approximate depth gradient, `renderer.py`
`get_index_from_sdf_list(..., 'min_abs')`); it changes nothing else, so marching is identical.
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

    tpl = ti.template()  # arrays reach a ti.func by reference

    @ti.func
    def step_ray(k, vals: tpl, slots: tpl, o: tpl, d: tpl, t: tpl, t_far: tpl, active: tpl, best_f: tpl, best_t: tpl,
                 converged: tpl, next_points: tpl, next_slots: tpl, count: tpl, alpha, clamp, eps, gather):  # fmt: skip
        """Apply value k to its ray: track the min-|f| point, stop on |f| < eps or past the far bound,
        else step t and (when `gather`) write the next point."""
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

    @ti.func
    def keep_smallest(buf_f: tpl, buf_t: tpl, r, a, tv):
        """Insert the sample (|f| = a, t = tv) into ray r's buffer, ascending in |f| (empty slots hold
        inf); a tie goes after the samples already there, so the earlier sample comes first."""
        last = buf_f.shape[1] - 1
        if a < buf_f[r, last]:
            j = last
            while j > 0:
                if buf_f[r, j - 1] > a:
                    buf_f[r, j] = buf_f[r, j - 1]
                    buf_t[r, j] = buf_t[r, j - 1]
                    j -= 1
                else:
                    break
            buf_f[r, j] = a
            buf_t[r, j] = tv

    @ti.kernel
    def dist_step_gather(vals: arr, slots: iarr, o: vec, d: vec, t: arr, t_far: arr, active: iarr,
                         best_f: arr, best_t: arr, converged: iarr, next_points: vec, next_slots: iarr,
                         count: iarr, alpha: f, clamp: f, eps: f, gather: ti.i32):  # fmt: skip
        """t += alpha * clamp(f, -clamp, clamp); a ray stops on |f| < eps or past its far bound; the
        rays still active (when `gather`) write their next points."""
        count[0] = 0
        for k in range(vals.shape[0]):
            step_ray(k, vals, slots, o, d, t, t_far, active, best_f, best_t, converged, next_points, next_slots, count,
                     alpha, clamp, eps, gather)  # fmt: skip

    @ti.kernel
    def dist_step_gather_buffered(vals: arr, slots: iarr, o: vec, d: vec, t: arr, t_far: arr, active: iarr,
                                  best_f: arr, best_t: arr, converged: iarr, buf_f: vec, buf_t: vec, next_points: vec,
                                  next_slots: iarr, count: iarr, alpha: f, clamp: f, eps: f, gather: ti.i32):  # fmt: skip
        """`dist_step_gather` that also keeps each ray's samples of smallest |f| in `buf_f, buf_t [N, K]`
        (|f| ascending; start them at inf and NaN)."""
        count[0] = 0
        for k in range(vals.shape[0]):
            r = slots[k]
            keep_smallest(buf_f, buf_t, r, ti.abs(vals[k]), t[r])
            step_ray(k, vals, slots, o, d, t, t_far, active, best_f, best_t, converged, next_points, next_slots, count,
                     alpha, clamp, eps, gather)  # fmt: skip

    @ti.kernel
    def upsample_nearest(coarse: ti.types.ndarray(dtype=f, ndim=3), fine: ti.types.ndarray(dtype=f, ndim=3)):
        """fine[b, i, j] = coarse[b, i // 2, j // 2] (clamped at the border)."""
        for b, i, j in fine:
            fine[b, i, j] = coarse[b, ti.min(i // 2, coarse.shape[1] - 1), ti.min(j // 2, coarse.shape[2] - 1)]

    return SimpleNamespace(
        dist_gather=dist_gather,
        dist_step_gather=dist_step_gather,
        dist_step_gather_buffered=dist_step_gather_buffered,
        upsample_nearest=upsample_nearest,
    )
