"""Fused sphere tracing of Taichi-native SDFs, plus loop-free field kernels for the gradients.

A field is a `@ti.func sdf(p, params) -> scalar` where `p` is a `ti.Vector` of 3 and `params` an
ndarray (any number of dims) of the field's parameters. The marching kernel is forward-only (never
differentiated: Taichi 1.7 gets gradients through dynamic loops wrong); gradients come from the
loop-free `field_values` / `field_gradients` kernels evaluated at the found points (implicit
differentiation, done in `taichi_sdf.sphere_trace`).
"""

import functools

import taichi as ti

from .dtypes import ti_float


@functools.cache
def fused_trace_kernel(sdf, dtype: str, params_ndim: int):
    """kernel(origins [N,3], directions [N,3], params, t [N], hit [N] i32, t_min [N], f_min [N],
    steps [N] i32, radius, eps, max_steps, step_scale).

    Per ray: clip to the bounding sphere of `radius` (start at 0 when the origin is inside), march
    `t += step_scale * f` until `|f| < eps` (hit), `t` leaves the sphere or `max_steps` evaluations
    are spent. `t_min`/`f_min` are the ray distance and value of the smallest SDF seen (for
    silhouette losses); rays that miss the sphere report the point closest to its centre.
    """
    f = ti_float(dtype)
    vec = ti.types.ndarray(dtype=f, ndim=2)
    scalar = ti.types.ndarray(dtype=f, ndim=1)
    flag = ti.types.ndarray(dtype=ti.i32, ndim=1)

    @ti.kernel
    def trace(
        origins: vec, directions: vec, params: ti.types.ndarray(dtype=f, ndim=params_ndim),
        t_out: scalar, hit: flag, t_min: scalar, f_min: scalar, steps: flag,
        radius: f, eps: f, max_steps: ti.i32, step_scale: f,
    ):  # fmt: skip
        for r in range(origins.shape[0]):
            o = ti.Vector([origins[r, 0], origins[r, 1], origins[r, 2]])
            d = ti.Vector([directions[r, 0], directions[r, 1], directions[r, 2]])
            b = o.dot(d)
            disc = b * b - (o.dot(o) - radius * radius)
            t_close = ti.max(-b, 0.0)
            best_t = t_close
            best_f = ti.cast(0.0, f)
            is_hit = 0
            n = 0
            t = t_close
            if disc > 0.0 and -b + ti.sqrt(disc) > 0.0:
                sq = ti.sqrt(disc)
                t = ti.max(-b - sq, 0.0)
                t_far = -b + sq
                best_f = sdf(o + t * d, params)
                best_t = t
                while n < max_steps:
                    fv = sdf(o + t * d, params)
                    n += 1
                    if ti.abs(fv) < ti.abs(best_f):
                        best_f = fv
                        best_t = t
                    if ti.abs(fv) < eps:
                        is_hit = 1
                        break
                    t += step_scale * fv
                    if t > t_far or t < 0.0:
                        break
            else:
                best_f = sdf(o + t_close * d, params)
            t_out[r] = t if is_hit else best_t
            hit[r] = is_hit
            t_min[r] = best_t
            f_min[r] = best_f
            steps[r] = n

    return trace


@functools.cache
def field_value_kernel(sdf, dtype: str, params_ndim: int):
    """kernel(points [N,3], params, values [N]); loop-free, differentiable by Taichi autodiff."""
    f = ti_float(dtype)

    @ti.kernel
    def values(
        points: ti.types.ndarray(dtype=f, ndim=2),
        params: ti.types.ndarray(dtype=f, ndim=params_ndim),
        out: ti.types.ndarray(dtype=f, ndim=1),
    ):
        for n in range(points.shape[0]):
            out[n] = sdf(ti.Vector([points[n, 0], points[n, 1], points[n, 2]]), params)

    return values


@functools.cache
def field_gradient_kernel(sdf, dtype: str, params_ndim: int):
    """kernel(points [N,3], params, grads [N,3], h): central differences of the SDF with step h.

    Loop-free (6 static evaluations), so Taichi autodiff differentiates it w.r.t. points and
    params: normals and normal losses get gradients too.
    """
    f = ti_float(dtype)

    @ti.kernel
    def gradients(
        points: ti.types.ndarray(dtype=f, ndim=2),
        params: ti.types.ndarray(dtype=f, ndim=params_ndim),
        out: ti.types.ndarray(dtype=f, ndim=2),
        h: f,
    ):
        for n in range(points.shape[0]):
            p = ti.Vector([points[n, 0], points[n, 1], points[n, 2]])
            for a in ti.static(range(3)):
                e = ti.Vector([0.0, 0.0, 0.0], dt=f)
                e[a] = h
                out[n, a] = (sdf(p + e, params) - sdf(p - e, params)) / (2.0 * h)

    return gradients
