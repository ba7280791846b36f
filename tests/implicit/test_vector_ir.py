"""The CPU packet tracer's vector-IR compile (`taichi_sdf.core.launch.compile_settings`): built-in
scenes trace the same with it as without it, any ray count works with the packet rows, unmarked fields
(which may use `ti.abs` or unary minus on lanes, fatal in that mode) keep Taichi's default compile, and
the `sdf_lib` helpers the lane code uses instead equal Taichi's built-ins."""

import pytest
import taichi as ti
import torch

from taichi_sdf.cameras import camera as C
from taichi_sdf.core.launch import LeanKernel, compile_settings
from taichi_sdf.implicit.fields import TaichiField
from taichi_sdf.implicit.implicit_diff import MIN_COS
from taichi_sdf.implicit.scenes import make_scene
from taichi_sdf.implicit.sphere_trace import OPTIONAL_OUTPUTS, _TraceBuffers, sphere_trace
from taichi_sdf.kernels.implicit import sdf_lanes as S
from taichi_sdf.kernels.implicit.sdf_lib import fabs, fmax, fmin, vector_ir
from taichi_sdf.kernels.implicit.sphere_trace import (
    PACKET_LANES,
    _xyz_shuffle_funcs,
    fused_trace_packet_kernel,
    packet_rows,
)


def rays(n, dtype, device, eye=(0.5, 0.4, 2.4)):
    cam = C.look_at(torch.tensor([eye]), width=24, height=24, fov_x_deg=45.0).to(device, dtype)
    o, d = cam.image_rays()
    return o.reshape(-1, 3)[:n].contiguous(), d.reshape(-1, 3)[:n].contiguous()


def packet_trace(field, o, d, vector: bool, group_size: int = 1):
    """The no-gradient packet kernel of `field` (a fresh kernel object, so it compiles here), launched as
    `sphere_trace` launches it, with the vector-IR mark set to `vector`."""
    dname = "f32" if field.params.dtype == torch.float32 else "f64"
    kernel = fused_trace_packet_kernel.__wrapped__(field.sdf_xyz, dname, 1, "tetrahedral", PACKET_LANES, OPTIONAL_OUTPUTS,
                                                   group_size)  # fmt: skip
    kernel.vector_ir = vector
    buffers = _TraceBuffers(o.shape[0], PACKET_LANES, OPTIONAL_OUTPUTS, o)
    h = 1e-4 if dname == "f32" else 1e-6
    eps = 1e-5 if dname == "f32" else 1e-7
    scalars = (float(field.bound_radius), eps, 128, 1.0, h, MIN_COS, 0)
    LeanKernel(kernel)(o, d, packet_rows(o, PACKET_LANES), packet_rows(d, PACKET_LANES), field.params, *buffers.args,
                       *scalars)  # fmt: skip
    return buffers.result(4)


F32, F64 = (torch.float32, 2e-5, 3e-3), (torch.float64, 1e-10, 1e-6)


# Every built-in scene in float32, float64 on two (each case compiles two kernels: ~10-40 s on one core)
@pytest.mark.parametrize("name,dtype,t_tol,n_tol", [("sphere", *F32), ("csg", *F32), ("sphere_box", *F32), ("blobs", *F32),
                                                    ("sphere", *F64), ("sphere_box", *F64)])  # fmt: skip
