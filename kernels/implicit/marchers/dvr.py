"""DVR's occupancy marching kernels (autonomousvision/differentiable_volumetric_rendering,
`im2mesh/dvr/models/depth_function.py`): uniform proposals between each ray's entry and exit, the first
sign change of the logit `f - level` (positive inside), then secant or bisection refinement of the
bracket. Driven by `taichi_sdf.implicit.marchers.dvr`; none of these kernels is differentiated.

Per-ray state (`[N]`): `t_lo`, `t_hi` (the proposal span), `f_prev` (value at the last proposal),
`best_f`, `best_t` (largest value seen: the point nearest the surface), `state` (below), `steps`
(points evaluated), and the bracket `b_t0, b_f0, b_t1, b_f1` with `t_pred` (the refined depth).
Proposal s of n sits at `t_lo + s / (n - 1) * (t_hi - t_lo)` (DVR's `linspace(0, 1, n)` grid).
"""

import functools
from types import SimpleNamespace

import taichi as ti

from taichi_sdf.kernels.dtypes import ti_float

MISS, SEARCHING, HIT, INSIDE = 0, 1, 2, 3  # `state` values; INSIDE: the first proposal is occupied


@functools.cache
def dvr_kernels(dtype: str) -> SimpleNamespace:
    """The kernels of `DVRMarcher` for `dtype` ("f32" | "f64")."""
    f = ti_float(dtype)
    vec = ti.types.ndarray(dtype=f, ndim=2)
    arr = ti.types.ndarray(dtype=f, ndim=1)
    iarr = ti.types.ndarray(dtype=ti.i32, ndim=1)

    @ti.func
    def proposal(t_lo: ti.template(), t_hi: ti.template(), r, s, n_steps):
        return t_lo[r] + ti.cast(s, f) / ti.cast(n_steps - 1, f) * (t_hi[r] - t_lo[r])

    @ti.func
    def write_block(o: ti.template(), d: ti.template(), t_lo: ti.template(), t_hi: ti.template(), r, m, s0, k, n_steps,
                    points: ti.template()):  # fmt: skip
        for j in range(k):
            t = proposal(t_lo, t_hi, r, s0 + j, n_steps)
            for c in ti.static(range(3)):
                points[m * k + j, c] = o[r, c] + t * d[r, c]

    @ti.kernel
    def gather_block(o: vec, d: vec, t_lo: arr, t_hi: arr, state: iarr, s0: ti.i32, k: ti.i32, n_steps: ti.i32,
                     slots: iarr, points: vec, count: iarr):  # fmt: skip
        """Proposals s0 .. s0 + k - 1 of every searching ray: points [M * k] (ray-major), slots [M]."""
        count[0] = 0
        for r in range(o.shape[0]):
            if state[r] == SEARCHING:
                m = ti.atomic_add(count[0], 1)
                slots[m] = r
                write_block(o, d, t_lo, t_hi, r, m, s0, k, n_steps, points)

    @ti.kernel
    def scan_block(vals: arr, slots: iarr, s0: ti.i32, k: ti.i32, n_steps: ti.i32, o: vec, d: vec, t_lo: arr,
                   t_hi: arr, f_prev: arr, best_f: arr, best_t: arr, state: iarr, steps: iarr, b_t0: arr,
                   b_f0: arr, b_t1: arr, b_f1: arr, next_slots: iarr, next_points: vec, count: iarr,
                   k_next: ti.i32):  # fmt: skip
        """Walk each ray's block of k values in order: proposal 0 occupied (>= 0) -> INSIDE; the first
        sign change (v_prev * v < 0) -> HIT with bracket [s - 1, s] when it goes from outside (< 0) to
        inside, else MISS (DVR's rule); a zero is no sign change. Rays still searching after the block
        write the next block of `k_next` proposals (when k_next > 0), or become MISS after the last."""
        count[0] = 0
        for m in range(slots.shape[0]):
            r = slots[m]
            fp = f_prev[r]
            st = SEARCHING
            for j in range(k):
                s = s0 + j
                v = vals[m * k + j]
                t = proposal(t_lo, t_hi, r, s, n_steps)
                if v > best_f[r]:
                    best_f[r] = v
                    best_t[r] = t
                if s == 0:
                    if v >= 0.0:
                        st = INSIDE
                        break
                elif (fp < 0.0 and v > 0.0) or (fp > 0.0 and v < 0.0):
                    if fp < 0.0:
                        st = HIT
                        b_t0[r] = proposal(t_lo, t_hi, r, s - 1, n_steps)
                        b_f0[r] = fp
                        b_t1[r] = t
                        b_f1[r] = v
                    else:
                        st = MISS
                    break
                fp = v
            f_prev[r] = fp
            steps[r] += k
            if st == SEARCHING and s0 + k >= n_steps:
                st = MISS
            state[r] = st
            if st == SEARCHING and k_next > 0:
                mm = ti.atomic_add(count[0], 1)
                next_slots[mm] = r
                write_block(o, d, t_lo, t_hi, r, mm, s0 + k, k_next, n_steps, next_points)

    @ti.func
    def predict(b_t0: ti.template(), b_f0: ti.template(), b_t1: ti.template(), b_f1: ti.template(), r, bisection):
        t = 0.5 * (b_t0[r] + b_t1[r])
        if bisection == 0:  # f0 < 0 <= f1 (strictly f0 < f1): the denominator never vanishes
            t = b_t0[r] - b_f0[r] * (b_t1[r] - b_t0[r]) / (b_f1[r] - b_f0[r])
        return t

    @ti.kernel
    def refine_gather(idx: iarr, o: vec, d: vec, b_t0: arr, b_f0: arr, b_t1: arr, b_f1: arr, t_pred: arr,
                      points: vec, bisection: ti.i32):  # fmt: skip
        """The first secant (or bisection) prediction of each bracketed ray idx[k] and its point."""
        for k in range(idx.shape[0]):
            r = idx[k]
            t = predict(b_t0, b_f0, b_t1, b_f1, r, bisection)
            t_pred[r] = t
            for c in ti.static(range(3)):
                points[k, c] = o[r, c] + t * d[r, c]

    @ti.kernel
    def refine_step(vals: arr, idx: iarr, o: vec, d: vec, b_t0: arr, b_f0: arr, b_t1: arr, b_f1: arr, t_pred: arr,
                    steps: iarr, points: vec, bisection: ti.i32):  # fmt: skip
        """Replace the bracket end on the value's side (< 0: the outside end), predict again and write
        the next point (DVR: the prediction after the last step is the depth)."""
        for k in range(idx.shape[0]):
            r = idx[k]
            v = vals[k]
            if v < 0.0:
                b_t0[r] = t_pred[r]
                b_f0[r] = v
            else:
                b_t1[r] = t_pred[r]
                b_f1[r] = v
            steps[r] += 1
            t = predict(b_t0, b_f0, b_t1, b_f1, r, bisection)
            t_pred[r] = t
            for c in ti.static(range(3)):
                points[k, c] = o[r, c] + t * d[r, c]

    return SimpleNamespace(gather_block=gather_block, scan_block=scan_block, refine_gather=refine_gather,
                           refine_step=refine_step)  # fmt: skip
