"""Signed distance functions, CSG operators and point transforms as `@ti.func`s.

Scenes are composed from these inside a user `@ti.func sdf(p, params)` (see `taichi_sdf.kernels.implicit.sphere_trace`).
Conventions:

- `p` is a `ti.Vector` of 3 (one query point); parameters are scalars or `ti.Vector`s / a
  `ti.Matrix` (3x3) of the same float type. The functions are dtype-generic: they run in f32 and
  f64 kernels alike (every literal here is exact in f32, so nothing is rounded in f64 kernels).
- Distances are exact Euclidean signed distances where a closed form exists: negative inside,
  zero on the surface, |grad| = 1 almost everywhere (Inigo Quilez's formulas are the reference).
- Transforms act on the query point, i.e. they apply the *inverse* of the shape's transform, so
  they nest in reverse order: a box rotated by R about its centre and then moved to c is
  `sd_box(rotate(translate(p, c), R), b)`.
- Uniform scaling by s is not a point map alone: evaluate `sd(scale_point(p, s)) * s`, because
  distances shrink with the point. Non-uniform scaling has no exact form and is not offered.

Everything is differentiable by Taichi's reverse-mode autodiff: no atomics, no dynamic loops, only
`fmin`/`fmax` (below)/`ti.abs`/`ti.sqrt`/`ti.select`. Where the exact function has a singular point
(the centre of a sphere, the axis of a torus, a box's interior for the outside term), the
gradient there is a finite subgradient (zero contribution), never NaN: lengths go through `length`.
"""

import taichi as ti
from taichi.lang import impl

# Below this squared angle (rad^2) `rotate_axis_angle` uses Taylor series: sin(t)/t and
# (1 - cos t)/t^2 are 0/0 at t = 0, and the truncation error there is ~t^6/5040 < 1e-15.
_SMALL_ANGLE2 = 1e-4


# -- helpers ------------------------------------------------------------------------------------


def _blend_minmax() -> bool:
    """Whether `fmax`/`fmin` compile to compare-and-blend: on x86-64 CPUs. `ti.max` lowers to LLVM's
    NaN-aware `maxnum`, which x86 has no single instruction for (vmaxps + a NaN compare + a blend),
    so a compare and a blend are one instruction less on the critical path of every SDF evaluation
    (the sphere∪box march at 1024^2 rays, 1 thread: -10%). ARM (fmaxnm) and GPUs (fmax) have one."""
    return str(impl.current_cfg().arch).split(".")[-1] == "x64"


def vector_ir() -> bool:
    """Whether the kernel being compiled keeps `ti.Vector`s as LLVM vectors: Taichi's
    `real_matrix_scalarize=False`, set by `taichi_sdf.core.launch` while it compiles a kernel marked
    `vector_ir` on x86-64 (the CPU packet tracers of fields whose `sdf_xyz` is
    `sdf_lanes.vector_ir_safe`).
    Taichi 1.7 aborts the process on `ti.abs` and unary minus of float vectors in that mode, so the
    lane code uses `fabs` and `0.0 - x`."""
    return not impl.current_cfg().real_matrix_scalarize


@ti.func
def fabs(x):
    """|x| (element-wise); `ti.abs` except while compiling with vector IR (see `vector_ir`), where it
    is a compare and a blend (|0| has gradient 1 there: such kernels are forward-only)."""
    r = x * 0.0
    if ti.static(vector_ir()):
        r = ti.select(x < 0.0, 0.0 - x, x)
    else:
        r = ti.abs(x)
    return r


@ti.func
def fmax(a, b):
    """max(a, b) (element-wise for vectors, a scalar broadcasts); at a tie the value and the
    gradient are b's, as `ti.max`'s. A NaN operand gives b, not NaN (as `ti.max`'s maxnum
    would give the other operand): the tracers' value checks look at their outputs, not here."""
    r = a * 0.0 + b * 0.0
    if ti.static(_blend_minmax()):
        r = ti.select(a > b, a, b)
    else:
        r = ti.max(a, b)
    return r


@ti.func
def fmin(a, b):
    """min(a, b), as `fmax` (ties give b)."""
    r = a * 0.0 + b * 0.0
    if ti.static(_blend_minmax()):
        r = ti.select(a < b, a, b)
    else:
        r = ti.min(a, b)
    return r


@ti.func
def length(v):
    """Euclidean norm of a vector, with gradient 0 (not NaN) at the zero vector.

    sqrt' is infinite at 0, and 0 * inf = NaN would reach every input of v in reverse mode; the
    inner select feeds sqrt a harmless 1 there and the outer one discards it ("double where").
    """
    l2 = v.dot(v)
    pos = l2 > 0.0
    return ti.select(pos, ti.sqrt(ti.select(pos, l2, 1.0)), 0.0)


@ti.func
def _min0(x):
    """min(x, 0) whose gradient at x = 0 is 1: points exactly on a box face (q = 0 after a Newton
    step) then get the face normal instead of a zero gradient (ti.min picks the constant at ties)."""
    return ti.select(x <= 0.0, x, 0.0)


@ti.func
def _clamp01(x):
    return fmin(fmax(x, 0.0), 1.0)


# -- primitives (all centred at the origin) -----------------------------------------------------


@ti.func
def sd_sphere(p, radius):
    """Sphere of `radius` centred at the origin."""
    return length(p) - radius


