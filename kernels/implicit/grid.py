"""Dense voxel grids: trilinear interpolation with a hand-written backward.

A grid `[X, Y, Z]` holds values at nodes spanning the box [lo, hi] inclusive: node (i, j, k) sits
at lo + (i, j, k) * (hi - lo) / (shape - 1). Points outside the box are clamped onto it (the value
is continued as a constant, the gradient w.r.t. the point is zero there).
"""

import functools

import taichi as ti

from taichi_sdf.kernels.dtypes import ti_float


@ti.func
def grid_cell(grid: ti.template(), p, lo, hi):
    """Base node index [3] and fractional offsets [3] of point p inside the grid's cell, plus the
    derivative of the continuous index w.r.t. p (zero on clamped axes)."""
    n = ti.Vector([grid.shape[0], grid.shape[1], grid.shape[2]])
    scale = (n - 1) / (hi - lo)
    x = (p - lo) * scale
    dx_dp = scale
    for a in ti.static(range(3)):
        if x[a] < 0.0 or x[a] > n[a] - 1:
            dx_dp[a] = 0.0
        x[a] = ti.min(ti.max(x[a], 0.0), n[a] - 1)
    base = ti.min(ti.cast(ti.floor(x), ti.i32), n - 2)
    return base, x - base, dx_dp


@ti.func
def trilinear(grid: ti.template(), p, lo, hi):
    """Trilinear interpolation of `grid` at point p (a 3-vector)."""
    base, w, _ = grid_cell(grid, p, lo, hi)
    v = 0.0 * p[0]  # takes the dtype of p
    for di, dj, dk in ti.static(ti.ndrange(2, 2, 2)):
        wx = w[0] if di else 1.0 - w[0]
        wy = w[1] if dj else 1.0 - w[1]
        wz = w[2] if dk else 1.0 - w[2]
        v += wx * wy * wz * grid[base[0] + di, base[1] + dj, base[2] + dk]
    return v


@ti.func
def trilinear_grad(grid: ti.template(), p, lo, hi):
    """Gradient of `trilinear` w.r.t. the point p (a 3-vector)."""
    base, w, dx_dp = grid_cell(grid, p, lo, hi)
    g = 0.0 * p
    for di, dj, dk in ti.static(ti.ndrange(2, 2, 2)):
        wx = w[0] if di else 1.0 - w[0]
        wy = w[1] if dj else 1.0 - w[1]
        wz = w[2] if dk else 1.0 - w[2]
        sx = 1.0 if di else -1.0
        sy = 1.0 if dj else -1.0
        sz = 1.0 if dk else -1.0
        val = grid[base[0] + di, base[1] + dj, base[2] + dk]
        g += val * ti.Vector([sx * wy * wz, wx * sy * wz, wx * wy * sz])
    return g * dx_dp


@functools.cache
def grid_sample_kernels(dtype: str):
    """(forward, backward) for `values[n] = trilinear(grid, points[n])`.

    forward(grid [X,Y,Z], points [N,3], values [N], lo_x, lo_y, lo_z, hi_x, hi_y, hi_z)
    backward(grid, points, values, grad_values, grad_grid, grad_points, lo..., hi...)
    """
    f = ti_float(dtype)
    grid_t = ti.types.ndarray(dtype=f, ndim=3)
    pts_t = ti.types.ndarray(dtype=f, ndim=2)
    vals_t = ti.types.ndarray(dtype=f, ndim=1)

    @ti.kernel
    def forward(
        grid: grid_t, points: pts_t, values: vals_t,
        lo_x: f, lo_y: f, lo_z: f, hi_x: f, hi_y: f, hi_z: f,
    ):  # fmt: skip
        # Loop-only body (no statements outside the loop) so that Taichi autodiff accepts it.
        for n in range(points.shape[0]):
            lo = ti.Vector([lo_x, lo_y, lo_z])
            hi = ti.Vector([hi_x, hi_y, hi_z])
            p = ti.Vector([points[n, 0], points[n, 1], points[n, 2]])
            values[n] = trilinear(grid, p, lo, hi)

    @ti.kernel
    def backward(
        grid: grid_t, points: pts_t, values: vals_t, grad_values: vals_t,
        grad_grid: grid_t, grad_points: pts_t,
        lo_x: f, lo_y: f, lo_z: f, hi_x: f, hi_y: f, hi_z: f,
    ):  # fmt: skip
        lo = ti.Vector([lo_x, lo_y, lo_z])
        hi = ti.Vector([hi_x, hi_y, hi_z])
        for n in range(points.shape[0]):
            p = ti.Vector([points[n, 0], points[n, 1], points[n, 2]])
            g = grad_values[n]
            base, w, _ = grid_cell(grid, p, lo, hi)
            for di, dj, dk in ti.static(ti.ndrange(2, 2, 2)):
                wx = w[0] if di else 1.0 - w[0]
                wy = w[1] if dj else 1.0 - w[1]
                wz = w[2] if dk else 1.0 - w[2]
                grad_grid[base[0] + di, base[1] + dj, base[2] + dk] += g * wx * wy * wz
            dp = trilinear_grad(grid, p, lo, hi) * g
            for a in ti.static(range(3)):
                grad_points[n, a] += dp[a]

    return forward, backward


@functools.cache
def grid_sdf(lo: tuple, hi: tuple):
    """`@ti.func sdf(p, grid)`: trilinear SDF of a grid spanning the box [lo, hi] (one func per box,
    so tracer kernels compile once per box)."""

    @ti.func
    def sdf(p, grid: ti.template()):
        return trilinear(grid, p, ti.Vector([lo[0], lo[1], lo[2]]), ti.Vector([hi[0], hi[1], hi[2]]))

    return sdf
