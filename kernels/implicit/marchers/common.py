"""Kernels shared by the marchers of torch-callable fields (`taichi_sdf.implicit.marchers`).

A marcher alternates: a kernel proposes points for the active rays (the drivers put them in ray
order before evaluating), torch evaluates the field on them in one batch without gradients, a kernel scatters the
values back and advances each ray's state. None of these kernels is differentiated.

Index arrays are int32; `t`-like arrays are per-ray `[N]` in the marcher's float type. Each
algorithm's own kernels live beside this module (`idr.py`, `dist.py`), one cached factory each.
"""

import functools
from types import SimpleNamespace

import taichi as ti

from taichi_sdf.kernels.dtypes import ti_float

_BIG = 1e30  # an unbounded slab


@functools.cache
def common_kernels(dtype: str) -> SimpleNamespace:
    """`sphere_bounds`, `cube_bounds`, `sample_points` for `dtype` ("f32" | "f64")."""
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
    def cube_bounds(o: vec, d: vec, t_near: arr, t_far: arr, t_close: arr, active: iarr, half: f):
        """Chord of each ray through the cube [-half, half]^3 (slab test; near clamped at 0 for origins
        inside); `t_close` = max(-o . d, 0), the point nearest the centre for unit directions."""
        for r in range(o.shape[0]):
            lo = ti.cast(-_BIG, f)
            hi = ti.cast(_BIG, f)
            for c in ti.static(range(3)):
                if d[r, c] != 0.0:
                    a = (-half - o[r, c]) / d[r, c]
                    b = (half - o[r, c]) / d[r, c]
                    lo = ti.max(lo, ti.min(a, b))
                    hi = ti.min(hi, ti.max(a, b))
                elif ti.abs(o[r, c]) > half:  # parallel to this slab and outside it
                    hi = ti.cast(-_BIG, f)
            t_close[r] = ti.max(-(o[r, 0] * d[r, 0] + o[r, 1] * d[r, 1] + o[r, 2] * d[r, 2]), 0.0)
            active[r] = 0
            t_near[r] = t_close[r]
            t_far[r] = t_close[r]
            if hi > lo and hi > 0.0:
                active[r] = 1
                t_near[r] = ti.max(lo, 0.0)
                t_far[r] = hi

    @ti.kernel
    def sample_points(o: vec, d: vec, t_lo: arr, t_hi: arr, idx: iarr, n_samples: ti.i32, points: vec):
        """n_samples uniform points on [t_lo, t_hi] (both ends included) of each ray idx[k]."""
        for k, s in ti.ndrange(idx.shape[0], n_samples):
            r = idx[k]
            w = ti.cast(s, f) / ti.cast(n_samples - 1, f)
            t = t_lo[r] + w * (t_hi[r] - t_lo[r])
            for c in ti.static(range(3)):
                points[k * n_samples + s, c] = o[r, c] + t * d[r, c]

    return SimpleNamespace(sphere_bounds=sphere_bounds, cube_bounds=cube_bounds,
                           sample_points=sample_points)  # fmt: skip
