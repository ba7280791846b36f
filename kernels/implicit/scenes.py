"""Built-in scenes, written once in coordinate form `sdf_xyz(x, y, z, params)` (lane-generic:
x, y, z are scalars or packets of rays, see `taichi_sdf.kernels.implicit.sdf_lanes`) and wrapped as the vector-form
`sdf(p, params)` every tracer accepts. Parameters are a flat `[P]` array so they can be optimised.
Twins: `taichi_sdf.reference.implicit.scenes`. Constants are exact in f32 so f64 kernels match the twins."""

import taichi as ti

from taichi_sdf.kernels.implicit import sdf_lanes as S
from taichi_sdf.kernels.implicit.sdf_lib import op_intersection, op_smooth_union, op_subtraction, op_union


@S.vector_ir_safe
@ti.func
def sphere_xyz(x, y, z, params: ti.template()):
    """params: [cx, cy, cz, radius]."""
    return S.sphere(x - params[0], y - params[1], z - params[2], params[3])


@S.vector_ir_safe(march_group=1)
@ti.func
def csg_xyz(x, y, z, params: ti.template()):
    """The classic CSG solid: (rounded cube of half-size s) ∩ (sphere R) minus three cylinders of
    radius rc along x, y and z. params: [s, R, rc]."""
    s, R, rc = params[0], params[1], params[2]
    body = op_intersection(S.round_box(x, y, z, s, s, s, 0.0625), S.sphere(x, y, z, R))
    holes = op_union(S.cylinder(x, y, z, 1.0, rc), op_union(S.cylinder(y, x, z, 1.0, rc), S.cylinder(x, z, y, 1.0, rc)))
    return op_subtraction(body, holes)


@S.vector_ir_safe
@ti.func
def sphere_box_xyz(x, y, z, params: ti.template()):
    """Union of a sphere (radius r at x = -0.25) and a cube (half-size b at x = +0.3125). params: [r, b]."""
    b = params[1]
    return op_union(S.sphere(x + 0.25, y, z, params[0]), S.box(x - 0.3125, y, z, b, b, b))


@S.vector_ir_safe
@ti.func
def blobs_xyz(x, y, z, params: ti.template()):
    """A torus (R, r) smoothly joined (k) with a sphere (radius sr above it) and a capsule (radius cr)
    that reaches into the tube: one connected solid. params: [R, r, sr, k, cr]."""
    torus = S.torus(x, y, z, params[0], params[1])
    ball = S.sphere(x, y - 0.25, z, params[2])
    stick = S.capsule(x, y, z, -0.25, -0.375, 0.125, 0.375, 0.0, -0.125, params[4])
    return op_smooth_union(op_smooth_union(torus, ball, params[3]), stick, params[3])


@ti.func
def sphere(p, params: ti.template()):
    return sphere_xyz(p[0], p[1], p[2], params)


@ti.func
def csg(p, params: ti.template()):
    return csg_xyz(p[0], p[1], p[2], params)


@ti.func
def sphere_box(p, params: ti.template()):
    return sphere_box_xyz(p[0], p[1], p[2], params)


@ti.func
def blobs(p, params: ti.template()):
    return blobs_xyz(p[0], p[1], p[2], params)
