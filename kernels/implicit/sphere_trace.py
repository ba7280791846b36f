"""Fused sphere tracing of Taichi-native SDFs, plus loop-free field kernels for the gradients.

A field is a `@ti.func sdf(p, params) -> scalar` where `p` is a `ti.Vector` of 3 and `params` an
ndarray (any number of dims) of the field's parameters. The tracing kernels are forward-only (never
differentiated: Taichi 1.7 gets gradients through dynamic loops wrong); gradients come from the
loop-free `field_values` / `field_gradients` kernels evaluated at the found points (implicit
differentiation, done in `taichi_sdf.implicit.implicit_diff`).

One tracing kernel does the whole no-gradient trace of a ray: its value checks, the unit direction,
the march, one Newton step and the normal (`finish`, on hits only: a miss has no surface), so nothing
is read twice or launched twice.
Its value checks branch once, after every store: a branch between the finish's arithmetic and its
stores splits the basic block that LLVM's SLP vectoriser works in, which left the packet kernel's
finish scalar (the checks then cost as much as the march: 512^2 sphere_box, 1 thread, 16.2 -> 9.4 ms).
"""

import functools

import taichi as ti

from taichi_sdf.kernels.dtypes import ti_float
from taichi_sdf.kernels.implicit.sdf_lib import fabs, fmax

_BIG = 1e30  # "no value yet" for the running minimum of |f|
# Rays per packet in the CPU kernels: 16 float32 lanes fill an AVX-512 register. Wider packets help
# fixed-step loops (64 steps at 512^2: 29.5 ms with 16 lanes, 19.4 ms with 32, 16.0 ms with 64). The
# early-exit tracer waits for each packet's slowest ray: with Taichi's scalarised compile 32 lanes were
# no faster, with vector IR two packets marched side by side are (`group_size`), finished one by one.
PACKET_LANES = 16

# What a tracing kernel does after the march: None marches only (the differentiable path builds its
# outputs in torch); "tetrahedral" (4 evaluations) or "central" (6) also makes the Newton step, points
# and normals with that gradient stencil.
FINISH_MODES = (None, "tetrahedral", "central")
# Slots of the `status [4]` int32 counters a tracing kernel adds its value checks to: counted on the
# loads and stores the kernel makes anyway, so checking costs no pass over the rays.
STATUS_BAD_ORIGINS, STATUS_BAD_DIRECTIONS, STATUS_ZERO_DIRECTIONS, STATUS_BAD_SDF = range(4)
# Optional outputs of a finishing kernel; an output left out is neither computed nor stored (its buffer
# may be empty). `t`, `hit` and `steps` are always written.
OPTIONAL_OUTPUTS = ("points", "normals", "min_sdf")


def _check_finish(finish, outputs) -> tuple[bool, bool, bool]:
    """(points, normals, min_sdf) wanted; `outputs` is a tuple of `OPTIONAL_OUTPUTS` names."""
    if finish not in FINISH_MODES:
        raise ValueError(f"finish: expected one of {FINISH_MODES}, got {finish!r}")
    unknown = set(outputs) - set(OPTIONAL_OUTPUTS)
    if unknown:
        raise ValueError(f"outputs: expected names from {OPTIONAL_OUTPUTS}, got {sorted(unknown)}")
    return tuple(name in outputs for name in OPTIONAL_OUTPUTS)


def _nonfinite_func(dtype: str):
    """`@ti.func bad(v) -> i32`: 1 where the scalar `v` is NaN or +-inf, read from its exponent bits
    (Taichi compiles with fast math, which folds `v != v` to false)."""
    if dtype == "f32":

        @ti.func
        def bad(v):
            return ti.cast((ti.bit_cast(v, ti.i32) & 0x7F800000) == 0x7F800000, ti.i32)

    else:

        @ti.func
        def bad(v):
            mask = ti.i64(0x7FF0000000000000)
            return ti.cast((ti.bit_cast(v, ti.i64) & mask) == mask, ti.i32)

    return bad


