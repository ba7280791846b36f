"""Wavefront tracing kernels: per-ray state updates between batched evaluations of a torch field.

The driver (`taichi_sdf.wavefront`) alternates: a kernel proposes points for the active rays (the
active set is compacted here), torch evaluates the field on them in one batch without gradients,
a kernel scatters the values back and advances each ray's state. None of these kernels is
differentiated.

Index arrays are int32; `t`-like arrays are per-ray `[N]` in the tracer's float type.
"""

import functools
from types import SimpleNamespace

import taichi as ti

from .dtypes import ti_float


@functools.cache
def wavefront_kernels(dtype: str):
    f = ti_float(dtype)
    vec = ti.types.ndarray(dtype=f, ndim=2)
    arr = ti.types.ndarray(dtype=f, ndim=1)
    iarr = ti.types.ndarray(dtype=ti.i32, ndim=1)

    @ti.kernel
    def sphere_bounds(o: vec, d: vec, t_near: arr, t_far: arr, t_close: arr, active: iarr, radius: f):
        """Chord of each ray through the sphere |x| = radius (near clamped at 0 for origins inside)."""
        for r in range(o.shape[0]):
            b = o[r, 0] * d[r, 0] + o[r, 1] * d[r, 1] + o[r, 2] * d[r, 2]
            c = o[r, 0] * o[r, 0] + o[r, 1] * o[r, 1] + o[r, 2] * o[r, 2] - radius * radius
            disc = b * b - c
            t_close[r] = ti.max(-b, 0.0)
            active[r] = 0
            t_near[r] = t_close[r]
            t_far[r] = t_close[r]
            if disc > 0.0:
                sq = ti.sqrt(disc)
                if -b + sq > 0.0:
                    active[r] = 1
                    t_near[r] = ti.max(-b - sq, 0.0)
                    t_far[r] = -b + sq

    @ti.kernel
    def compact(flags: iarr, out_idx: iarr, count: iarr):
        """Indices of the rays with flags != 0 (in any order) and their number in count[0]."""
        count[0] = 0
        for r in range(flags.shape[0]):
            if flags[r] != 0:
                out_idx[ti.atomic_add(count[0], 1)] = r

    @ti.kernel
    def gather_points(o: vec, d: vec, t: arr, idx: iarr, points: vec, offset: ti.i32):
        """points[offset + k] = o + t d of ray idx[k]."""
        for k in range(idx.shape[0]):
            r = idx[k]
            for c in ti.static(range(3)):
                points[offset + k, c] = o[r, c] + t[r] * d[r, c]

    @ti.kernel
    def scatter_track(vals: arr, offset: ti.i32, idx: iarr, t: arr, f_dst: arr, best_f: arr, best_t: arr):
        """f_dst[idx[k]] = vals[offset + k]; keep the smallest value seen per ray and its t."""
        for k in range(idx.shape[0]):
            r = idx[k]
            v = vals[offset + k]
            f_dst[r] = v
            if v < best_f[r]:
                best_f[r] = v
                best_t[r] = t[r]

    # -- IDR: two-sided sphere tracing -------------------------------------------------------------

    @ti.kernel
    def idr_converge(fv: arr, unfinished: iarr, eps: f) -> ti.i32:
        """A side converges when f <= eps (then f = 0 so the next step does not move it)."""
        n = 0
        for r in range(fv.shape[0]):
            if unfinished[r] != 0:
                if fv[r] <= eps:
                    fv[r] = 0.0
                    unfinished[r] = 0
                else:
                    n += 1
        return n

    @ti.kernel
    def idr_advance(t: arr, fv: arr, f_prev: arr, unfinished: iarr, sign: f):
        """Start side: t += f; end side (sign -1): t -= f."""
        for r in range(t.shape[0]):
            if unfinished[r] != 0:
                f_prev[r] = fv[r]
                t[r] += sign * fv[r]

    @ti.kernel
    def idr_backoff(t: arr, fv: arr, f_prev: arr, unfinished: iarr, flags: iarr, factor: f, sign: f) -> ti.i32:
        """Rays that stepped through the surface (f < 0) move back by factor * f_prev."""
        n = 0
        for r in range(t.shape[0]):
            flags[r] = 0
            if unfinished[r] != 0 and fv[r] < 0.0:
                t[r] -= sign * factor * f_prev[r]
                flags[r] = 1
                n += 1
        return n

    @ti.kernel
    def idr_meet(t_s: arr, t_e: arr, unf_s: iarr, unf_e: iarr):
        for r in range(t_s.shape[0]):
            if t_s[r] >= t_e[r]:
                unf_s[r] = 0
                unf_e[r] = 0

    # -- sampler + secant for rays that did not converge ---------------------------------------------

    @ti.kernel
    def sample_points(o: vec, d: vec, t_lo: arr, t_hi: arr, idx: iarr, n_samples: ti.i32, points: vec):
        """n_samples uniform points on [t_lo, t_hi] (both ends included) of each ray idx[k]."""
        for k, s in ti.ndrange(idx.shape[0], n_samples):
            r = idx[k]
            w = ti.cast(s, f) / ti.cast(n_samples - 1, f)
            t = t_lo[r] + w * (t_hi[r] - t_lo[r])
            for c in ti.static(range(3)):
                points[k * n_samples + s, c] = o[r, c] + t * d[r, c]

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

    @ti.kernel
    def secant_points(o: vec, d: vec, idx: iarr, z_low: arr, z_high: arr, f_low: arr, f_high: arr,
                      z_pred: arr, points: vec):  # fmt: skip
        for k in range(idx.shape[0]):
            r = idx[k]
            denom = f_high[k] - f_low[k]
            z = z_high[k]
            if denom != 0.0:
                z = z_low[k] - f_low[k] * (z_high[k] - z_low[k]) / denom
            z_pred[k] = z
            for c in ti.static(range(3)):
                points[k, c] = o[r, c] + z * d[r, c]

    @ti.kernel
    def secant_update(vals: arr, z_low: arr, z_high: arr, f_low: arr, f_high: arr, z_pred: arr):
        for k in range(vals.shape[0]):
            v = vals[k]
            if v > 0.0:
                z_low[k] = z_pred[k]
                f_low[k] = v
            if v < 0.0:
                z_high[k] = z_pred[k]
                f_high[k] = v

    # -- DIST: aggressive marching with a pixel pyramid ------------------------------------------------

    @ti.kernel
    def dist_step(vals: arr, idx: iarr, t: arr, t_far: arr, active: iarr, best_f: arr, best_t: arr,
                  converged: iarr, alpha: f, clamp: f, eps: f):  # fmt: skip
        """t += alpha * clamp(f, -clamp, clamp); a ray stops on |f| < eps or past its far bound."""
        for k in range(idx.shape[0]):
            r = idx[k]
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

    @ti.kernel
    def upsample_nearest(coarse: ti.types.ndarray(dtype=f, ndim=3), fine: ti.types.ndarray(dtype=f, ndim=3)):
        """fine[b, i, j] = coarse[b, i // 2, j // 2] (clamped at the border)."""
        for b, i, j in fine:
            fine[b, i, j] = coarse[b, ti.min(i // 2, coarse.shape[1] - 1), ti.min(j // 2, coarse.shape[2] - 1)]

    return SimpleNamespace(
        sphere_bounds=sphere_bounds, compact=compact, gather_points=gather_points, scatter_track=scatter_track,
        idr_converge=idr_converge, idr_advance=idr_advance, idr_backoff=idr_backoff, idr_meet=idr_meet,
        sample_points=sample_points, sample_select=sample_select, secant_points=secant_points,
        secant_update=secant_update, dist_step=dist_step, upsample_nearest=upsample_nearest,
    )
