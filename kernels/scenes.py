"""Built-in scenes as `@ti.func sdf(p, params)` composed from `kernels.sdf_lib` (twins in
`taichi_sdf.reference.scenes`). Parameters are a flat `[P]` array so they can be optimised."""

import taichi as ti

from .sdf_lib import (
    op_intersection,
    op_smooth_union,
    op_subtraction,
    op_union,
    sd_box,
    sd_capsule,
    sd_cylinder,
    sd_round_box,
    sd_sphere,
    sd_torus,
    translate,
)


@ti.func
def sphere(p, params: ti.template()):
    """params: [cx, cy, cz, radius]."""
    return sd_sphere(translate(p, ti.Vector([params[0], params[1], params[2]])), params[3])


@ti.func
def csg(p, params: ti.template()):
    """The classic CSG solid: (rounded cube with half-size s) ∩ (sphere R) minus three cylinders of
    radius rc along x, y and z. params: [s, R, rc]."""
    s, R, rc = params[0], params[1], params[2]
    body = op_intersection(sd_round_box(p, ti.Vector([s, s, s]), 0.0625), sd_sphere(p, R))
    along_y = sd_cylinder(p, 1.0, rc)
    along_x = sd_cylinder(ti.Vector([p[1], p[0], p[2]]), 1.0, rc)
    along_z = sd_cylinder(ti.Vector([p[0], p[2], p[1]]), 1.0, rc)
    return op_subtraction(body, op_union(along_y, op_union(along_x, along_z)))


@ti.func
def sphere_box(p, params: ti.template()):
    """Union of a sphere (radius r at x = -0.25) and a cube (half-size b at x = +0.3125; constants exact in f32 so f64 kernels match). params: [r, b]."""
    a = sd_sphere(translate(p, ti.Vector([-0.25, 0.0, 0.0])), params[0])
    b = sd_box(translate(p, ti.Vector([0.3125, 0.0, 0.0])), ti.Vector([params[1], params[1], params[1]]))
    return op_union(a, b)


@ti.func
def blobs(p, params: ti.template()):
    """A torus (R, r) smoothly joined (k) with a sphere (radius sr above it) and a capsule (radius cr).
    params: [R, r, sr, k, cr]."""
    torus = sd_torus(p, params[0], params[1])
    ball = sd_sphere(translate(p, ti.Vector([0.0, 0.25, 0.0])), params[2])
    stick = sd_capsule(p, ti.Vector([-0.25, -0.375, 0.125]), ti.Vector([0.25, -0.25, -0.125]), params[4])
    return op_smooth_union(op_smooth_union(torus, ball, params[3]), stick, params[3])