def _gradient_xyz_func(sdf_xyz, finish: str):
    """`@ti.func grad(x, y, z, params, h, zero) -> (gx, gy, gz)`: the SDF's spatial gradient by finite
    differences with step h, lane-generic (x, y, z scalars or packets of lanes); `zero` must be a
    runtime 0 (see below).

    "tetrahedral": the 4 corners h (+-1, +-1, +-1) of a regular tetrahedron with an odd number of minus
    signs, g = sum_k c_k f(x + h c_k) / 4h. Exact for linear fields; its error is h (H_yz, H_xz, H_xy)
    (the Hessian's off-diagonal terms: first order in h). "central": the 6 points x +- h e_a, error
    O(h^2) (third derivatives).

    The points are visited by a loop with one call site of the SDF, walking from point to point, whose
    count is `points + zero`: with a count known at compile time LLVM unrolls the loop (or vectorises
    it across the points) and then leaves packets of lanes scalar, which made the stencil cost 2x.
    """

    @ti.func
    def grad(x, y, z, params: ti.template(), h, zero):
        gx, gy, gz = x * 0.0, y * 0.0, z * 0.0
        if ti.static(finish == "tetrahedral"):
            qx, qy, qz = x + h, y - h, z - h
            for k in range(4 + zero):  # corners (+,-,-) (-,-,+) (-,+,-) (+,+,+)
                fk = sdf_xyz(qx, qy, qz, params)
                cx = ti.select((k == 0) | (k == 3), 1.0, -1.0)
                cy = ti.select(k >= 2, 1.0, -1.0)
                cz = ti.select((k == 1) | (k == 3), 1.0, -1.0)
                gx, gy, gz = gx + cx * fk, gy + cy * fk, gz + cz * fk
                qx += ti.select(k == 0, -2.0 * h, ti.select(k == 2, 2.0 * h, 0.0))
                qy += ti.select(k == 1, 2.0 * h, 0.0)
                qz += ti.select(k == 0, 2.0 * h, ti.select(k == 1, -2.0 * h, ti.select(k == 2, 2.0 * h, 0.0)))
            gx, gy, gz = gx * (0.25 / h), gy * (0.25 / h), gz * (0.25 / h)
        else:
            qx, qy, qz = x + h, y, z
            for k in range(6 + zero):  # +x, -x, +y, -y, +z, -z
                fk = sdf_xyz(qx, qy, qz, params)
                c = ti.select(k % 2 == 0, 1.0, -1.0)
                gx += ti.select(k < 2, c * fk, 0.0)
                gy += ti.select((k >= 2) & (k < 4), c * fk, 0.0)
                gz += ti.select(k >= 4, c * fk, 0.0)
                qx += ti.select(k == 0, -2.0 * h, ti.select(k == 1, h, 0.0))
                qy += ti.select(k == 1, h, ti.select(k == 2, -2.0 * h, ti.select(k == 3, h, 0.0)))
                qz += ti.select(k == 3, h, ti.select(k == 4, -2.0 * h, 0.0))
            gx, gy, gz = gx * (0.5 / h), gy * (0.5 / h), gz * (0.5 / h)
        return gx, gy, gz

    return grad


# Each stencil's points (offsets in units of h) and the factor of its sum: g = factor / h * sum_k c_k f_k.
STENCIL_OFFSETS = {
    "tetrahedral": (((1, -1, -1), (-1, -1, 1), (-1, 1, -1), (1, 1, 1)), 0.25),
    "central": (((1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)), 0.5),
}


def _packet_gradient_func(sdf_xyz, finish: str, lanes: int, f):
    """`@ti.func grad(x, y, z, params, h) -> (sx, sy, sz)`, the stencil's sums for packets of `lanes`:
    the gradient of `_gradient_xyz_func` is `STENCIL_OFFSETS[finish][1] / h` times them. Unscaled, so
    that the Newton step's expression is the same whether or not normals (which need no scale) are
    stored: with fast math LLVM would otherwise fold the scale differently and t would change in the
    last bits with `outputs`. Every stencil point of every lane in one packet of K * lanes, so the SDF is
    evaluated once, as straight-line code with K times the independent work of a packet. That hides
    the latency of sqrt and friends: 1024^2 rays, 1 thread, tetrahedral: 13 -> 7 ms against four
    packet-wide evaluations (`_gradient_xyz_func`'s loop)."""
    offsets, factor = STENCIL_OFFSETS[finish]
    K = len(offsets)
    V = ti.types.vector(lanes, f)
    W = ti.types.vector(K * lanes, f)

    @ti.func
    def grad(x, y, z, params: ti.template(), h):
        qx, qy, qz = W(0.0), W(0.0), W(0.0)
        for k in ti.static(range(K)):
            for l in ti.static(range(lanes)):
                qx[k * lanes + l] = x[l] + offsets[k][0] * h
                qy[k * lanes + l] = y[l] + offsets[k][1] * h
                qz[k * lanes + l] = z[l] + offsets[k][2] * h
        fq = sdf_xyz(qx, qy, qz, params)
        gx, gy, gz = V(0.0), V(0.0), V(0.0)
        for k in ti.static(range(K)):
            for l in ti.static(range(lanes)):
                if ti.static(offsets[k][0] != 0):
                    gx[l] += offsets[k][0] * fq[k * lanes + l]
                if ti.static(offsets[k][1] != 0):
                    gy[l] += offsets[k][1] * fq[k * lanes + l]
                if ti.static(offsets[k][2] != 0):
                    gz[l] += offsets[k][2] * fq[k * lanes + l]
        return gx, gy, gz

    return grad


