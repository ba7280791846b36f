"""DVR's occupancy marching kernels (autonomousvision/differentiable_volumetric_rendering,
`im2mesh/dvr/models/depth_function.py`): uniform proposals between each ray's entry and exit, the first
sign change of the logit `f - level` (positive inside), then secant or bisection refinement of the
bracket. Driven by `taichi_sdf.implicit.marchers.dvr`; none of these kernels is differentiated.

Per-ray state (`[N]`): `t_lo`, `t_hi` (the proposal span), `pos` (the last consumed coarse proposal,
-1 before proposal 0) and `f_prev` (its value), `end`, `f_end` (the coarse end of the candidate
interval (pos, end) to walk at full resolution next, or -1), `best_f`, `best_t` (largest value
seen: the point nearest the surface), `state` (below), `steps` (points evaluated), and the bracket
`b_t0, b_f0, b_t1, b_f1` with `t_pred` (the refined depth). Proposal s of n sits at
`t_lo + s / (n - 1) * (t_hi - t_lo)` (DVR's `linspace(0, 1, n)` grid); coarse proposals are every
`stride`-th and the last (stride 1: DVR's exact walk, every interval is a pair of neighbours).
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
    def wanted(pos: ti.template(), end: ti.template(), r, k, stride, n_steps):
        """(first fine index, index step, count) of ray r's next proposals: the fine ones inside its
        candidate interval (pos, end), else its next k coarse ones (proposal 0 alone at the start)."""
        first, step, cnt = 0, stride, 1
        if end[r] >= 0:
            first, step, cnt = pos[r] + 1, 1, end[r] - pos[r] - 1
        elif pos[r] >= 0:
            first = ti.min(pos[r] + stride, n_steps - 1)
            cnt = ti.min(k, (n_steps - 1 - pos[r] + stride - 1) // stride)
        return first, step, cnt

    @ti.kernel
    def gather_counts(state: iarr, pos: iarr, end: iarr, k: ti.i32, stride: ti.i32, n_steps: ti.i32, counts: iarr):
        """counts [N]: how many proposals each ray wants next (see `wanted`; 0 unless searching)."""
        for r in range(state.shape[0]):
            counts[r] = 0
            if state[r] == SEARCHING:
                first, step, cnt = wanted(pos, end, r, k, stride, n_steps)
                counts[r] = cnt

    @ti.kernel
    def gather(o: vec, d: vec, t_lo: arr, t_hi: arr, pos: iarr, end: iarr, k: ti.i32, stride: ti.i32,
               n_steps: ti.i32, slots: iarr, offsets: iarr, points: vec):  # fmt: skip
        """The next proposals of the searching rays `slots [M]` (in ray order), written as runs of
        points from `offsets [M]` (an exclusive scan of `gather_counts`, so the layout is fixed)."""
        for m in range(slots.shape[0]):
            r = slots[m]
            off = offsets[m]
            first, step, cnt = wanted(pos, end, r, k, stride, n_steps)
            for j in range(cnt):
                t = proposal(t_lo, t_hi, r, ti.min(first + j * step, n_steps - 1), n_steps)
                for c in ti.static(range(3)):
                    points[off + j, c] = o[r, c] + t * d[r, c]

    @ti.func
    def crossing(fp, v):  # DVR's sign change: a zero is none
        return (fp < 0.0 and v > 0.0) or (fp > 0.0 and v < 0.0)

    @ti.kernel
    def scan(vals: arr, slots: iarr, offsets: iarr, k: ti.i32, stride: ti.i32, n_steps: ti.i32, margin: f,
             t_lo: arr, t_hi: arr, pos: iarr, end: iarr, f_prev: arr, f_end: arr, best_f: arr, best_t: arr,
             state: iarr, steps: iarr, b_t0: arr, b_f0: arr, b_t1: arr, b_f1: arr, count: iarr):  # fmt: skip
        """Consume each ray's run of values in ray order. Coarse values (proposal p after the last
        consumed coarse proposal a): p = 0 occupied (>= 0) -> INSIDE; a pair of neighbours -> its sign
        change decides; an interval (a, p) that is a candidate (a sign change, or an end within
        `margin` of the level) -> refine it next (the rest of the run is dropped). Fine values (the
        inside of a candidate interval, then its known end value): the first sign change -> HIT with
        bracket [s - 1, s] when it goes from outside (< 0) to inside, else MISS (DVR's rule); none ->
        back to coarse proposals after the interval. A ray past the last proposal -> MISS.
        count[0] = rays still searching."""
        count[0] = 0
        for m in range(slots.shape[0]):
            r = slots[m]
            off = offsets[m]
            first, step, cnt = wanted(pos, end, r, k, stride, n_steps)
            st = SEARCHING
            fp = f_prev[r]
            if end[r] >= 0:  # fine values pos+1 .. end-1, then the end's value (already counted)
                for j in range(cnt + 1):
                    s = first + j
                    v = f_end[r]
                    if j < cnt:
                        v = vals[off + j]
                        if v > best_f[r]:
                            best_f[r] = v
                            best_t[r] = proposal(t_lo, t_hi, r, s, n_steps)
                    if crossing(fp, v):
                        st = MISS
                        if fp < 0.0:
                            st = HIT
                            b_t0[r] = proposal(t_lo, t_hi, r, s - 1, n_steps)
                            b_f0[r] = fp
                            b_t1[r] = proposal(t_lo, t_hi, r, s, n_steps)
                            b_f1[r] = v
                        break
                    fp = v
                if st == SEARCHING:
                    pos[r] = end[r]
                    end[r] = -1
            else:
                a = pos[r]
                for j in range(cnt):
                    s = first + j * step
                    if s > n_steps - 1:
                        s = n_steps - 1
                    v = vals[off + j]
                    t = proposal(t_lo, t_hi, r, s, n_steps)
                    if v > best_f[r]:
                        best_f[r] = v
                        best_t[r] = t
                    if s == 0:
                        if v >= 0.0:
                            st = INSIDE
                            break
                    elif s - a == 1:
                        if crossing(fp, v):
                            st = MISS
                            if fp < 0.0:
                                st = HIT
                                b_t0[r] = proposal(t_lo, t_hi, r, a, n_steps)
                                b_f0[r] = fp
                                b_t1[r] = t
                                b_f1[r] = v
                            break
                    elif crossing(fp, v) or ti.min(ti.abs(fp), ti.abs(v)) <= margin:
                        end[r] = s
                        f_end[r] = v
                        break
                    a = s
                    fp = v
                pos[r] = a
            f_prev[r] = fp
            steps[r] += cnt
            if st == SEARCHING and end[r] < 0 and pos[r] >= n_steps - 1:
                st = MISS
            state[r] = st
            if st == SEARCHING:
                ti.atomic_add(count[0], 1)

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

    return SimpleNamespace(gather_counts=gather_counts, gather=gather, scan=scan, refine_gather=refine_gather,
                           refine_step=refine_step)  # fmt: skip