@ti.func
def sd_box(p, half_size):
    """Axis-aligned box with half extents `half_size` (3-vector)."""
    q = ti.abs(p) - half_size
    # Outside: distance to the nearest point of the box; inside: minus the distance to the nearest
    # face (the largest, i.e. least negative, component of q).
    return length(fmax(q, 0.0)) + _min0(fmax(q[0], fmax(q[1], q[2])))


@ti.func
def sd_round_box(p, half_size, radius):
    """Box with half extents `half_size` (the outer size, rounding included) whose edges and
    corners are rounded with `radius` (0 <= radius <= min(half_size))."""
    q = ti.abs(p) - half_size + radius
    return length(fmax(q, 0.0)) + _min0(fmax(q[0], fmax(q[1], q[2]))) - radius


@ti.func
def sd_torus(p, major_radius, minor_radius):
    """Torus around the y axis: the ring of `major_radius` lies in the xz-plane, the tube has
    `minor_radius`."""
    q = ti.Vector([length(ti.Vector([p[0], p[2]])) - major_radius, p[1]])
    return length(q) - minor_radius


@ti.func
def sd_capsule(p, a, b, radius):
    """Capsule: all points within `radius` of the segment from `a` to `b` (3-vectors, a != b)."""
    pa = p - a
    ba = b - a
    h = _clamp01(pa.dot(ba) / ba.dot(ba))  # parameter of the closest point on the segment
    return length(pa - ba * h) - radius


@ti.func
def sd_cylinder(p, half_height, radius):
    """Capped cylinder around the y axis, from y = -half_height to +half_height."""
    # 2-D problem in (distance from the axis, |y|): a rectangle of half extents (radius, half_height).
    d = ti.abs(ti.Vector([length(ti.Vector([p[0], p[2]])), p[1]])) - ti.Vector([radius, half_height])
    return _min0(fmax(d[0], d[1])) + length(fmax(d, 0.0))


@ti.func
def sd_plane(p, normal, offset):
    """Half-space dot(p, normal) + offset <= 0; exact when `normal` has unit length."""
    return p.dot(normal) + offset


# -- CSG operators on distances -----------------------------------------------------------------


@ti.func
def op_union(a, b):
    """Union of two shapes given their distances a, b."""
    return fmin(a, b)


@ti.func
def op_intersection(a, b):
    """Intersection of two shapes."""
    return fmax(a, b)


@ti.func
def op_subtraction(a, b):
    """Shape a minus shape b: max(a, -b)."""
    return fmax(a, 0.0 - b)


@ti.func
def op_smooth_union(a, b, k):
    """Polynomial smooth min with blend width k > 0; equals min(a, b) where |a - b| >= k and lies
    at most k/4 below it elsewhere."""
    h = _clamp01(0.5 + 0.5 * (b - a) / k)
    return b + (a - b) * h - k * h * (1.0 - h)


@ti.func
def op_smooth_intersection(a, b, k):
    """Polynomial smooth max with blend width k > 0; equals max(a, b) where |a - b| >= k."""
    h = _clamp01(0.5 - 0.5 * (b - a) / k)
    return b + (a - b) * h + k * h * (1.0 - h)


@ti.func
def op_smooth_subtraction(a, b, k):
    """Smooth a minus b: the smooth max of a and -b; equals max(a, -b) where |a + b| >= k."""
    return op_smooth_intersection(a, 0.0 - b, k)


# -- transforms of the query point --------------------------------------------------------------


@ti.func
def translate(p, offset):
    """Query point for a shape moved by `offset` (3-vector): p - offset."""
    return p - offset


@ti.func
def rotate(p, R):
    """Query point for a shape rotated by `R` (3x3 rotation matrix) about the origin: R^T p."""
    return R.transpose() @ p


@ti.func
def rotate_axis_angle(p, axis_angle):
    """Query point for a shape rotated by the axis-angle vector `axis_angle` (direction = axis,
    norm = angle in radians, right-handed): R^T p with R = exp([axis_angle]_x) (Rodrigues).

    Differentiable everywhere, including at the zero rotation (where the gradient w.r.t. the axis
    angle is [p]_x, not NaN).
    """
    w = axis_angle
    t2 = w.dot(w)
    small = t2 < _SMALL_ANGLE2
    t = ti.sqrt(ti.select(small, 1.0, t2))  # dummy angle 1 on the Taylor branch (double where)
    half = 0.5 * t
    sinc_half = ti.sin(half) / half
    # a = sin(t)/t, b = (1 - cos t)/t^2 = sinc(t/2)^2 / 2 (no cancellation for small t)
    a = ti.select(small, 1.0 - t2 / 6.0 * (1.0 - t2 / 20.0), ti.sin(t) / t)
    b = ti.select(small, 0.5 - t2 / 24.0 * (1.0 - t2 / 30.0), 0.5 * sinc_half * sinc_half)
    c = 1.0 - t2 * b  # cos t
    # R^T p = R(-w) p: the cross term changes sign.
    return c * p - a * w.cross(p) + b * w.dot(p) * w


@ti.func
def scale_point(p, s):
    """Query point for a shape scaled uniformly by s > 0: p / s. Multiply the distance by s:
    `sd(scale_point(p, s), ...) * s` is the exact distance to the scaled shape."""
    return p / s