@functools.cache
def fused_trace_kernel(sdf, dtype: str, params_ndim: int, finish: str | None = "tetrahedral",
                       outputs: tuple = OPTIONAL_OUTPUTS):  # fmt: skip
    """kernel(origins [N,3], directions [N,3], params, t [N], hit [N] u8, points [N,3], normals [N,3],
    t_min [N], f_min [N], steps [N] i32, status [4] i32, radius, eps, max_steps, step_scale, h,
    min_cos): one ray per thread (GPUs, and fields without a lane-generic form).

    Per ray: count non-finite origin / direction values and zero-length directions into `status`
    (slots `STATUS_*`), normalise the direction, clip to the bounding sphere of `radius` (start at 0
    when the origin is inside), march `t += step_scale * f` until `|f| < eps` (hit), `t` leaves the
    sphere or `max_steps` evaluations are spent. `t_min`/`f_min` are the ray distance and value of the
    smallest |f| seen (for silhouette losses; a hit's is its converged point); rays that miss the
    sphere report the point closest to its centre. Rays whose values turn non-finite are counted in
    `status[STATUS_BAD_SDF]`.

    `finish` None: `t = t_min`, points and normals are not touched (pass `[0, 3]` tensors).
    Otherwise, on the hits, with the gradient g of that stencil (step h) at x0 = o + t_min d: one
    Newton step, `t = t_min - f_min / (g . d)` (|g . d| raised to `min_cos`, sign kept), so the depth
    error is second order in eps, and `normals = g / |g|` (taken at x0, which is within eps / |g . d|
    of the point); misses keep `t = t_min` and get zero normals (no stencil is evaluated for them).
    `points = o + t d` for every ray.

    `outputs` (names from `OPTIONAL_OUTPUTS`): which of points, normals and t_min/f_min are stored
    (the others' buffers may be empty); points and normals are stored only when finishing.
    """
    want_points, want_normals, want_min = _check_finish(finish, outputs)
    finishes = finish is not None
    f = ti_float(dtype)
    vec = ti.types.ndarray(dtype=f, ndim=2)
    scalar = ti.types.ndarray(dtype=f, ndim=1)
    flag = ti.types.ndarray(dtype=ti.i32, ndim=1)
    bad = _nonfinite_func(dtype)

    @ti.func
    def sdf_xyz(x, y, z, params: ti.template()):
        return sdf(ti.Vector([x, y, z]), params)

    grad_xyz = _gradient_xyz_func(sdf_xyz, finish or "central")

    @ti.kernel
    def trace(
        origins: vec, directions: vec, params: ti.types.ndarray(dtype=f, ndim=params_ndim),
        t_out: scalar, hit: ti.types.ndarray(dtype=ti.u8, ndim=1), points: vec, normals: vec,
        t_min: scalar, f_min: scalar, steps: flag, status: flag,
        radius: f, eps: f, max_steps: ti.i32, step_scale: f, h: f, min_cos: f,
    ):  # fmt: skip
        for r in range(origins.shape[0]):
            o = ti.Vector([origins[r, 0], origins[r, 1], origins[r, 2]])
            d_in = ti.Vector([directions[r, 0], directions[r, 1], directions[r, 2]])
            nrm2 = d_in.dot(d_in)
            d = d_in / ti.sqrt(ti.select(nrm2 > 0.0, nrm2, 1.0))
            b = o.dot(d)
            disc = b * b - (o.dot(o) - radius * radius)
            t_close = ti.max(-b, 0.0)
            best_t = t_close
            best_f = ti.cast(0.0, f)
            is_hit = 0
            n = 0
            t = t_close
            if disc > 0.0 and -b + ti.sqrt(disc) > 0.0 and nrm2 > 0.0:
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
            t_res = best_t  # a hit's converged point has the smallest |f| of its ray
            g = ti.Vector([0.0, 0.0, 0.0], dt=f)
            if ti.static(finishes):
                u = ti.Vector([0.0, 0.0, 0.0], dt=f)
                if is_hit:
                    x = o + best_t * d
                    gx, gy, gz = grad_xyz(x[0], x[1], x[2], params, h, ti.min(max_steps, 0))  # max_steps >= 1
                    g = ti.Vector([gx, gy, gz])
                    cos = g.dot(d)
                    if ti.abs(cos) < min_cos:  # grazing: keep the sign (as `implicit_diff.clamp_cos`)
                        cos = ti.select(cos > 0.0, min_cos, -min_cos)
                    t_res = best_t - best_f / cos
                    u = g / ti.max(g.norm(), 1e-12)
                if ti.static(want_points):
                    p = o + t_res * d
                    for c in ti.static(range(3)):
                        points[r, c] = p[c]
                if ti.static(want_normals):
                    for c in ti.static(range(3)):
                        normals[r, c] = u[c]
            t_out[r] = t_res
            hit[r] = ti.cast(is_hit, ti.u8)
            if ti.static(want_min):
                t_min[r] = best_t
                f_min[r] = best_f
            steps[r] = n
            # The value checks, after every store (see the module doc); rare: count which values.
            if bad(o.sum() + d_in.sum() + best_f + t + g.sum()) | (nrm2 == 0.0):
                ti.atomic_add(status[STATUS_BAD_ORIGINS], bad(o[0]) + bad(o[1]) + bad(o[2]))
                ti.atomic_add(status[STATUS_BAD_DIRECTIONS], bad(d_in[0]) + bad(d_in[1]) + bad(d_in[2]))
                ti.atomic_add(status[STATUS_ZERO_DIRECTIONS], ti.cast(nrm2 == 0.0, ti.i32))
                ti.atomic_add(status[STATUS_BAD_SDF], bad(best_f + t + g.sum()))

    return trace


