"""Fused ray marching of Taichi-native occupancy fields (DVR's depth function in one kernel).

A field is a `@ti.func occ(p, params) -> scalar` occupancy logit, positive inside (the conventions of
`kernels/implicit/sphere_trace.py`: `p` a `ti.Vector` of 3, `params` an ndarray of any dims). One
thread marches one ray to the end: uniform proposals across the padded unit cube, the first sign change
of `occ - level`, secant / bisection in the bracket (the rules of `kernels/implicit/marchers/dvr.py`).
Forward only: gradients come from the loop-free `field_values` / `field_gradients` kernels at the
found points (implicit differentiation in `taichi_sdf.implicit.implicit_diff`).
"""

import functools

import taichi as ti

from taichi_sdf.kernels.dtypes import ti_float

_BIG = 1e30


@functools.cache
def fused_ray_march_kernel(occ, dtype: str, params_ndim: int):
    """kernel(origins [N,3], directions [N,3], params, t [N], hit [N] i32, t_min [N], f_min [N],
    steps [N] i32, half, level, depth_lo, depth_hi, search_outside, n_steps, n_refine, bisection, stride,
    margin) (`stride`, `margin`: `DVRMarcher.coarse_stride`, `refine_margin`).

    `hit` is 1 on a hit, 2 when the first proposal is occupied (DVR's d = 0; one evaluation), else 0.
    `t_min`/`f_min`: the evaluated proposal with the largest `occ - level` (rays never evaluated:
    the point nearest the cube's centre, `f_min` = -inf)."""
    f = ti_float(dtype)
    vec = ti.types.ndarray(dtype=f, ndim=2)
    scalar = ti.types.ndarray(dtype=f, ndim=1)
    flag = ti.types.ndarray(dtype=ti.i32, ndim=1)

    @ti.func
    def is_nan(v):  # on the bits: fast-math compiles `v != v` away
        res = False
        if ti.static(dtype == "f32"):
            res = (ti.bit_cast(v, ti.i32) & 0x7FFFFFFF) > 0x7F800000
        else:
            res = (ti.bit_cast(v, ti.i64) & ti.i64(0x7FFFFFFFFFFFFFFF)) > ti.i64(0x7FF0000000000000)
        return res

    @ti.func
    def prop(t_lo, t_hi, s, n_steps):  # proposal s of DVR's linspace grid
        return t_lo + ti.cast(s, f) / ti.cast(n_steps - 1, f) * (t_hi - t_lo)

    @ti.func
    def crossing(fp, v):  # DVR's sign change: a zero is none
        return (fp < 0.0 and v > 0.0) or (fp > 0.0 and v < 0.0)

    @ti.kernel
    def march(
        origins: vec, directions: vec, params: ti.types.ndarray(dtype=f, ndim=params_ndim),
        t_out: scalar, hit: flag, t_min: scalar, f_min: scalar, steps: flag,
        half: f, level: f, depth_lo: f, depth_hi: f, search_outside: ti.i32,
        n_steps: ti.i32, n_refine: ti.i32, bisection: ti.i32, stride: ti.i32, margin: f,
    ):  # fmt: skip
        for r in range(origins.shape[0]):
            o = ti.Vector([origins[r, 0], origins[r, 1], origins[r, 2]])
            d = ti.Vector([directions[r, 0], directions[r, 1], directions[r, 2]])
            lo, hi = ti.cast(-_BIG, f), ti.cast(_BIG, f)
            for c in ti.static(range(3)):
                if d[c] != 0.0:
                    a, b = (-half - o[c]) / d[c], (half - o[c]) / d[c]
                    lo, hi = ti.max(lo, ti.min(a, b)), ti.min(hi, ti.max(a, b))
                elif ti.abs(o[c]) > half:
                    hi = ti.cast(-_BIG, f)
            t_close = ti.max(-o.dot(d), 0.0)
            best_t, best_f = t_close, ti.cast(-_BIG, f)
            searching = 0
            t_lo, t_hi = t_close, t_close
            if hi > lo and hi > 0.0:
                searching, t_lo, t_hi = 1, ti.max(lo, 0.0), hi
            elif search_outside != 0:
                searching, t_lo, t_hi = 1, depth_lo, depth_hi
            state, n = 0, 0
            t0, f0, t1, f1, fp = t_close, ti.cast(0.0, f), t_close, ti.cast(0.0, f), ti.cast(0.0, f)
            if searching != 0:
                # Proposal 0, then coarse proposals a < b (every `stride`-th and the last); a candidate
                # interval (neighbours, a sign change, or an end within `margin` of the level) is
                # walked at full resolution: its first sign change ends the ray (stride 1: DVR's walk).
                v = occ(o + t_lo * d, params) - level
                n += 1
                best_f, best_t = v, t_lo
                done = 0
                if is_nan(v):
                    done = 1
                elif v >= 0.0:
                    state, done = 2, 1
                a, fa = 0, v
                while done == 0 and a < n_steps - 1:
                    b = ti.min(a + stride, n_steps - 1)
                    tb = prop(t_lo, t_hi, b, n_steps)
                    fb = occ(o + tb * d, params) - level
                    n += 1
                    if is_nan(fb):
                        best_f, done = fb, 1
                        break
                    if fb > best_f:
                        best_f, best_t = fb, tb
                    if b - a == 1 or crossing(fa, fb) or ti.min(ti.abs(fa), ti.abs(fb)) <= margin:
                        fp = fa
                        for s in range(a + 1, b + 1):
                            t = tb
                            v = fb
                            if s < b:
                                t = prop(t_lo, t_hi, s, n_steps)
                                v = occ(o + t * d, params) - level
                                n += 1
                                if is_nan(v):
                                    best_f, done = v, 1
                                    break
                                if v > best_f:
                                    best_f, best_t = v, t
                            if crossing(fp, v):
                                done = 1
                                if fp < 0.0:
                                    state = 1
                                    t0, f0, t1, f1 = prop(t_lo, t_hi, s - 1, n_steps), fp, t, v
                                break
                            fp = v
                    a, fa = b, fb
            t_res = best_t
            if state == 1:
                t_res = ti.select(bisection != 0, 0.5 * (t0 + t1), t0 - f0 * (t1 - t0) / (f1 - f0))
                for _ in range(n_refine):
                    v = occ(o + t_res * d, params) - level
                    n += 1
                    if v < 0.0:
                        t0, f0 = t_res, v
                    else:
                        t1, f1 = t_res, v
                    if is_nan(v):
                        best_f = v
                    t_res = ti.select(bisection != 0, 0.5 * (t0 + t1), t0 - f0 * (t1 - t0) / (f1 - f0))
            t_out[r] = t_res
            hit[r] = state
            t_min[r] = best_t
            f_min[r] = best_f
            steps[r] = n

    return march
