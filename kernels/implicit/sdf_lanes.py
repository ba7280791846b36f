"""Coordinate-wise, lane-generic versions of the `taichi_sdf.kernels.implicit.sdf_lib` primitives.

Each function takes the query point as separate coordinates `x, y, z` that are either scalars or
`ti.Vector`s of L lanes (a packet of L rays: all arithmetic is element-wise), so one definition
serves the scalar GPU kernels and the packet kernels that let LLVM vectorise across rays on CPUs.
Max, min and abs are `sdf_lib.fmax`/`fmin`/`fabs`, and lanes are negated as `0.0 - x`, so that the
built-in scenes can be compiled with vector IR (`vector_ir_safe`). The CSG operators of
`taichi_sdf.kernels.implicit.sdf_lib` (`op_union`, `op_smooth_union`, ...) are element-wise already
and work on lanes as they are. Same conventions and exactness as `taichi_sdf.kernels.implicit.sdf_lib`.
"""

import taichi as ti

from taichi_sdf.kernels.implicit.sdf_lib import fabs, fmax, fmin, vector_ir


def vector_ir_safe(sdf_xyz=None, *, march_group: int = 2):
    """Mark a lane-generic `sdf_xyz` `@ti.func` as safe to compile with Taichi's vector IR (see
    `sdf_lib.vector_ir`): it applies no `ti.abs` and no unary minus to lanes (use `fabs` and
    `0.0 - x`; Taichi 1.7 aborts the process on either there), and no `.any()` / `.all()` to them
    (wrong there, silently: `not (v > 0).any()` of 16 lanes disagreed with torch on 57 of 200 random
    packets; reduce with `.max()` / `.min()`). The CPU packet tracer then keeps its
    packets in SIMD registers from load to store: whole-packet loads and stores instead of one scalar
    access per lane, each reloading the array's address (the sphere∪box trace at 1024^2 rays,
    1 thread: 18.9 -> 14.6 ms with packet-row loads). Unmarked fields compile as before.

    `march_group`: packets marched side by side on AVX-512 CPUs (`fused_trace_packet_kernel`'s
    `group_size`). Two overlap the sqrt latency of small fields (512^2 rays, 1 thread, whole trace:
    sphere 4.02 -> 3.77 ms, blobs 8.91 -> 8.05, sphere∪box 4.16 -> 3.94); a large field already has
    that overlap within one evaluation and then spills registers (CSG 8.45 -> 9.05: give it 1).
    Use as `@vector_ir_safe` or `@vector_ir_safe(march_group=1)`."""
    if sdf_xyz is None:
        return lambda f: vector_ir_safe(f, march_group=march_group)
    if march_group not in (1, 2):
        raise ValueError(f"march_group: expected 1 or 2, got {march_group!r}")
    sdf_xyz.vector_ir = True
    sdf_xyz.march_group = march_group
    return sdf_xyz


@ti.func
def _safe_sqrt(l2):
    """sqrt(l2) for l2 >= 0 with gradient 0 (not NaN) at 0 (see `sdf_lib.length`). Under vector IR,
    which only forward kernels use, a plain sqrt (sqrt(0) = 0 already): the guard's compare and two
    blends are on the march's critical path (sphere∪box, 1024^2 rays, 1 thread: -7% of the march)."""
    r = l2
    if ti.static(vector_ir()):
        r = ti.sqrt(l2)
    else:
        pos = l2 > 0.0
        r = ti.select(pos, ti.sqrt(ti.select(pos, l2, 1.0)), 0.0)
    return r


@ti.func
def length2(x, y):
    """sqrt(x^2 + y^2) with gradient 0 (not NaN) at the origin."""
    return _safe_sqrt(x * x + y * y)


@ti.func
def length3(x, y, z):
    """sqrt(x^2 + y^2 + z^2) with gradient 0 (not NaN) at the origin."""
    return _safe_sqrt(x * x + y * y + z * z)


@ti.func
def min0(v):
    """min(v, 0) with gradient 1 at v = 0 (the face normal for points exactly on a face)."""
    return ti.select(v <= 0.0, v, 0.0)


@ti.func
def sphere(x, y, z, radius):
    return length3(x, y, z) - radius


@ti.func
def box(x, y, z, hx, hy, hz):
    qx, qy, qz = fabs(x) - hx, fabs(y) - hy, fabs(z) - hz
    return length3(fmax(qx, 0.0), fmax(qy, 0.0), fmax(qz, 0.0)) + min0(fmax(qx, fmax(qy, qz)))


@ti.func
def round_box(x, y, z, hx, hy, hz, radius):
    qx, qy, qz = fabs(x) - hx + radius, fabs(y) - hy + radius, fabs(z) - hz + radius
    return length3(fmax(qx, 0.0), fmax(qy, 0.0), fmax(qz, 0.0)) + min0(fmax(qx, fmax(qy, qz))) - radius


@ti.func
def torus(x, y, z, major_radius, minor_radius):
    return length2(length2(x, z) - major_radius, y) - minor_radius


@ti.func
def cylinder(x, y, z, half_height, radius):
    dx = fabs(length2(x, z)) - radius
    dy = fabs(y) - half_height
    return min0(fmax(dx, dy)) + length2(fmax(dx, 0.0), fmax(dy, 0.0))


@ti.func
def capsule(x, y, z, ax, ay, az, bx, by, bz, radius):
    pax, pay, paz = x - ax, y - ay, z - az
    bax, bay, baz = bx - ax, by - ay, bz - az
    h = fmin(fmax((pax * bax + pay * bay + paz * baz) / (bax * bax + bay * bay + baz * baz), 0.0), 1.0)
    return length3(pax - bax * h, pay - bay * h, paz - baz * h) - radius