def test_builtin_scenes_trace_the_same_with_and_without_vector_ir(device, name, dtype, t_tol, n_tol):
    """Taichi's default compile, one packet at a time, against vector IR with packets marched in pairs
    (as `sphere_trace` runs on AVX-512): the results differ by rounding only (fused multiply-adds are
    placed differently; the normals' finite differences divide that by h)."""
    if device.type != "cpu":
        pytest.skip("vector IR is an x86-64 CPU compile")
    field = make_scene(name, dtype=dtype, device=device)
    assert getattr(field.sdf_xyz, "vector_ir", False)  # built-ins are marked
    o, d = rays(24 * 24 - 5, dtype, device)  # a partial last packet
    a, b = packet_trace(field, o, d, vector=False), packet_trace(field, o, d, vector=True, group_size=2)
    assert 0.05 < a.hit.float().mean() < 0.95
    assert torch.equal(a.hit, b.hit)
    assert (a.steps != b.steps).float().mean() <= 0.01  # a rounding can move a convergence test by one step
    same = a.steps == b.steps
    for out in ("t", "t_min_sdf", "min_sdf"):
        torch.testing.assert_close(getattr(a, out)[same], getattr(b, out)[same], atol=t_tol, rtol=0, msg=out)
    torch.testing.assert_close(a.points[same], b.points[same], atol=t_tol, rtol=0)
    assert (a.normals - b.normals)[same].norm(dim=-1).max() < n_tol


@pytest.mark.parametrize("n", [1, 15, 16, 17, 48, 50])
def test_any_ray_count_matches_the_scalar_kernel(device, n):
    """Packet rows cover the whole packets; the rest (and fewer rays than a packet) load per ray; a
    group of packets may lack its last packet (48 rays: 3 packets)."""
    field = make_scene("sphere_box", device=device)
    o, d = rays(24 * 24, torch.float32, device, eye=(0.1, 0.1, 2.0))
    pick = torch.linspace(0, o.shape[0] - 1, n, device=device).round().long()  # rays spread over the image
    o, d = o[pick].contiguous(), d[pick].contiguous()
    with torch.no_grad():
        p, s = sphere_trace(field, o, d, packets=True), sphere_trace(field, o, d, packets=False)
    assert p.hit.shape == (n,) and torch.equal(p.hit, s.hit) and torch.equal(p.steps, s.steps)
    torch.testing.assert_close(p.t, s.t, atol=2e-5, rtol=0)
    torch.testing.assert_close(p.points, s.points, atol=2e-5, rtol=0)


@S.vector_ir_safe
@ti.func
def marked_probe(x, y, z, params: ti.template()):
    return x * 0.0 + ti.static(float(vector_ir()))


@ti.func
def unmarked_probe(x, y, z, params: ti.template()):
    return x * 0.0 + ti.static(float(vector_ir()))


def test_only_marked_fields_compile_with_vector_ir(device):
    """The mode the SDF was compiled in, read back through its value: marked fields get vector IR on
    x86-64 CPUs, unmarked ones Taichi's default; the setting is restored after each compile."""
    from taichi.lang import impl

    o, d = rays(20, torch.float32, device)
    x64 = str(impl.current_cfg().arch).endswith("x64")
    for sdf_xyz, expected in ((marked_probe, x64), (unmarked_probe, False)):
        field = TaichiField(lambda p, params: p[0], torch.zeros(1, device=device), sdf_xyz=sdf_xyz, bound_radius=1.0)
        with torch.no_grad():
            r = sphere_trace(field, o, d, packets=True, max_steps=1)
        assert torch.equal(r.min_sdf, torch.full_like(r.min_sdf, float(expected))), sdf_xyz
        assert impl.current_cfg().real_matrix_scalarize


def test_compile_settings_restore_taichi_default_on_errors():
    from taichi.lang import impl

    class Marked:
        vector_ir = True

    with pytest.raises(RuntimeError, match="boom"):
        with compile_settings(Marked()):
            raise RuntimeError("boom")
    assert impl.current_cfg().real_matrix_scalarize


@ti.func
def user_lanes(x, y, z, params: ti.template()):
    """A user's lane-generic field written with `ti.abs` and unary minus (fatal under vector IR)."""
    return ti.max(ti.abs(x) - params[0], ti.max(ti.abs(-y) - params[0], ti.abs(z) - params[0]))


@ti.func
def user_vec(p, params: ti.template()):
    return user_lanes(p[0], p[1], p[2], params)


