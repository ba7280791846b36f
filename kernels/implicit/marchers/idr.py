"""IDR's marching kernels (lioryariv/idr `ray_tracing.py`): two-sided sphere tracing with packed
per-ray state, then the uniform sampler's selection and secant refinement for rays that did not
converge. Driven by `taichi_sdf.implicit.marchers.idr`; fields are SDFs (negative inside) whose
level set 0 is traced (the driver subtracts any other level before the values reach these kernels).
"""

import functools
from types import SimpleNamespace

import taichi as ti

from taichi_sdf.kernels.dtypes import ti_float


@functools.cache
def idr_kernels(dtype: str) -> SimpleNamespace:
    """The kernels of `IDRMarcher` for `dtype` ("f32" | "f64")."""
    f = ti_float(dtype)
    vec = ti.types.ndarray(dtype=f, ndim=2)
    arr = ti.types.ndarray(dtype=f, ndim=1)
    iarr = ti.types.ndarray(dtype=ti.i32, ndim=1)

    # -- IDR: two-sided sphere tracing ---------------------------------------------------------------
    # Per-ray state is packed as [2, N] arrays (row 0: the start side marching forward, row 1: the end
    # side marching backward) so that one launch updates both sides and gathers their next points
    # into one batch: Python-side launch overhead, not arithmetic, is what these kernels cost.
    side2 = ti.types.ndarray(dtype=f, ndim=2)
    iside2 = ti.types.ndarray(dtype=ti.i32, ndim=2)

    @ti.func
    def _emit(o: ti.template(), d: ti.template(), t, r, side, points: ti.template(), slots: ti.template(), count: ti.template()):
        k = ti.atomic_add(count[0], 1)
        slots[k] = r * 2 + side
        for c in ti.static(range(3)):
            points[k, c] = o[r, c] + t * d[r, c]

    @ti.kernel
    def idr_gather_all(o: vec, d: vec, t2: side2, unf2: iside2, points: vec, slots: iarr, count: iarr):
        """Points of every unfinished side (the first evaluation)."""
        count[0] = 0
        for r in range(o.shape[0]):
            for side in ti.static(range(2)):
                if unf2[side, r] != 0:
                    _emit(o, d, t2[side, r], r, side, points, slots, count)

    @ti.kernel
    def idr_advance_gather(o: vec, d: vec, t2: side2, f2: side2, fp2: side2, unf2: iside2, points: vec,
                           slots: iarr, count: iarr, eps: f, advance: ti.i32):  # fmt: skip
        """End of the previous iteration (sides that met stop), convergence test (f <= eps; then
        f = 0), and, when `advance`, the sphere-tracing step of the unfinished sides (start: t += f,
        end: t -= f) with their new points gathered. count[0] = number of sides still unfinished.
        One thread handles both sides of a ray (they read each other's t)."""
        count[0] = 0
        for r in range(o.shape[0]):
            met = t2[0, r] >= t2[1, r]
            for side in ti.static(range(2)):
                if unf2[side, r] != 0:
                    if met:
                        unf2[side, r] = 0
                    elif f2[side, r] <= eps:
                        f2[side, r] = 0.0
                        unf2[side, r] = 0
                    elif advance != 0:
                        fp2[side, r] = f2[side, r]
                        t2[side, r] += (1.0 - 2.0 * side) * f2[side, r]
                        _emit(o, d, t2[side, r], r, side, points, slots, count)
                    else:
                        ti.atomic_add(count[0], 1)

    @ti.kernel
    def idr_backoff_gather(o: vec, d: vec, t2: side2, f2: side2, fp2: side2, unf2: iside2, points: vec,
                           slots: iarr, count: iarr, factor: f):  # fmt: skip
        """Sides that stepped through the surface (f < 0) move back by factor * f_prev."""
        count[0] = 0
        for r in range(o.shape[0]):
            for side in ti.static(range(2)):
                if unf2[side, r] != 0 and f2[side, r] < 0.0:
                    t2[side, r] -= (1.0 - 2.0 * side) * factor * fp2[side, r]
                    _emit(o, d, t2[side, r], r, side, points, slots, count)

    @ti.kernel
    def idr_scatter(vals: arr, slots: iarr, t2: side2, f2: side2, best_f: arr, best_t: arr):
        """Values back to their (ray, side); keep each ray's smallest value and its t."""
        for k in range(vals.shape[0]):
            r = slots[k] // 2
            side = slots[k] % 2
            v = vals[k]
            f2[side, r] = v
            ti.atomic_min(best_f[r], v)

    @ti.kernel
    def idr_scatter_t(vals: arr, slots: iarr, t2: side2, f2: side2, best_f: arr, best_t: arr):
        """Second pass of `idr_scatter`: the t of the minimum (atomic_min cannot carry it). On a tie
        the start side wins (a fixed rule: both sides of a ray are written in one parallel loop)."""
        for k in range(vals.shape[0]):
            r = slots[k] // 2
            side = slots[k] % 2
            if vals[k] == best_f[r] and (side == 0 or f2[0, r] != best_f[r]):
                best_t[r] = t2[side, r]

    # -- sampler selection + secant for rays that did not converge -----------------------------------

    @ti.kernel
    def sample_select(vals: arr, idx: iarr, n_samples: ti.i32, t_lo: arr, t_hi: arr,
                      z_low: arr, z_high: arr, f_low: arr, f_high: arr, found: iarr,
                      best_f: arr, best_t: arr):  # fmt: skip
        """First sample with f < 0 (a bracket [previous, it] for the secant) or the minimum sample."""
        for k in range(idx.shape[0]):
            r = idx[k]
            first = -1
            arg = 0
            vmin = vals[k * n_samples]
            for s in range(n_samples):
                v = vals[k * n_samples + s]
                if v < 0.0 and first < 0:
                    first = s
                if v < vmin:
                    vmin = v
                    arg = s
            step = (t_hi[r] - t_lo[r]) / ti.cast(n_samples - 1, f)
            found[k] = 0
            if first >= 0:
                found[k] = 1
                lo = ti.max(first - 1, 0)
                z_low[k] = t_lo[r] + lo * step
                z_high[k] = t_lo[r] + first * step
                f_low[k] = vals[k * n_samples + lo]
                f_high[k] = vals[k * n_samples + first]
            if vmin < best_f[r]:
                best_f[r] = vmin
                best_t[r] = t_lo[r] + arg * step

    @ti.func
    def _secant_predict(k, r, o: ti.template(), d: ti.template(), z_low: ti.template(), z_high: ti.template(),
                        f_low: ti.template(), f_high: ti.template(), z_pred: ti.template(), points: ti.template()):  # fmt: skip
        """z = z_low - f_low (z_high - z_low) / (f_high - f_low) for bracket k of ray r, and its point."""
        denom = f_high[k] - f_low[k]
        z = z_high[k]
        if denom != 0.0:
            z = z_low[k] - f_low[k] * (z_high[k] - z_low[k]) / denom
        z_pred[k] = z
        for c in ti.static(range(3)):
            points[k, c] = o[r, c] + z * d[r, c]

    @ti.kernel
    def secant_points(o: vec, d: vec, idx: iarr, z_low: arr, z_high: arr, f_low: arr, f_high: arr,
                      z_pred: arr, points: vec):  # fmt: skip
        for k in range(idx.shape[0]):
            _secant_predict(k, idx[k], o, d, z_low, z_high, f_low, f_high, z_pred, points)

    @ti.kernel
    def secant_update_points(o: vec, d: vec, idx: iarr, vals: arr, z_low: arr, z_high: arr, f_low: arr,
                             f_high: arr, z_pred: arr, points: vec):  # fmt: skip
        """Replace the bracket end with the same sign as f(z_pred), then the next prediction's points."""
        for k in range(vals.shape[0]):
            v = vals[k]
            if v > 0.0:
                z_low[k] = z_pred[k]
                f_low[k] = v
            if v < 0.0:
                z_high[k] = z_pred[k]
                f_high[k] = v
            _secant_predict(k, idx[k], o, d, z_low, z_high, f_low, f_high, z_pred, points)

    return SimpleNamespace(
        idr_gather_all=idr_gather_all, idr_advance_gather=idr_advance_gather, idr_backoff_gather=idr_backoff_gather,
        idr_scatter=idr_scatter, idr_scatter_t=idr_scatter_t, sample_select=sample_select,
        secant_points=secant_points, secant_update_points=secant_update_points,
    )  # fmt: skip
