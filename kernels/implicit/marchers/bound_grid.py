"""Chord bounds from a `BoundGrid` (`taichi_sdf.implicit.marchers.bound_grid`): per ray, the span of
its chord that is not certified free of `f <= margin` by the grid's cone bounds
`B(x) = max_c (g_c - L |x - x_c|)` over the 8 cell centres around x, checked between samples `step`
apart: a segment of length D between samples with bounds B0, B1 is certified when
`(B0 + B1 - L D) / 2 > margin`; also the sample of lowest trilinear interpolant of the grid (where
the ray passes closest to the surface, as far as the grid knows) and, within the span, the first zero
of the interpolant (linear between samples; NaN if none) with the interpolant's value at the span's
start: where the grid expects the surface. One thread per ray."""

import functools
from types import SimpleNamespace

import taichi as ti

from taichi_sdf.kernels.dtypes import ti_float


@functools.cache
def bound_grid_kernels(dtype: str) -> SimpleNamespace:
    """`chord_bounds` for `dtype` ("f32" | "f64")."""
    f = ti_float(dtype)
    vec = ti.types.ndarray(dtype=f, ndim=2)
    arr = ti.types.ndarray(dtype=f, ndim=1)
    iarr = ti.types.ndarray(dtype=ti.i32, ndim=1)
    grid3 = ti.types.ndarray(dtype=f, ndim=3)

    @ti.func
    def lower_bound(g: ti.template(), px, py, pz, res: ti.i32, cell: f, radius: f, slope: f):
        ix = ti.min(ti.max(ti.cast(ti.floor((px + radius) / cell - 0.5), ti.i32), 0), res - 2)
        iy = ti.min(ti.max(ti.cast(ti.floor((py + radius) / cell - 0.5), ti.i32), 0), res - 2)
        iz = ti.min(ti.max(ti.cast(ti.floor((pz + radius) / cell - 0.5), ti.i32), 0), res - 2)
        best = ti.cast(-1e30, f)
        for c in ti.static(range(8)):
            jx, jy, jz = ix + ((c >> 2) & 1), iy + ((c >> 1) & 1), iz + (c & 1)
            dx = px - ((jx + 0.5) * cell - radius)
            dy = py - ((jy + 0.5) * cell - radius)
            dz = pz - ((jz + 0.5) * cell - radius)
            best = ti.max(best, g[jx, jy, jz] - slope * ti.sqrt(dx * dx + dy * dy + dz * dz))
        return best

    @ti.func
    def interpolant(g: ti.template(), px, py, pz, res: ti.i32, cell: f, radius: f):
        ux, uy, uz = (px + radius) / cell - 0.5, (py + radius) / cell - 0.5, (pz + radius) / cell - 0.5
        ix = ti.min(ti.max(ti.cast(ti.floor(ux), ti.i32), 0), res - 2)
        iy = ti.min(ti.max(ti.cast(ti.floor(uy), ti.i32), 0), res - 2)
        iz = ti.min(ti.max(ti.cast(ti.floor(uz), ti.i32), 0), res - 2)
        fx = ti.min(ti.max(ux - ix, 0.0), 1.0)
        fy = ti.min(ti.max(uy - iy, 0.0), 1.0)
        fz = ti.min(ti.max(uz - iz, 0.0), 1.0)
        v = ti.cast(0.0, f)
        for c in ti.static(range(8)):
            wx = fx if (c >> 2) & 1 else 1.0 - fx
            wy = fy if (c >> 1) & 1 else 1.0 - fy
            wz = fz if c & 1 else 1.0 - fz
            v += wx * wy * wz * g[ix + ((c >> 2) & 1), iy + ((c >> 1) & 1), iz + (c & 1)]
        return v

    @ti.kernel
    def chord_bounds(o: vec, d: vec, t_near: arr, t_far: arr, g: grid3, t_enter: arr, t_exit: arr, any_open: iarr,
                     t_lowest: arr, t_zero: arr, v_enter: arr, cell: f, radius: f, slope: f, margin: f,
                     step: f):  # fmt: skip
        res = g.shape[0]
        for r in range(o.shape[0]):
            tn, tf = t_near[r], t_far[r]
            t_enter[r] = tn
            t_exit[r] = tf
            any_open[r] = 0
            t_lowest[r] = tn
            t_zero[r] = ti.cast(ti.math.nan, f)
            v_enter[r] = ti.cast(ti.math.nan, f)
            if tf > tn:
                n = ti.cast(ti.ceil((tf - tn) / step), ti.i32)
                t_prev = tn
                b_prev = lower_bound(g, o[r, 0] + tn * d[r, 0], o[r, 1] + tn * d[r, 1], o[r, 2] + tn * d[r, 2], res, cell,
                                     radius, slope)  # fmt: skip
                found = 0
                zero = 0
                first, last = tn, tf
                v_low = interpolant(g, o[r, 0] + tn * d[r, 0], o[r, 1] + tn * d[r, 1], o[r, 2] + tn * d[r, 2], res,
                                    cell, radius)  # fmt: skip
                v_prev = v_low
                for k in range(1, n + 1):
                    t = ti.min(tn + k * step, tf)
                    b = lower_bound(g, o[r, 0] + t * d[r, 0], o[r, 1] + t * d[r, 1], o[r, 2] + t * d[r, 2], res, cell,
                                    radius, slope)  # fmt: skip
                    v = interpolant(g, o[r, 0] + t * d[r, 0], o[r, 1] + t * d[r, 1], o[r, 2] + t * d[r, 2], res, cell,
                                    radius)  # fmt: skip
                    if (b_prev + b - slope * (t - t_prev)) / 2 <= margin:
                        if found == 0:
                            first = t_prev
                            v_enter[r] = v_prev
                        found = 1
                        last = t
                        if zero == 0 and v <= 0:  # the interpolant's first zero in the span
                            zero = 1
                            t_zero[r] = t_prev
                            if v_prev > 0:
                                t_zero[r] = t_prev + v_prev / (v_prev - v) * (t - t_prev)
                    if v < v_low:
                        v_low = v
                        t_lowest[r] = t
                    t_prev, b_prev, v_prev = t, b, v
                if found == 1:
                    t_enter[r] = first
                    t_exit[r] = last
                    any_open[r] = 1

    return SimpleNamespace(chord_bounds=chord_bounds)