def _xyz_shuffle_funcs(lanes: int):
    """`@ti.func`s between a packet's `[N, 3]` rows and its x, y, z vectors [lanes]:
    `deinterleave(a0, a1, a2, lane) -> (x, y, z)` of its 3 * lanes interleaved values (3 vectors of
    lanes), and `interleave(x, y, z, lane) -> (a0, a1, a2)`; `lane` is `0, 1, ..., lanes - 1` computed
    so that LLVM cannot see its values.

    Each output is a 2-source shuffle, a 1-source permute and a blend whose mask comes from `lane`.
    Written as one 3-source shuffle (elements gathered one by one, or a 3 * lanes vector), LLVM merges
    it into one shuffle of 3 inputs and lowers that badly: with AVX-512 a packet of 16 rays took ~75
    shuffles and broadcasts to de-interleave, ~42 to interleave, where this takes 6 permutes and 3
    masked moves each way (1024^2 rays, 1 thread, sphere∪box: the whole kernel 12.05 -> 11.10 ms). The
    mask LLVM cannot see keeps it from merging the two halves again."""
    # De-interleave: component c of ray l is value 3l + c, in vector (3l + c) // lanes: vectors 0 and 1
    # (one 2-source shuffle) for the first rays, vector 2 (a permute) for the rest, from `first_in_2[c]` on
    where = [[divmod(3 * l + c, lanes) for l in range(lanes)] for c in range(3)]
    first_in_2 = [sum(1 for v, _ in where[c] if v < 2) for c in range(3)]
    from_01 = [[(v, i) if v < 2 else (0, 0) for v, i in where[c]] for c in range(3)]
    from_2 = [[i if v == 2 else 0 for v, i in where[c]] for c in range(3)]
    # Interleave: vector k holds values k * lanes + m = ray (k lanes + m) // 3, component (k lanes + m) % 3;
    # its least represented component (`odd`) comes by a permute, the other two by a 2-source shuffle
    comp = [[(k * lanes + m) % 3 for m in range(lanes)] for k in range(3)]
    ray = [[(k * lanes + m) // 3 for m in range(lanes)] for k in range(3)]
    odd = [min(range(3), key=comp[k].count) for k in range(3)]
    pair = [[(comp[k][m], ray[k][m]) if comp[k][m] != odd[k] else ((odd[k] + 1) % 3, 0) for m in range(lanes)]
            for k in range(3)]  # fmt: skip
    alone = [[ray[k][m] if comp[k][m] == odd[k] else 0 for m in range(lanes)] for k in range(3)]
    is_odd = [[int(comp[k][m] == odd[k]) for m in range(lanes)] for k in range(3)]
    I = ti.types.vector(lanes, ti.i32)

    @ti.func
    def one_component(a0, a1, a2, lane, c: ti.template()):
        first = ti.Vector([(a0, a1)[ti.static(from_01[c][l][0])][ti.static(from_01[c][l][1])]
                           for l in ti.static(range(lanes))])  # fmt: skip
        rest = ti.Vector([a2[ti.static(from_2[c][l])] for l in ti.static(range(lanes))])
        return ti.select(lane < ti.static(first_in_2[c]), first, rest)

    @ti.func
    def deinterleave(a0, a1, a2, lane):
        return one_component(a0, a1, a2, lane, 0), one_component(a0, a1, a2, lane, 1), one_component(a0, a1, a2, lane, 2)

    @ti.func
    def one_vector(x, y, z, lane, k: ti.template()):
        xyz = (x, y, z)
        two = ti.Vector([xyz[ti.static(pair[k][m][0])][ti.static(pair[k][m][1])] for m in ti.static(range(lanes))])
        one = ti.Vector([xyz[ti.static(odd[k])][ti.static(alone[k][m])] for m in ti.static(range(lanes))])
        return ti.select(lane * 0 + I(is_odd[k]) > 0, one, two)

    @ti.func
    def interleave(x, y, z, lane):
        return one_vector(x, y, z, lane, 0), one_vector(x, y, z, lane, 1), one_vector(x, y, z, lane, 2)

    return deinterleave, interleave


@functools.cache
def fused_trace_packet_kernel(sdf_xyz, dtype: str, params_ndim: int, finish: str | None = "tetrahedral",
                              lanes: int = PACKET_LANES, outputs: tuple = OPTIONAL_OUTPUTS,
                              group_size: int = 1):  # fmt: skip
    """`fused_trace_kernel`'s contract and results for a lane-generic coordinate-form field
    `sdf_xyz(x, y, z, params)`: each loop iteration traces a packet of `lanes` rays as `ti.Vector`s, so
    LLVM turns the SDF arithmetic into SIMD instructions (Taichi's CPU backend does not vectorise
    across loop iterations by itself). A packet marches until all its rays are done; the finish
    evaluates its stencil once for the whole packet (`_packet_gradient_func`), and only in packets
    with a hit (the misses' lanes of such a packet are computed and discarded: zero normals, t_min).

    The outputs are packet-shaped: P = ceil(N / lanes) rows, `t, t_min, f_min [P, lanes]`, `hit [P,
    lanes]` u8, `steps [P, lanes]` i32, `points, normals [P, 3, lanes]` (the `[P * lanes, 3]` buffers
    viewed so: a packet's 3 * lanes interleaved values as 3 vectors), whose first N rays are the
    results (the last packet's spare lanes repeat the last ray), so a packet's results are stored with
    no per-lane bounds test. Per-lane guarded stores of points and normals cost as much as the march at
    512^2 (each scalar store also reloads the ndarray pointers, which Taichi cannot prove unaliased);
    packet rows brought them to about 2 ms. `origin_rows, direction_rows [N // lanes, 3, lanes]` are
    the whole packets' rays viewed so (`packet_rows`), loaded as vectors and de-interleaved by shuffles
    (`_xyz_shuffle_funcs`); the last, partial packet reads `origins, directions [N, 3]`.

    `group_size` packets march side by side in one loop (vectors of `group_size * lanes`), so every
    step has that many independent chains of SDF arithmetic to overlap; the group marches until its
    slowest ray is done, then each packet is finished and stored on its own (the outputs' layout does
    not depend on the group). See `taichi_sdf.implicit.sphere_trace.march_group` for the measured choice.
    A group is consecutive packets, or with `row_packets` > 0 (rays that are an image whose rows are
    `row_packets` whole packets) the packets at one place of `group_size` consecutive image rows: rays
    a row apart take alike step counts, so the group waits less for its slowest ray (sphere∪box, the
    slowest ray of a 2x16 group took 8.4 / 6.7 / 5.6 steps where 1x32 took 11.6 / 8.9 / 6.7 at 256^2 /
    512^2 / 1024^2; whole kernel at 256^2, 1 thread: 1.16 -> 1.06 ms, same results).

    For `sdf_lanes.vector_ir_safe` fields the kernel is marked `vector_ir`: `taichi_sdf.core.launch`
    compiles it with Taichi's vector IR, where a packet row is one vector load or store (with Taichi's
    default scalarisation, 16 scalar accesses with an address reload each: 1024^2 rays, 1 thread,
    sphere∪box: whole trace 19.5 -> 17.6 ms by the stores alone).
    """
    want_points, want_normals, want_min = _check_finish(finish, outputs)
    finishes = finish is not None
    f = ti_float(dtype)
    vec = ti.types.ndarray(dtype=f, ndim=2)
    V = ti.types.vector(lanes, f)
    I = ti.types.vector(lanes, ti.i32)
    packet = ti.types.ndarray(dtype=V, ndim=1)  # [P]
    packet3 = ti.types.ndarray(dtype=V, ndim=2)  # [P, 3]: a packet's 3 * lanes interleaved xyz values
    deinterleave, interleave = _xyz_shuffle_funcs(lanes)
    bad = _nonfinite_func(dtype)
    grad_packet = _packet_gradient_func(sdf_xyz, finish or "central", lanes, f)

    @ti.func
    def bad_lanes(v):  # [lanes] i32: 1 where v is NaN or +-inf
        m = I(0)
        for l in ti.static(range(lanes)):
            m[l] = bad(v[l])
        return m

    G = group_size * lanes  # lanes of the march's vectors
    W = ti.types.vector(G, f)
    WI = ti.types.vector(G, ti.i32)
    WB = ti.types.vector(G, ti.u1)
    scale = STENCIL_OFFSETS[finish or "central"][1]

    @ti.func
    def packet_in(group, q, row_packets):  # packet q of a group: consecutive, or the same place of stacked image rows
        pk = group * group_size + q
        if row_packets > 0:
            band = group // row_packets
            pk = (band * group_size + q) * row_packets + group - band * row_packets
        return pk

    @ti.func
    def packet_of(w, q):  # packet q of a group's vector w [G] as [lanes]
        v = ti.Vector([w[l] for l in ti.static(range(lanes))])
        for k in ti.static(range(1, group_size)):
            v = ti.select(q == k, ti.Vector([w[k * lanes + l] for l in ti.static(range(lanes))]), v)
        return v

    @ti.kernel
    def trace(
        origins: vec, directions: vec, origin_rows: packet3, direction_rows: packet3,
        params: ti.types.ndarray(dtype=f, ndim=params_ndim),
        t_out: packet, hit: ti.types.ndarray(dtype=ti.types.vector(lanes, ti.u8), ndim=1), points: packet3,
        normals: packet3, t_min: packet, f_min: packet, steps: ti.types.ndarray(dtype=I, ndim=1),
        status: ti.types.ndarray(dtype=ti.i32, ndim=1),
        radius: f, eps: f, max_steps: ti.i32, step_scale: f, h: f, min_cos: f, row_packets: ti.i32,
    ):  # fmt: skip
        n_rays = origins.shape[0]
        n_packets = (n_rays + lanes - 1) // lanes
        n_groups = (n_packets + group_size - 1) // group_size
        if row_packets > 0:  # bands of `group_size` image rows (the last one may be short)
            n_groups = (n_packets // row_packets + group_size - 1) // group_size * row_packets
        for group in range(n_groups):
            lane = I([l for l in ti.static(range(lanes))]) + ti.min(max_steps, 0)  # 0..lanes-1, unknown to LLVM
            # Load: a group of `group_size` packets side by side in vectors of `G` lanes (a missing last
            # packet repeats the last one; nothing is stored for it)
            ox, oy, oz, dx, dy, dz = W(0.0), W(0.0), W(0.0), W(0.0), W(0.0), W(0.0)
            for q in ti.static(range(group_size)):
                pk = ti.min(packet_in(group, q, row_packets), n_packets - 1)
                if pk < origin_rows.shape[0]:  # a whole packet: 3 vectors of interleaved values each
                    ax, ay, az = deinterleave(origin_rows[pk, 0], origin_rows[pk, 1], origin_rows[pk, 2], lane)
                    cx, cy, cz = deinterleave(direction_rows[pk, 0], direction_rows[pk, 1], direction_rows[pk, 2], lane)
                    for l in ti.static(range(lanes)):
                        ox[q * lanes + l], oy[q * lanes + l], oz[q * lanes + l] = ax[l], ay[l], az[l]
                        dx[q * lanes + l], dy[q * lanes + l], dz[q * lanes + l] = cx[l], cy[l], cz[l]
                else:
                    for l in ti.static(range(lanes)):
                        r = ti.min(pk * lanes + l, n_rays - 1)  # the last packet repeats the last ray
                        ox[q * lanes + l], oy[q * lanes + l], oz[q * lanes + l] = origins[r, 0], origins[r, 1], origins[r, 2]
                        dx[q * lanes + l], dy[q * lanes + l], dz[q * lanes + l] = (
                            directions[r, 0], directions[r, 1], directions[r, 2])  # fmt: skip
            inputs = ox + oy + oz + dx + dy + dz  # non-finite where any input value is
            nrm2 = dx * dx + dy * dy + dz * dz
            nonzero = nrm2 > 0.0
            inv = 1.0 / ti.sqrt(ti.select(nonzero, nrm2, 1.0))
            dx, dy, dz = dx * inv, dy * inv, dz * inv
            b = ox * dx + oy * dy + oz * dz
            disc = b * b - (ox * ox + oy * oy + oz * oz - radius * radius)
            sq = ti.sqrt(fmax(disc, 0.0))
            t_close = fmax(0.0 - b, 0.0)
            inside = (disc > 0.0) & (sq - b > 0.0) & nonzero
            t = ti.select(inside, fmax(0.0 - b - sq, 0.0), t_close)
            t_far = ti.select(inside, sq - b, t_close)
            # Lane states as u1 masks (`WB`), which LLVM keeps in mask registers across iterations, and
            # whose loop test `select(mask, 1, 0).max()` it turns into one mask test (as Dr.Jit's masks)
            active = inside
            best_t = t
            best_f = W(0.0) + ti.cast(_BIG, f)
            if ti.select(inside, 1, 0).min() == 0:  # rays that miss the bound: the SDF at their closest point
                f0 = sdf_xyz(ox + t * dx, oy + t * dy, oz + t * dz, params)
                best_f = ti.select(inside, best_f, f0)
            is_hit = WB(0)
            n = WI(0)
            # March: the group's packets in one loop, so each step has `group_size` independent chains
            # of SDF arithmetic to overlap (sqrt latency); it runs until every ray of the group is done.
            # `~` keeps a NaN SDF value's ray marching (to max_steps, then reported), as comparisons
            # with NaN are false
            for _ in range(max_steps):
                if ti.select(active, 1, 0).max() == 0:
                    break
                fv = sdf_xyz(ox + t * dx, oy + t * dy, oz + t * dz, params)
                n += ti.select(active, 1, 0)
                better = active & (fabs(fv) < fabs(best_f))
                best_f = ti.select(better, fv, best_f)
                best_t = ti.select(better, t, best_t)
                conv = active & (fabs(fv) < eps)
                is_hit = is_hit | conv
                active = active & ~conv
                t = ti.select(active, t + step_scale * fv, t)
                active = active & ~((t > t_far) | (t < 0.0))
            hits = ti.select(is_hit, 1, 0)
            # Finish and store packet by packet: a loop whose count is only known at run time, so the
            # stencil's code is emitted once (unrolled per packet it doubled the compile time)
            for q in range(group_size + ti.min(max_steps, 0)):  # max_steps >= 1: the count is group_size
                pk = packet_in(group, q, row_packets)
                if pk >= n_packets:
                    break
                p_ox, p_oy, p_oz = packet_of(ox, q), packet_of(oy, q), packet_of(oz, q)
                p_dx, p_dy, p_dz = packet_of(dx, q), packet_of(dy, q), packet_of(dz, q)
                p_bt, p_bf, p_t = packet_of(best_t, q), packet_of(best_f, q), packet_of(t, q)
                p_hit, p_n = packet_of(hits, q), packet_of(n, q)
                p_in, p_nrm2 = packet_of(inputs, q), packet_of(nrm2, q)
                t_res = p_bt  # a hit's converged point has the smallest |f| of its ray
                gx, gy, gz = V(0.0), V(0.0), V(0.0)
                if ti.static(finishes):
                    inv_g = V(0.0)  # zero normals where nothing is hit
                    if p_hit.max() > 0:  # g = scale * (gx, gy, gz), the stencil's sums
                        gx, gy, gz = grad_packet(p_ox + p_bt * p_dx, p_oy + p_bt * p_dy, p_oz + p_bt * p_dz, params, h)
                        cos = (gx * p_dx + gy * p_dy + gz * p_dz) * (scale / h)
                        cos = ti.select(fabs(cos) < min_cos, ti.select(cos > 0.0, min_cos, -min_cos), cos)
                        t_res = ti.select(p_hit > 0, p_bt - p_bf / cos, p_bt)
                        g_len = ti.sqrt(gx * gx + gy * gy + gz * gz) * (scale / h)
                        inv_g = ti.select(p_hit > 0, 1.0 / fmax(g_len, 1e-12), 0.0)
                        inv_g *= scale / h
                    if ti.static(want_points):
                        c0, c1, c2 = interleave(p_ox + t_res * p_dx, p_oy + t_res * p_dy, p_oz + t_res * p_dz, lane)
                        points[pk, 0], points[pk, 1], points[pk, 2] = c0, c1, c2
                    if ti.static(want_normals):
                        c0, c1, c2 = interleave(gx * inv_g, gy * inv_g, gz * inv_g, lane)
                        normals[pk, 0], normals[pk, 1], normals[pk, 2] = c0, c1, c2
                t_out[pk] = t_res
                hit[pk] = ti.cast(p_hit, ti.u8)
                if ti.static(want_min):
                    t_min[pk] = p_bt
                    f_min[pk] = p_bf
                steps[pk] = p_n
                # The value checks, after every store (see the module doc): a non-finite value makes its
                # lane's sum non-finite; count which (valid lanes only) only when some lane is. Lane-wise
                # tests and one reduction: `.sum()` of the packet is a chain of 16 dependent scalar adds
                # (no reassociation), which cost 15% of the march at 1024^2 rays.
                check = p_bf + p_t + gx + gy + gz
                if (bad_lanes(p_in + check) | ti.cast(p_nrm2 == 0.0, ti.i32)).max() > 0:
                    n_o, n_d, n_zero, n_bad = 0, 0, 0, 0
                    for l in ti.static(range(lanes)):
                        if pk * lanes + l < n_rays:
                            n_o += bad(origins[pk * lanes + l, 0]) + bad(origins[pk * lanes + l, 1])
                            n_o += bad(origins[pk * lanes + l, 2])
                            n_d += bad(directions[pk * lanes + l, 0]) + bad(directions[pk * lanes + l, 1])
                            n_d += bad(directions[pk * lanes + l, 2])
                            n_zero += ti.cast(p_nrm2[l] == 0.0, ti.i32)
                            n_bad += bad(check[l])
                    ti.atomic_add(status[STATUS_BAD_ORIGINS], n_o)
                    ti.atomic_add(status[STATUS_BAD_DIRECTIONS], n_d)
                    ti.atomic_add(status[STATUS_ZERO_DIRECTIONS], n_zero)
                    ti.atomic_add(status[STATUS_BAD_SDF], n_bad)

    # Compiled with vector IR by `taichi_sdf.core.launch` when the field allows it (`sdf_lanes.vector_ir_safe`)
    trace.vector_ir = bool(getattr(sdf_xyz, "vector_ir", False))
    return trace


def packet_rows(x, lanes: int):
    """`x [N, 3]`'s whole packets as `[N // lanes, 3, lanes]`: each packet's 3 * lanes interleaved xyz
    values as 3 vectors (`_xyz_shuffle_funcs`; a view when `x` is contiguous)."""
    full = x.shape[0] // lanes * lanes
    return x[:full].reshape(-1, 3, lanes)


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
def basic_trace_kernel(sdf_xyz, dtype: str, params_ndim: int, lanes: int = 1):
    """kernel(origins [N,3], directions [N,3], params, t [N], n_steps): the textbook loop, `t += f`
    exactly n_steps times from t = 0, no bound, no early exit. The readable starting point for new
    tracers, and the fixed workload benchmarks compare with other systems. `lanes` > 1 traces SIMD
    packets (for lane-generic `sdf_xyz`; compiled with vector IR, through `taichi_sdf.core.launch`, for
    `vector_ir_safe` fields as `fused_trace_packet_kernel` is)."""
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

    trace.vector_ir = lanes > 1 and bool(getattr(sdf_xyz, "vector_ir", False))  # as the packet tracer
    return trace