def test_unmarked_user_field_with_abs_and_negation_traces_with_packets(device):
    field = TaichiField(user_vec, torch.tensor([0.3], device=device), sdf_xyz=user_lanes, bound_radius=1.0)
    o, d = rays(24 * 24 - 7, torch.float32, device)
    with torch.no_grad():
        p, s = sphere_trace(field, o, d, packets=True), sphere_trace(field, o, d, packets=False)
    assert 0.05 < p.hit.float().mean() < 0.95 and torch.equal(p.hit, s.hit)
    torch.testing.assert_close(p.t, s.t, atol=2e-5, rtol=0)


V8 = ti.types.vector(8, ti.f32)


def _minmax_kernel(builtins: bool):
    """kernel(a [N], b [N], out [N, 3]): |a|, max(a, b), min(a, b) on 8-lane vectors, by `fabs`/`fmax`/
    `fmin` or by Taichi's built-ins (which vector IR cannot compile)."""

    @ti.kernel
    def minmax(a: ti.types.ndarray(dtype=ti.f32, ndim=1), b: ti.types.ndarray(dtype=ti.f32, ndim=1),
               out: ti.types.ndarray(dtype=ti.f32, ndim=2)):  # fmt: skip
        for i in range(a.shape[0] // 8):
            x, y = V8(0.0), V8(0.0)
            for l in ti.static(range(8)):
                x[l], y[l] = a[8 * i + l], b[8 * i + l]
            r0, r1, r2 = x, x, x
            if ti.static(builtins):
                r0, r1, r2 = ti.abs(x), ti.max(x, y), ti.min(x, y)
            else:
                r0, r1, r2 = fabs(x), fmax(x, y), fmin(x, y)
            for l in ti.static(range(8)):
                out[8 * i + l, 0], out[8 * i + l, 1], out[8 * i + l, 2] = r0[l], r1[l], r2[l]

    return minmax


@pytest.mark.parametrize("vector", [False, True])
def test_fabs_fmax_fmin_equal_taichi_builtins(vector):
    """On lanes, compiled either way (the built-ins in Taichi's default compile)."""
    a = torch.tensor([-2.0, -0.5, 0.0, 0.25, 1.0, 3.0, -1.0, 0.5] * 2)
    b = torch.tensor([1.0, -0.5, -0.0, 0.5, -1.0, 3.5, -2.0, 0.5] * 2)
    kernel = _minmax_kernel(builtins=False)
    kernel.vector_ir = vector
    out, ref = torch.zeros(16, 3), torch.zeros(16, 3)
    LeanKernel(kernel)(a, b, out)
    _minmax_kernel(builtins=True)(a, b, ref)
    torch.testing.assert_close(out, ref, atol=0, rtol=0)
    torch.testing.assert_close(out[:, 0], a.abs(), atol=0, rtol=0)
    torch.testing.assert_close(out[:, 1], torch.maximum(a, b), atol=0, rtol=0)
    torch.testing.assert_close(out[:, 2], torch.minimum(a, b), atol=0, rtol=0)


def test_fmax_fmin_gradients_at_ties_follow_taichi():
    """At a tie the second argument takes the gradient, as with `ti.max`/`ti.min` (the CSG operators'
    documented subgradients depend on it)."""
    x = ti.field(ti.f32, shape=4, needs_grad=True)
    y = ti.field(ti.f32, shape=4, needs_grad=True)
    out = ti.field(ti.f32, shape=4, needs_grad=True)

    @ti.kernel
    def run():
        out[0] = fmax(x[0], y[0])
        out[1] = fmin(x[1], y[1])
        out[2] = ti.max(x[2], y[2])
        out[3] = ti.min(x[3], y[3])

    x.from_numpy(torch.ones(4).numpy())
    y.from_numpy(torch.ones(4).numpy())
    out.grad.from_numpy(torch.ones(4).numpy())
    run()
    run.grad()
    gx, gy = x.grad.to_numpy(), y.grad.to_numpy()
    assert list(gx[:2]) == list(gx[2:]) == [0.0, 0.0]
    assert list(gy[:2]) == list(gy[2:]) == [1.0, 1.0]


def test_params_written_in_place_after_a_trace_are_checked_again(device):
    """The finite check of `field.params` is skipped only while the same tensor is unwritten."""
    field = make_scene("sphere", device=device)
    o, d = rays(24 * 24, torch.float32, device)
    with torch.no_grad():
        sphere_trace(field, o, d)
        sphere_trace(field, o, d)
        field.params[3] = float("nan")
        with pytest.raises(ValueError, match=r"field.params: contains 1 non-finite"):
            sphere_trace(field, o, d)
    with torch.inference_mode():  # tensors without a version counter: checked every time
        inf_field = make_scene("sphere", device=device)
        inf_field = inf_field.with_params(inf_field.params.clone())
        assert sphere_trace(inf_field, o, d).hit.any()


def test_vector_ir_safe_marks_and_checks_its_group():
    from taichi_sdf.implicit.sphere_trace import march_group
    from taichi_sdf.kernels.implicit import scenes

    @S.vector_ir_safe
    @ti.func
    def small(x, y, z, params: ti.template()):
        return x

    @S.vector_ir_safe(march_group=1)
    @ti.func
    def large(x, y, z, params: ti.template()):
        return x

    assert (small.vector_ir, small.march_group, large.march_group) == (True, 2, 1)
    assert scenes.csg_xyz.march_group == 1 and scenes.sphere_box_xyz.march_group == 2
    assert march_group(user_lanes) == 1  # unmarked: one packet at a time, default compile
    from taichi_sdf.core.runtime import cpu_simd

    assert march_group(small) == (2 if cpu_simd() == "avx512f" else 1) and march_group(large) == 1
    with pytest.raises(ValueError, match="march_group: expected 1 or 2, got 3"):
        S.vector_ir_safe(march_group=3)(small)


def test_basic_fixed_step_kernel_with_vector_ir_matches_one_ray_per_iteration(device):
    """The fixed-workload kernel of the benchmarks: packets compiled with vector IR (built-in scene)
    give the one-ray-per-iteration kernel's t, and head-on rays converge to the sphere."""
    from taichi_sdf.kernels.implicit.sphere_trace import basic_trace_kernel

    field = make_scene("sphere", params=[0.0, 0.0, 0.0, 0.5], device=device)
    o, d = rays(24 * 24 - 3, torch.float32, device, eye=(0.0, 0.0, 2.0))
    d = d / d.norm(dim=-1, keepdim=True)
    packets = basic_trace_kernel(field.sdf_xyz, "f32", 1, PACKET_LANES)
    assert packets.vector_ir
    t_packets, t_single = torch.zeros(len(o), device=device), torch.zeros(len(o), device=device)
    LeanKernel(packets)(o, d, field.params, t_packets, 40)
    basic_trace_kernel(field.sdf_xyz, "f32", 1, 1)(o, d, field.params, t_single, 40)
    torch.testing.assert_close(t_packets, t_single, atol=1e-5, rtol=0)
    b = (o * d).sum(-1)
    disc = b * b - ((o * o).sum(-1) - 0.25)
    steep = disc > 0.2  # rays well inside the silhouette converge within 40 steps
    assert steep.sum() > 20
    torch.testing.assert_close(t_packets[steep], (-b - disc.clamp_min(0).sqrt())[steep], atol=1e-4, rtol=0)


@pytest.mark.parametrize("lanes,dtype", [(1, ti.f32), (2, ti.f32), (4, ti.f32), (16, ti.f32), (16, ti.f64)])
@pytest.mark.parametrize("vector", [False, True])
def test_xyz_shuffles_split_and_join_packet_rows_exactly(lanes, dtype, vector):
    """`_xyz_shuffle_funcs`: a packet row of `[lanes, 3]` rays, read as 3 vectors, gives its x, y, z
    columns, and joining the columns gives the row back, bit for bit, for any lane count, with and
    without vector IR."""
    deinterleave, interleave = _xyz_shuffle_funcs(lanes)
    V = ti.types.vector(lanes, dtype)
    I = ti.types.vector(lanes, ti.i32)

    @ti.kernel
    def split_join(rows: ti.types.ndarray(dtype=V, ndim=2), cols: ti.types.ndarray(dtype=V, ndim=2),
                   back: ti.types.ndarray(dtype=V, ndim=2), zero: ti.i32):  # fmt: skip
        for p in range(rows.shape[0]):
            lane = I([l for l in ti.static(range(lanes))]) + zero
            x, y, z = deinterleave(rows[p, 0], rows[p, 1], rows[p, 2], lane)
            cols[p, 0], cols[p, 1], cols[p, 2] = x, y, z
            a0, a1, a2 = interleave(x, y, z, lane)
            back[p, 0], back[p, 1], back[p, 2] = a0, a1, a2

    split_join.vector_ir = vector
    tdtype = torch.float32 if dtype == ti.f32 else torch.float64
    rays = torch.randn(5 * lanes, 3, dtype=tdtype)  # 5 packets
    cols, back = torch.empty(5, 3, lanes, dtype=tdtype), torch.empty(5, 3, lanes, dtype=tdtype)
    with compile_settings(split_join):
        split_join(packet_rows(rays, lanes), cols, back, 0)
    assert torch.equal(cols, rays.view(5, lanes, 3).transpose(1, 2))
    assert torch.equal(back.view(-1, 3), rays)


@ti.func
def nan_below_plane_lanes(x, y, z, params: ti.template()):
    return ti.sqrt(y + params[0]) - 0.5 + x * 0.0  # NaN where y < -params[0]


@S.vector_ir_safe  # the same field, marked (`vector_ir_safe` marks the function object itself)
@ti.func
def nan_below_plane_lanes_marked(x, y, z, params: ti.template()):
    return ti.sqrt(y + params[0]) - 0.5 + x * 0.0


@ti.func
def nan_below_plane(p, params: ti.template()):
    return nan_below_plane_lanes(p[0], p[1], p[2], params)


@pytest.mark.parametrize("marked", [True, False])
def test_packet_tracer_reports_non_finite_sdf_values(device, marked):
    """A ray whose SDF turns NaN keeps marching (comparisons with NaN are false, and the packet kernel's
    lane masks negate them rather than test the opposite), so the value check reports it as the
    one-ray-per-thread kernel does: with vector IR and packets marched in pairs (marked), and in
    Taichi's default compile (unmarked)."""
    sdf_xyz = nan_below_plane_lanes_marked if marked else nan_below_plane_lanes
    assert bool(getattr(sdf_xyz, "vector_ir", False)) == marked
    field = TaichiField(nan_below_plane, torch.tensor([0.0], device=device), sdf_xyz=sdf_xyz, bound_radius=1.0)
    o = torch.tensor([[0.0, 0.3, 3.0], [0.0, -0.8, 3.0], [0.0, 0.2, 3.0]] * 12, device=device)  # 36 rays, 12 NaN
    d = torch.tensor([[0.0, 0.0, -1.0]] * 36, device=device)
    for packets in (True, False):
        with pytest.raises(ValueError, match=r"the SDF returned non-finite values along 12 rays"):
            sphere_trace(field, o, d, packets=packets)
        r = sphere_trace(field, o, d, packets=packets, check_values=False)
        assert torch.equal(r.steps[1::3], torch.full_like(r.steps[1::3], 128))  # marched on to max_steps
        assert bool((r.steps[0::3] < 128).all()) and bool((r.steps[2::3] < 128).all())  # the others stop early
