"""Fused sphere tracing of Taichi-native SDFs, plus loop-free field kernels for the gradients.

A field is a `@ti.func sdf(p, params) -> scalar` where `p` is a `ti.Vector` of 3 and `params` an
ndarray (any number of dims) of the field's parameters. The marching kernel is forward-only (never
differentiated: Taichi 1.7 gets gradients through dynamic loops wrong); gradients come from the
loop-free `field_values` / `field_gradients` kernels evaluated at the found points (implicit
differentiation, done in `taichi_sdf.implicit.implicit_diff`).
"""

import functools

import taichi as ti

from taichi_sdf.kernels.dtypes import ti_float

_BIG = 1e30  # "no value yet" for the running minimum of |f|
# Rays per packet in the CPU kernels: 16 float32 lanes fill an AVX-512 register. Wider packets help
# fixed-step loops (64 steps at 512^2: 29.5 ms with 16 lanes, 19.4 ms with 32, 16.0 ms with 64) but
# not the early-exit tracer, which waits for each packet's slowest ray (measured 29-31 ms vs 32-37 ms).
PACKET_LANES = 16


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
                best_f = ti.cast(_BIG, f)
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


@functools.cache
def fused_trace_packet_kernel(sdf_xyz, dtype: str, params_ndim: int, lanes: int = PACKET_LANES):
    """Same contract and results as `fused_trace_kernel`, for a lane-generic coordinate-form field
    `sdf_xyz(x, y, z, params)`: each loop iteration traces a packet of `lanes` rays as `ti.Vector`s, so
    LLVM turns the SDF arithmetic into SIMD instructions (Taichi's CPU backend does not vectorise
    across loop iterations by itself). A packet stops when all its rays are done."""
    f = ti_float(dtype)
    vec = ti.types.ndarray(dtype=f, ndim=2)
    scalar = ti.types.ndarray(dtype=f, ndim=1)
    flag = ti.types.ndarray(dtype=ti.i32, ndim=1)
    V = ti.types.vector(lanes, f)
    I = ti.types.vector(lanes, ti.i32)

    @ti.kernel
    def trace(
        origins: vec, directions: vec, params: ti.types.ndarray(dtype=f, ndim=params_ndim),
        t_out: scalar, hit: flag, t_min: scalar, f_min: scalar, steps: flag,
        radius: f, eps: f, max_steps: ti.i32, step_scale: f,
    ):  # fmt: skip
        n_rays = origins.shape[0]
        for pk in range((n_rays + lanes - 1) // lanes):
            ox, oy, oz, dx, dy, dz = V(0.0), V(0.0), V(0.0), V(0.0), V(0.0), V(0.0)
            for l in ti.static(range(lanes)):
                r = ti.min(pk * lanes + l, n_rays - 1)  # the last packet repeats the last ray
                ox[l], oy[l], oz[l] = origins[r, 0], origins[r, 1], origins[r, 2]
                dx[l], dy[l], dz[l] = directions[r, 0], directions[r, 1], directions[r, 2]
            b = ox * dx + oy * dy + oz * dz
            disc = b * b - (ox * ox + oy * oy + oz * oz - radius * radius)
            sq = ti.sqrt(ti.max(disc, 0.0))
            t_close = ti.max(-b, 0.0)
            inside = (disc > 0.0) & (-b + sq > 0.0)
            t = ti.select(inside, ti.max(-b - sq, 0.0), t_close)
            t_far = ti.select(inside, -b + sq, t_close)
            active = I(0) + ti.select(inside, 1, 0)
            best_t = t
            best_f = V(0.0) + ti.cast(_BIG, f)
            if active.min() == 0:  # rays that miss the bound: the SDF at their closest point
                f0 = sdf_xyz(ox + t * dx, oy + t * dy, oz + t * dz, params)
                best_f = ti.select(inside, best_f, f0)
            is_hit = I(0)
            n = I(0)
            for _ in range(max_steps):
                if active.max() == 0:
                    break
                fv = sdf_xyz(ox + t * dx, oy + t * dy, oz + t * dz, params)
                on = active > 0
                n += active
                better = on & (ti.abs(fv) < ti.abs(best_f))
                best_f = ti.select(better, fv, best_f)
                best_t = ti.select(better, t, best_t)
                conv = on & (ti.abs(fv) < eps)
                is_hit = ti.select(conv, 1, is_hit)
                active = ti.select(conv, 0, active)
                t = ti.select(active > 0, t + step_scale * fv, t)
                active = ti.select((t > t_far) | (t < 0.0), 0, active)
            t_res = ti.select(is_hit > 0, t, best_t)
            for l in ti.static(range(lanes)):
                r = pk * lanes + l
                if r < n_rays:
                    t_out[r] = t_res[l]
                    hit[r] = is_hit[l]
                    t_min[r] = best_t[l]
                    f_min[r] = best_f[l]
                    steps[r] = n[l]

    return trace


@functools.cache
def surface_kernel(sdf, dtype: str, params_ndim: int):
    """kernel(origins, directions, params, hit, t [N] (in/out), points [N,3], normals [N,3], h, min_cos).

    The no-gradient finish of a trace in one pass: one Newton step on the hits' t (the depth error
    becomes second order in the marching eps), points `o + t d`, and unit normals by central
    differences with step h. Misses keep their minimum-SDF t.
    """
    f = ti_float(dtype)
    vec = ti.types.ndarray(dtype=f, ndim=2)

    @ti.func
    def grad(p, params: ti.template(), h):
        g = ti.Vector([0.0, 0.0, 0.0], dt=f)
        for a in ti.static(range(3)):
            e = ti.Vector([0.0, 0.0, 0.0], dt=f)
            e[a] = h
            g[a] = sdf(p + e, params) - sdf(p - e, params)
        return g / (2.0 * h)

    @ti.kernel
    def finish(
        origins: vec, directions: vec, params: ti.types.ndarray(dtype=f, ndim=params_ndim),
        hit: ti.types.ndarray(dtype=ti.i32, ndim=1), t: ti.types.ndarray(dtype=f, ndim=1),
        points: vec, normals: vec, h: f, min_cos: f,
    ):  # fmt: skip
        for r in range(origins.shape[0]):
            o = ti.Vector([origins[r, 0], origins[r, 1], origins[r, 2]])
            d = ti.Vector([directions[r, 0], directions[r, 1], directions[r, 2]])
            tr = t[r]
            if hit[r] != 0:
                x = o + tr * d
                cos = grad(x, params, h).dot(d)
                if ti.abs(cos) < min_cos:  # grazing: keep the sign (as `implicit_diff.clamp_cos`)
                    cos = ti.select(cos > 0.0, min_cos, -min_cos)
                tr -= sdf(x, params) / cos
                t[r] = tr
            x = o + tr * d
            g = grad(x, params, h)
            g /= ti.max(g.norm(), 1e-12)
            for c in ti.static(range(3)):
                points[r, c] = x[c]
                normals[r, c] = g[c]

    return finish


@functools.cache
def basic_trace_kernel(sdf_xyz, dtype: str, params_ndim: int, lanes: int = 1):
    """kernel(origins [N,3], directions [N,3], params, t [N], n_steps): the textbook loop, `t += f`
    exactly n_steps times from t = 0, no bound, no early exit. The readable starting point for new
    tracers, and the fixed workload benchmarks compare with other systems. `lanes` > 1 traces SIMD
    packets (for lane-generic `sdf_xyz`)."""
    f = ti_float(dtype)
    vec = ti.types.ndarray(dtype=f, ndim=2)
    V = ti.types.vector(lanes, f)

    @ti.kernel
    def trace(origins: vec, directions: vec, params: ti.types.ndarray(dtype=f, ndim=params_ndim),
              t_out: ti.types.ndarray(dtype=f, ndim=1), n_steps: ti.i32):  # fmt: skip
        n_rays = origins.shape[0]
        for pk in range((n_rays + lanes - 1) // lanes):
            ox, oy, oz, dx, dy, dz = V(0.0), V(0.0), V(0.0), V(0.0), V(0.0), V(0.0)
            for l in ti.static(range(lanes)):
                r = ti.min(pk * lanes + l, n_rays - 1)
                ox[l], oy[l], oz[l] = origins[r, 0], origins[r, 1], origins[r, 2]
                dx[l], dy[l], dz[l] = directions[r, 0], directions[r, 1], directions[r, 2]
            t = V(0.0)
            for _ in range(n_steps):
                t += sdf_xyz(ox + t * dx, oy + t * dy, oz + t * dz, params)
            for l in ti.static(range(lanes)):
                if pk * lanes + l < n_rays:
                    t_out[pk * lanes + l] = t[l]

    return trace


@functools.cache
def surface_packet_kernel(sdf_xyz, dtype: str, params_ndim: int, lanes: int = PACKET_LANES):
    """`surface_kernel` for lane-generic fields, in SIMD packets of rays (same results)."""
    f = ti_float(dtype)
    vec = ti.types.ndarray(dtype=f, ndim=2)
    V = ti.types.vector(lanes, f)

    @ti.func
    def grad(x, y, z, params: ti.template(), h):
        gx = sdf_xyz(x + h, y, z, params) - sdf_xyz(x - h, y, z, params)
        gy = sdf_xyz(x, y + h, z, params) - sdf_xyz(x, y - h, z, params)
        gz = sdf_xyz(x, y, z + h, params) - sdf_xyz(x, y, z - h, params)
        return gx / (2.0 * h), gy / (2.0 * h), gz / (2.0 * h)

    @ti.kernel
    def finish(
        origins: vec, directions: vec, params: ti.types.ndarray(dtype=f, ndim=params_ndim),
        hit: ti.types.ndarray(dtype=ti.i32, ndim=1), t: ti.types.ndarray(dtype=f, ndim=1),
        points: vec, normals: vec, h: f, min_cos: f,
    ):  # fmt: skip
        n_rays = origins.shape[0]
        for pk in range((n_rays + lanes - 1) // lanes):
            ox, oy, oz, dx, dy, dz, tv = V(0.0), V(0.0), V(0.0), V(0.0), V(0.0), V(0.0), V(0.0)
            hv = ti.Vector([0] * lanes)
            for l in ti.static(range(lanes)):
                r = ti.min(pk * lanes + l, n_rays - 1)
                ox[l], oy[l], oz[l] = origins[r, 0], origins[r, 1], origins[r, 2]
                dx[l], dy[l], dz[l] = directions[r, 0], directions[r, 1], directions[r, 2]
                tv[l] = t[r]
                hv[l] = hit[r]
            if hv.max() > 0:  # one Newton step on the hits
                x, y, z = ox + tv * dx, oy + tv * dy, oz + tv * dz
                gx, gy, gz = grad(x, y, z, params, h)
                cos = gx * dx + gy * dy + gz * dz
                cos = ti.select(ti.abs(cos) < min_cos, ti.select(cos > 0.0, min_cos, -min_cos), cos)
                tv = ti.select(hv > 0, tv - sdf_xyz(x, y, z, params) / cos, tv)
            x, y, z = ox + tv * dx, oy + tv * dy, oz + tv * dz
            gx, gy, gz = grad(x, y, z, params, h)
            inv = 1.0 / ti.max(ti.sqrt(gx * gx + gy * gy + gz * gz), 1e-12)
            for l in ti.static(range(lanes)):
                r = pk * lanes + l
                if r < n_rays:
                    t[r] = tv[l]
                    points[r, 0], points[r, 1], points[r, 2] = x[l], y[l], z[l]
                    normals[r, 0], normals[r, 1], normals[r, 2] = gx[l] * inv[l], gy[l] * inv[l], gz[l] * inv[l]

    return finish
