"""Fused sphere tracer: closed-form depth, agreement with the torch twin, implicit gradients vs
finite differences of the whole trace, and defined behaviour on edge cases."""

import pytest
import taichi as ti
import torch

from taichi_sdf.cameras import camera as C
from taichi_sdf.cameras.pose import axis_angle_to_matrix
from taichi_sdf.implicit.fields import TaichiField, grid_field
from taichi_sdf.implicit.sphere_trace import field_gradients, field_values, sphere_trace
from taichi_sdf.kernels.implicit.sphere_trace import PACKET_LANES
from taichi_sdf.reference.implicit import sphere_trace as twin
from tests.helpers import assert_matches_twin


@ti.func
def ti_sphere(p, params: ti.template()):
    return (p - ti.Vector([params[0], params[1], params[2]])).norm() - params[3]


def torch_sphere(x, params):
    return (x - params[:3]).norm(dim=-1) - params[3]


@ti.func
def ti_box(p, params: ti.template()):
    q = ti.abs(p - ti.Vector([params[0], params[1], params[2]])) - ti.Vector([params[3], params[4], params[5]])
    m = ti.max(q, 0.0)
    inner = ti.max(q[0], ti.max(q[1], q[2]))
    # Points on a face have q = 0 on one axis: take the inner branch at the tie (its gradient is the
    # face normal) and a norm whose gradient at 0 is 0 (norm() gives NaN there).
    return ti.sqrt(ti.max(m.dot(m), 1e-30)) + ti.select(inner <= 0.0, inner, 0.0)


def torch_box(x, params):
    q = (x - params[:3]).abs() - params[3:6]
    return q.clamp_min(0).norm(dim=-1) + q.max(dim=-1).values.clamp_max(0)


def camera_rays(dtype, device, eye=(0.4, 0.3, 2.5), size=24, fov=45.0):
    cam = C.look_at(torch.tensor([eye]), width=size, height=size, fov_x_deg=fov).to(device, dtype)
    o, d = cam.image_rays()
    return cam, o.reshape(-1, 3).contiguous(), d.reshape(-1, 3).contiguous()


def sphere_closed_form(o, d, c, r):
    oc = o - c
    b = (oc * d).sum(-1)
    disc = b * b - (oc * oc).sum(-1) + r * r
    t = -b - disc.clamp_min(0).sqrt()
    return disc > 0, t


def box_closed_form(o, d, c, h):
    inv = 1.0 / d
    t1, t2 = (c - h - o) * inv, (c + h - o) * inv
    tmin = torch.minimum(t1, t2).max(dim=-1).values
    tmax = torch.maximum(t1, t2).min(dim=-1).values
    return (tmax > tmin) & (tmax > 0), tmin


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sphere_depth_matches_closed_form(device, dtype):
    _, o, d = camera_rays(dtype, device)
    params = torch.tensor([0.1, -0.05, 0.0, 0.5], dtype=dtype, device=device)
    r = sphere_trace(TaichiField(ti_sphere, params), o, d)
    hit, t = sphere_closed_form(o, d, params[:3], params[3])
    n = o + t[:, None] * d - params[:3]
    cos = -(n / n.norm(dim=-1, keepdim=True) * d).sum(-1)
    clear = hit & (cos > 0.05)  # grazing rays converge slowly; the test is about depth accuracy
    assert clear.sum() > 100
    assert r.hit[clear].all() and not r.hit[~hit].any()
    assert (r.t - t)[clear].abs().max() < 1e-4
    torch.testing.assert_close(r.normals[clear], (n / n.norm(dim=-1, keepdim=True))[clear], atol=2e-3, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_box_depth_matches_closed_form(device, dtype):
    _, o, d = camera_rays(dtype, device, eye=(0.9, 0.7, 2.2))
    params = torch.tensor([0.0, 0.1, 0.0, 0.4, 0.3, 0.5], dtype=dtype, device=device)
    r = sphere_trace(TaichiField(ti_box, params), o, d)
    hit, t = box_closed_form(o, d, params[:3], params[3:])
    # Stay clear of the silhouette, where rays graze the box's faces.
    clear = hit & box_closed_form(o, d, params[:3], params[3:] * 0.97)[0]
    assert clear.sum() > 50
    assert r.hit[clear].all() and not r.hit[~hit].any()
    assert (r.t - t)[clear].abs().max() < 1e-4


@pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-4), (torch.float64, 1e-9)])
def test_fused_matches_twin(device, dtype, atol):
    _, o, d = camera_rays(dtype, device)
    params = torch.tensor([0.0, 0.1, 0.0, 0.4, 0.3, 0.5], dtype=dtype, device=device, requires_grad=True)
    r = sphere_trace(TaichiField(ti_box, params), o, d)
    rt = twin.sphere_trace(torch_box, params, o, d)
    assert (r.hit == rt.hit).float().mean() >= 0.995
    both = r.hit & rt.hit
    torch.testing.assert_close(r.t[both], rt.t[both], atol=atol, rtol=0)
    assert (r.steps[both] - rt.steps[both]).abs().max() <= (0 if dtype == torch.float64 else 2)
    # Gradients away from the silhouette (grazing rays amplify the central-difference normal's error).
    both = both & box_closed_form(o, d, params[:3].detach(), params[3:].detach() * 0.97)[0]
    cot = torch.randn(int(both.sum()), dtype=dtype, device=device, generator=torch.Generator().manual_seed(0))
    (g,) = torch.autograd.grad((r.t[both] * cot).sum(), params)
    (gt,) = torch.autograd.grad((rt.t[both] * cot).sum(), params)
    torch.testing.assert_close(g, gt, atol=atol * 100, rtol=1e-3)


def _fd_check(loss_fn, x, h=1e-6, rel=1e-3):
    """d loss / d x by autograd vs central finite differences of the whole (re-traced) pipeline."""
    x = x.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(loss_fn(x), x)
    fd = torch.zeros_like(x)
    flat = fd.view(-1)
    for i in range(x.numel()):
        e = torch.zeros_like(x).view(-1)
        e[i] = h
        e = e.view_as(x)
        with torch.no_grad():
            flat[i] = (loss_fn(x + e) - loss_fn(x - e)) / (2 * h)
    err = (g - fd).norm() / fd.norm().clamp_min(1e-12)
    assert err < rel, f"relative error {float(err):.2e}: autograd {g} vs FD {fd}"
    return g


def _fixed_rays_loss(trace_t, mask):
    w = torch.linspace(0.5, 1.5, int(mask.sum()), dtype=torch.float64)
    return lambda t: (trace_t(t)[mask] * w.to(t.device)).sum()


def test_gradient_wrt_primitive_parameters_matches_fd(device):
    _, o, d = camera_rays(torch.float64, device, size=12)
    p0 = torch.tensor([0.05, 0.0, 0.0, 0.35, 0.3, 0.4], dtype=torch.float64, device=device)
    ref = sphere_trace(TaichiField(ti_box, p0), o, d)
    mask = ref.hit & box_closed_form(o, d, p0[:3], p0[3:] * 0.95)[0]
    assert mask.sum() > 10
    loss = _fixed_rays_loss(lambda p: sphere_trace(TaichiField(ti_box, p), o, d).t, mask)
    _fd_check(loss, p0)


def test_gradient_wrt_grid_values_matches_fd(device):
    # A sphere's SDF sampled on a 6^3 grid; gradients w.r.t. a few node values near the surface.
    res = 6
    lin = torch.linspace(-1, 1, res, dtype=torch.float64)
    X = torch.stack(torch.meshgrid(lin, lin, lin, indexing="ij"), -1)
    values = (X.norm(dim=-1) - 0.6).to(device)
    _, o, d = camera_rays(torch.float64, device, eye=(0.2, 0.3, 2.5), size=10)
    field = grid_field(values)
    ref = sphere_trace(field, o, d, step_scale=0.9, max_steps=200)
    mask = ref.hit.clone()
    assert mask.sum() > 10
    sel = [(2, 2, 4), (3, 3, 4), (2, 3, 4), (3, 2, 4)]  # nodes in front of the +z surface

    def loss(v_sel):
        v = values.clone()
        for k, (i, j, l) in enumerate(sel):
            v[i, j, l] = v_sel[k]
        r = sphere_trace(grid_field(v), o, d, step_scale=0.9, max_steps=200)
        w = torch.linspace(0.5, 1.5, int(mask.sum()), dtype=torch.float64, device=device)
        return (r.t[mask] * w).sum()

    g = _fd_check(loss, torch.stack([values[i, j, l] for i, j, l in sel]))
    assert g.abs().max() > 0


def test_gradient_wrt_camera_pose_matches_fd(device):
    cam, _, _ = camera_rays(torch.float64, device, size=10)
    params = torch.tensor([0.0, 0.0, 0.0, 0.5], dtype=torch.float64, device=device)
    field = TaichiField(ti_sphere, params)
    o, d = cam.image_rays()
    ref = sphere_trace(field, o.reshape(-1, 3).contiguous(), d.reshape(-1, 3).contiguous())
    hit, t = sphere_closed_form(o.reshape(-1, 3), d.reshape(-1, 3), params[:3], 0.45)
    mask = ref.hit & hit  # rays well inside the silhouette

    def loss(pose6):  # a pose delta (axis-angle, translation) applied to the camera, built by hand
        R = axis_angle_to_matrix(pose6[:3])
        D = torch.eye(4, dtype=torch.float64, device=device)
        D = torch.cat([torch.cat([R, pose6[3:, None]], 1), D[3:]], 0)
        T = (D @ cam.T_cam_world[0])[None]
        oo, dd = C.Camera(cam.K, T, cam.width, cam.height).image_rays()
        r = sphere_trace(field, oo.reshape(-1, 3), dd.reshape(-1, 3))
        w = torch.linspace(0.5, 1.5, int(mask.sum()), dtype=torch.float64, device=device)
        return (r.t[mask] * w).sum() + (r.normals[mask][:, 0] * w).sum()

    _fd_check(loss, torch.tensor([0.01, -0.02, 0.015, 0.02, -0.01, 0.03], dtype=torch.float64, device=device))


def test_min_sdf_gradient_for_silhouettes(device):
    _, o, d = camera_rays(torch.float64, device, size=12)
    p0 = torch.tensor([0.0, 0.0, 0.0, 0.4], dtype=torch.float64, device=device)
    ref = sphere_trace(TaichiField(ti_sphere, p0), o, d)
    miss = ~ref.hit
    assert miss.sum() > 10
    # For a sphere the min-SDF along a missing ray is (distance of the ray to the centre) - r:
    # its derivative w.r.t. r is exactly -1 per ray.
    p = p0.clone().requires_grad_()
    r = sphere_trace(TaichiField(ti_sphere, p), o, d)
    (g,) = torch.autograd.grad(r.min_sdf[miss].sum(), p)
    torch.testing.assert_close(g[3], torch.tensor(-float(miss.sum()), dtype=torch.float64, device=device), rtol=1e-6, atol=0)
    # Every component, the centre included, with per-ray weights: at the (fixed) min-SDF point x of a
    # miss, d f / d c = -(x - c) / |x - c| and d f / d r = -1; w.r.t. the origins, +(x - c) / |x - c|.
    og = o.clone().requires_grad_()
    r = sphere_trace(TaichiField(ti_sphere, p), og, d)
    w = torch.linspace(0.5, 1.5, int(miss.sum()), dtype=torch.float64, device=device)
    gp, go = torch.autograd.grad((r.min_sdf[miss] * w).sum(), (p, og))
    x = (o + r.t_min_sdf[:, None] * d)[miss]
    u = x / x.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(gp, torch.cat([-(u * w[:, None]).sum(0), -w.sum()[None]]), atol=1e-12, rtol=1e-10)
    go_expected = torch.zeros_like(o)
    go_expected[miss] = u * w[:, None]
    torch.testing.assert_close(go, go_expected, atol=1e-12, rtol=1e-10)
    dist = torch.linalg.cross(o, d).norm(dim=-1)
    # The marching loop samples the ray: its minimum is >= the true one, and close to it.
    gap = r.min_sdf[miss].detach() - (dist - 0.4)[miss]
    assert gap.min() > -1e-9 and gap.max() < 0.05


def test_field_gradients_match_central_differences_of_the_twin(device):
    """`field_gradients` (Taichi central differences) against central differences of the scene's torch
    twin, values and VJPs w.r.t. points and params (float64)."""
    from taichi_sdf.implicit.scenes import make_scene
    from taichi_sdf.reference.implicit import scenes as scene_twins

    field = make_scene("blobs", dtype=torch.float64, device=device)
    sdf_twin = scene_twins.twin(field.name)
    h = 1e-4

    def twin_gradients(x, params):
        e = torch.eye(3, dtype=x.dtype, device=x.device) * h
        return torch.stack([(sdf_twin(x + e[a], params) - sdf_twin(x - e[a], params)) / (2 * h) for a in range(3)], -1)

    pts = (torch.rand(64, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 1.6 - 0.8).to(device)
    params = field.params.clone().requires_grad_()
    assert_matches_twin(lambda x, p: field_gradients(field.with_params(p), x, h=h), twin_gradients,
                        (pts.requires_grad_(), params), atol=1e-9)  # fmt: skip
    # and they are the gradient up to O(h) (the smooth unions are C1 only): autograd of the twin
    x = pts.detach().requires_grad_()
    (exact,) = torch.autograd.grad(sdf_twin(x, field.params).sum(), x)
    torch.testing.assert_close(field_gradients(field, pts.detach(), h=h), exact, atol=1e-5, rtol=0)


def test_field_ops_gradcheck(device):
    params = torch.tensor([0.1, 0.0, -0.1, 0.3, 0.35, 0.4], dtype=torch.float64, device=device, requires_grad=True)
    pts = (torch.rand(6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * 1.6 - 0.8).to(device)
    field = TaichiField(ti_box, params)
    assert torch.autograd.gradcheck(lambda x, p: field_values(field.with_params(p), x), (pts.requires_grad_(), params))
    assert torch.autograd.gradcheck(
        lambda x, p: field_gradients(field.with_params(p), x, h=1e-4), (pts, params), atol=1e-6
    )


# -- edge cases --------------------------------------------------------------------------------------


def test_rays_missing_everything_are_defined(device):
    params = torch.tensor([0.0, 0.0, 0.0, 0.3], dtype=torch.float32, device=device, requires_grad=True)
    o = torch.tensor([[0.0, 0.0, 3.0], [5.0, 5.0, 5.0]], device=device)
    d = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]], device=device)  # away from the bound
    r = sphere_trace(TaichiField(ti_sphere, params), o, d)
    assert not r.hit.any()
    for x in (r.t, r.points, r.normals, r.min_sdf):
        assert torch.isfinite(x).all()
    r.min_sdf.sum().backward()
    assert torch.isfinite(params.grad).all()


def test_camera_inside_bound(device):
    params = torch.tensor([0.0, 0.0, 0.0, 0.3], dtype=torch.float64, device=device)
    o = torch.tensor([[0.0, 0.0, 0.8]], dtype=torch.float64, device=device).repeat(2, 1)
    d = torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, 1.0]], dtype=torch.float64, device=device)
    r = sphere_trace(TaichiField(ti_sphere, params), o, d)
    assert r.hit.tolist() == [True, False]
    assert abs(float(r.t[0]) - 0.5) < 1e-6


def test_zero_rays(device):
    params = torch.tensor([0.0, 0.0, 0.0, 0.3], device=device)
    r = sphere_trace(TaichiField(ti_sphere, params), torch.zeros(0, 3, device=device), torch.zeros(0, 3, device=device))
    assert r.hit.shape == (0,) and r.points.shape == (0, 3) and r.num_evals == 0


def test_bad_inputs_raise(device):
    params = torch.tensor([0.0, 0.0, 0.0, float("nan")], device=device)
    o = torch.tensor([[0.0, 0.0, 3.0]], device=device)
    d = torch.tensor([[0.0, 0.0, -1.0]], device=device)
    with pytest.raises(ValueError, match="non-finite"):
        sphere_trace(TaichiField(ti_sphere, params), o, d)
    good = TaichiField(ti_sphere, torch.tensor([0.0, 0.0, 0.0, 0.3], device=device))
    with pytest.raises(ValueError, match="origins: contains 3 non-finite"):
        sphere_trace(good, torch.full((1, 3), float("nan"), device=device), d)
    with pytest.raises(ValueError, match="directions: expected shape"):
        sphere_trace(good, o, d[:, :2].contiguous())
    with pytest.raises(ValueError, match="directions: expected dtype float32"):
        sphere_trace(good, o, d.double())
    with pytest.raises(ValueError, match="max_steps"):
        sphere_trace(good, o, d, max_steps=0)
    with pytest.raises(TypeError, match="field: expected a TaichiField"):
        sphere_trace(lambda x: x, o, d)


# -- the no-gradient fused kernel (march, Newton step, normals, min-SDF in one launch) -----------------


# float32 atol: t accumulates a rounding per step (measured 2.7e-6 on a miss at t ~ 1.9 after its march).
@pytest.mark.parametrize("dtype,atol,normal_tol", [(torch.float32, 4e-6, 3e-3), (torch.float64, 1e-10, 2e-5)])
@pytest.mark.parametrize("packets", [True, False])
def test_no_grad_outputs_match_twin(device, dtype, atol, normal_tol, packets):
    """Every output of the one-launch path against the torch twin (exact normals at the final points):
    the kernel's normals are a tetrahedral difference at the marched point."""
    from taichi_sdf.implicit.scenes import make_scene
    from taichi_sdf.reference.implicit import scenes as scene_twins

    field = make_scene("blobs", dtype=dtype, device=device)
    _, o, d = camera_rays(dtype, device, eye=(0.6, 0.9, 2.0), size=21)  # 441 rays: a partial packet
    with torch.no_grad():
        r = sphere_trace(field, o, d, packets=packets)
    rt = twin.sphere_trace(scene_twins.twin(field.name), field.params, o, d)
    assert r.hit.dtype == torch.bool and 0.1 < r.hit.float().mean() < 0.9
    assert torch.equal(r.hit, rt.hit) and torch.equal(r.steps, rt.steps)
    for name in ("t", "points", "t_min_sdf", "min_sdf"):
        torch.testing.assert_close(getattr(r, name), getattr(rt, name).detach(), atol=atol, rtol=0, msg=name)
    assert (r.normals - rt.normals.detach()).norm(dim=-1).max() < normal_tol
    assert torch.equal(r.normals[~r.hit], torch.zeros_like(r.normals[~r.hit]))  # a miss has no normal
    assert r.marching_evals == rt.marching_evals
    misses_of_bound = int((r.steps == 0).sum())
    # The stencil (4 points) runs on the hits; with packets on every ray of a packet with a hit (its
    # spare lanes repeat the last ray, which they are not counted as).
    if packets:
        padded = torch.cat([r.hit, r.hit[-1:].expand((-len(o)) % PACKET_LANES)])
        stenciled = int(padded.view(-1, PACKET_LANES).any(1, keepdim=True).expand(-1, PACKET_LANES).reshape(-1)[: len(o)].sum())
        assert int(r.hit.sum()) < stenciled < len(o)
    else:
        stenciled = int(r.hit.sum())
    assert r.num_evals == r.marching_evals + misses_of_bound + 4 * stenciled


@pytest.mark.parametrize("dtype,tetra_tol,central_tol", [(torch.float32, 1e-3, 1e-3), (torch.float64, 3e-6, 2e-6)])
def test_stencil_normals_match_analytic_sphere_normals(device, dtype, tetra_tol, central_tol):
    """Normals of a sphere (radius 0.5) against the analytic ones on rays with cos > 0.2. Measured (h = 1e-4
    in float32, 1e-6 in float64): float32 tetrahedral 2.7e-4, central 2.9e-4 to 3.3e-4 (both rounding:
    ~1e-7 / h); float64 tetrahedral 1.3e-6 (its first-order error h * H_offdiag), central 8.1e-7 (the
    marched point lies up to eps / cos from the reported one)."""
    from taichi_sdf.implicit.scenes import make_scene

    _, o, d = camera_rays(dtype, device, size=32)
    field = make_scene("sphere", params=[0.1, -0.05, 0.0, 0.5], dtype=dtype, device=device)
    hit, t = sphere_closed_form(o, d, field.params[:3], field.params[3])
    n = o + t[:, None] * d - field.params[:3]
    n = n / n.norm(dim=-1, keepdim=True)
    clear = hit & (-(n * d).sum(-1) > 0.2)
    assert clear.sum() > 150
    errors = {}
    for stencil, tol in (("tetrahedral", tetra_tol), ("central", central_tol)):
        for packets in (True, False):
            with torch.no_grad():
                r = sphere_trace(field, o, d, stencil=stencil, packets=packets)
            errors[stencil, packets] = float((r.normals - n)[clear].norm(dim=-1).max())
            assert errors[stencil, packets] < tol, (stencil, packets, errors)
            assert (r.t - t)[clear].abs().max() < (2e-5 if dtype == torch.float32 else 1e-11)
    if dtype == torch.float64:  # the tetrahedral stencil's error is first order in h: visibly above central's
        assert errors["tetrahedral", True] > errors["central", True]


def test_in_kernel_value_checks_name_the_input(device):
    """Non-finite rays, zero-length directions and non-finite SDF values are counted by the tracing kernel
    (no pass over the rays), in full and partial packets and in the scalar kernel."""
    from taichi_sdf.implicit.scenes import make_scene

    field = make_scene("sphere", device=device)
    _, o, d = camera_rays(torch.float32, device, size=6)  # 36 rays: 2 full packets and a partial one
    for packets in (True, False):
        bad_o = o.clone()
        bad_o[35, 1] = float("nan")
        bad_o[3, 0] = float("inf")
        with pytest.raises(ValueError, match=r"origins: contains 2 non-finite value\(s\)"):
            sphere_trace(field, bad_o, d, packets=packets)
        bad_d = d.clone()
        bad_d[20] = float("nan")
        with pytest.raises(ValueError, match=r"directions: contains 3 non-finite value\(s\)"):
            sphere_trace(field, o, bad_d, packets=packets)
        bad_d = d.clone()
        bad_d[[0, 17, 35]] = 0.0
        with pytest.raises(ValueError, match=r"directions: 3 of 36 directions have zero length"):
            sphere_trace(field, o, bad_d, packets=packets)
        with pytest.raises(ValueError, match=r"directions: 3 of 36 directions have zero length"):  # grad path too
            sphere_trace(field.with_params(field.params.clone().requires_grad_()), o, bad_d, packets=packets)


@ti.func
def ti_nan_below_plane(p, params: ti.template()):
    return ti.sqrt(p[1] + params[0]) - 0.5  # NaN where y < -params[0]


def test_non_finite_sdf_values_are_refused(device):
    params = torch.tensor([0.0], device=device)
    o = torch.tensor([[0.0, 0.3, 3.0], [0.0, -0.8, 3.0], [0.0, 0.2, 3.0]], device=device)
    d = torch.tensor([[0.0, 0.0, -1.0]] * 3, device=device)
    with pytest.raises(ValueError, match=r"field 'field': the SDF returned non-finite values along 1 rays"):
        sphere_trace(TaichiField(ti_nan_below_plane, params), o, d)


def test_unchecked_trace_still_checks_shapes_and_dtypes(device):
    """`check_values=False` skips only the read-back of the kernel's value checks."""
    good = TaichiField(ti_sphere, torch.tensor([0.0, 0.0, 0.0, 0.3], device=device))
    o = torch.tensor([[0.0, 0.0, 3.0]] * 2, device=device)
    d = torch.tensor([[0.0, 0.0, -1.0]] * 2, device=device)
    with pytest.raises(ValueError, match=r"directions: expected shape \[N, 3\] with N=2, got \[3, 3\]"):
        sphere_trace(good, o, torch.cat([d, d[:1]]), check_values=False)
    with pytest.raises(ValueError, match=r"origins: expected shape \[N, 3\] with N=2, got \[2, 4\]"):
        sphere_trace(good, torch.zeros(2, 4, device=device), d, check_values=False)
    with pytest.raises(ValueError, match="directions: expected dtype float32"):
        sphere_trace(good, o, d.double(), check_values=False)
    with pytest.raises(ValueError, match="origins: expected a contiguous tensor"):
        sphere_trace(good, torch.zeros(3, 2, device=device).t(), d, check_values=False)
    with pytest.raises(ValueError, match="stencil: expected one of"):
        sphere_trace(good, o, d, stencil="forward")
    with torch.no_grad():
        r = sphere_trace(good, o, d * 3.0, check_values=False)  # and traces as the checked call does
    assert r.hit.all() and torch.allclose(r.t, torch.full((2,), 2.7, device=device), atol=1e-5)


def test_evaluation_counts_are_read_lazily_and_survive_reshape(device):
    from taichi_sdf.implicit.scenes import make_scene
    from taichi_sdf.implicit.sphere_trace import FusedTraceResult

    _, o, d = camera_rays(torch.float32, device, size=8)
    with torch.no_grad():  # one ray per thread: the stencil runs on the hits only
        r = sphere_trace(make_scene("sphere", device=device), o, d, stencil="central", packets=False)
    assert isinstance(r, FusedTraceResult) and r._num_evals is None  # nothing read back yet
    img = r.reshape(8, 8)
    assert img.hit.shape == (8, 8) and img.points.shape == (8, 8, 3)
    assert 0 < int(r.hit.sum()) < 64
    expected = int(r.steps.sum()) + int((r.steps == 0).sum()) + 6 * int(r.hit.sum())
    assert img.num_evals == r.num_evals == expected and img.marching_evals == int(r.steps.sum())


# -- output selection and buffer reuse (no-gradient path) -----------------------------------------------


def _all_outputs(r):
    return {k: getattr(r, k) for k in ("hit", "t", "points", "normals", "t_min_sdf", "min_sdf", "steps")}


@pytest.mark.parametrize("packets", [True, False])
def test_output_selection_equals_the_full_calls_outputs(device, packets):
    """`outputs=` returns the full call's tensors for what it selects (hits and steps exactly, values to
    a few float32 ulps: with fast math LLVM may contract the march's arithmetic differently in each
    compiled variant, measured 4 ulps at t ~ 1.9), None for the rest; with gradients too."""
    from taichi_sdf.implicit.scenes import make_scene

    field = make_scene("blobs", device=device)
    _, o, d = camera_rays(torch.float32, device, eye=(0.6, 0.9, 2.0), size=21)  # 441 rays: a partial packet
    with torch.no_grad():
        full = _all_outputs(sphere_trace(field, o, d, packets=packets))
        for selection in [("normals",), ("points", "min_sdf"), ["min_sdf", "normals", "points"]]:
            part = _all_outputs(sphere_trace(field, o, d, packets=packets, outputs=selection))
            wanted = {"hit", "t", "steps"} | set(selection) | ({"t_min_sdf"} if "min_sdf" in selection else set())
            for name, value in part.items():
                if name in wanted and value.dtype.is_floating_point:
                    torch.testing.assert_close(value, full[name], atol=1e-6, rtol=1e-6, msg=f"{selection} {name}")
                elif name in wanted:
                    assert torch.equal(value, full[name]), (selection, name)
                else:
                    assert value is None, (selection, name)
    grad_field = field.with_params(field.params.clone().requires_grad_())
    r = sphere_trace(grad_field, o, d, packets=packets, outputs=("normals",))
    assert r.points is None and r.min_sdf is None and r.t_min_sdf is None and r.normals.shape == (441, 3)
    assert torch.equal(r.hit, full["hit"]) and r.t.requires_grad
    torch.testing.assert_close(r.t.detach(), full["t"], atol=1e-5, rtol=0)  # exact vs tetrahedral Newton step


def test_output_selection_names_are_checked(device):
    from taichi_sdf.implicit.scenes import make_scene

    field = make_scene("sphere", device=device)
    _, o, d = camera_rays(torch.float32, device, size=4)
    with pytest.raises(ValueError, match=r"outputs: expected names from .*got unknown \['depth'\]"):
        sphere_trace(field, o, d, outputs=("normals", "depth"))
    with pytest.raises(TypeError, match="outputs: expected a sequence of names"):
        sphere_trace(field, o, d, outputs="normals")


@pytest.mark.parametrize("packets", [True, False])
def test_out_buffers_are_reused_and_give_the_fresh_calls_outputs(device, packets):
    from taichi_sdf.implicit.scenes import make_scene

    field = make_scene("blobs", device=device)
    _, o1, d1 = camera_rays(torch.float32, device, eye=(0.6, 0.9, 2.0), size=21)
    _, o2, d2 = camera_rays(torch.float32, device, eye=(-0.8, 0.2, 2.2), size=21)
    with torch.no_grad():
        first = sphere_trace(field, o1, d1, packets=packets)
        fresh = _all_outputs(sphere_trace(field, o2, d2, packets=packets))
        ptrs = {k: v.data_ptr() for k, v in _all_outputs(first).items()}
        again = sphere_trace(field, o2, d2, packets=packets, out=first)
        assert {k: v.data_ptr() for k, v in _all_outputs(again).items()} == ptrs  # nothing allocated
        for name, value in _all_outputs(again).items():
            assert torch.equal(value, fresh[name]), name
        assert again.num_evals == sphere_trace(field, o2, d2, packets=packets).num_evals
        # A refused trace into the buffers leaves no stale check behind for the next one.
        bad_o = o2.clone()
        bad_o[7, 2] = float("nan")
        with pytest.raises(ValueError, match=r"origins: contains 1 non-finite value\(s\)"):
            sphere_trace(field, bad_o, d2, packets=packets, out=again)
        again = sphere_trace(field, o1, d1, packets=packets, out=again)
        assert torch.equal(again.t, sphere_trace(field, o1, d1, packets=packets).t)
        # A selection reuses buffers of the same selection.
        part = sphere_trace(field, o1, d1, packets=packets, outputs=("normals",))
        part2 = sphere_trace(field, o2, d2, packets=packets, outputs=("normals",), out=part)
        assert part2.normals.data_ptr() == part.normals.data_ptr() and torch.equal(part2.normals, fresh["normals"])


def test_out_buffers_that_do_not_fit_are_refused_by_name(device):
    from taichi_sdf.implicit.scenes import make_scene

    field = make_scene("blobs", device=device)  # kernels shared with the tests above
    _, o, d = camera_rays(torch.float32, device, size=8)  # 64 rays: whole packets
    _, o6, d6 = camera_rays(torch.float32, device, size=6)
    with torch.no_grad():
        r64 = sphere_trace(field, o, d)
        with pytest.raises(ValueError, match=r"out.t: expected shape \[N\] with N=36, got \[64\]"):
            sphere_trace(field, o6, d6, out=r64)
        r64d = sphere_trace(make_scene("blobs", dtype=torch.float64, device=device), o.double(), d.double())
        with pytest.raises(ValueError, match="out.t: expected dtype float32, got float64"):
            sphere_trace(field, o, d, out=r64d)
        with pytest.raises(ValueError, match=r"out.points: expected a tensor \(outputs selects 'points'\), got None"):
            sphere_trace(field, o, d, out=sphere_trace(field, o, d, outputs=("normals",)))
        with pytest.raises(ValueError, match=r"out: its buffers were laid out for packets=True"):
            sphere_trace(field, o, d, packets=False, out=r64)
        with pytest.raises(ValueError, match=r"out.t: expected shape \[N\] with N=64, got \[8, 8\]"):
            sphere_trace(field, o, d, out=r64.reshape(8, 8))
        with pytest.raises(TypeError, match="out: expected the result of an earlier no-gradient sphere_trace call"):
            sphere_trace(field, o, d, out=_all_outputs(r64))
    with pytest.raises(ValueError, match="out: buffer reuse is for no-gradient traces"):
        sphere_trace(field.with_params(field.params.clone().requires_grad_()), o, d, out=r64)


def _assert_outputs_equal(result, expected: dict) -> None:
    for k, v in _all_outputs(result).items():
        assert torch.equal(v, expected[k]), k


def test_fresh_calls_reuse_only_buffers_nobody_holds(device):
    """A no-gradient call takes the buffers of an earlier call of the same shape (CPU) only when the caller
    holds no view, result or array of them: what a caller keeps is never overwritten."""
    from taichi_sdf.implicit.scenes import make_scene

    field = make_scene("sphere_box", device=device)
    _, o, d = camera_rays(torch.float32, device, size=12)
    _, o2, d2 = camera_rays(torch.float32, device, eye=(0.4, 0.3, 2.5), size=12)
    with torch.no_grad():
        first = sphere_trace(field, o, d)
        kept = {k: v.clone() for k, v in _all_outputs(first).items()}
        t_view, points_np = first.t[:5], first.points.cpu().numpy() if device.type == "cpu" else None
        second = sphere_trace(field, o2, d2)  # `first` is alive: new buffers
        assert second.t.data_ptr() != first.t.data_ptr()
        _assert_outputs_equal(first, kept)  # (a loop here would leave its last output bound: held)
        ptr = first.points.data_ptr()
        del first, second
        third = sphere_trace(field, o2, d2)  # only a 5-ray view of `first`'s t (and its points as numpy) remain
        assert torch.equal(t_view, kept["t"][:5]) and third.points.data_ptr() != ptr
        if points_np is not None:
            assert (points_np == kept["points"].numpy()).all()
        del t_view, points_np
        fourth = sphere_trace(field, o, d)  # `first`'s buffers are idle now: reused on the CPU, same values
        if device.type == "cpu":
            assert fourth.points.data_ptr() == ptr
        for k, v in _all_outputs(fourth).items():
            assert torch.equal(v, kept[k]), k


def test_repeated_calls_read_the_rays_and_params_of_each_call(device):
    """Frame loops relaunch a kept launch context (keyed by the rays' and parameters' addresses and
    shapes, and the scalars): rays or parameters written in place, other rays of the same count and
    other settings all give what a fresh field and fresh rays give."""
    from taichi_sdf.implicit.scenes import make_scene

    field = make_scene("sphere_box", device=device)
    _, o, d = camera_rays(torch.float32, device, size=12)
    _, o2, d2 = camera_rays(torch.float32, device, eye=(0.5, -0.2, 2.2), size=12)

    def trace(f, a, b, **kw):
        with torch.no_grad():
            return {k: v.clone() for k, v in _all_outputs(sphere_trace(f, a, b, **kw)).items()}

    expected = trace(make_scene("sphere_box", device=device), o2.clone(), d2.clone())
    first = trace(field, o, d)
    o_mem, d_mem = o.clone(), d.clone()  # the first rays' memory, overwritten with the second rays
    trace(field, o_mem, d_mem)
    o_mem.copy_(o2)
    d_mem.copy_(d2)
    for k, v in trace(field, o_mem, d_mem).items():
        assert torch.equal(v, expected[k]), k
    for k, v in trace(field, o, d).items():  # back to the first rays
        assert torch.equal(v, first[k]), k
    coarse = trace(field, o, d, max_steps=3)  # other scalars: another launch
    assert not torch.equal(coarse["steps"], first["steps"])
    with torch.no_grad():
        field.params.mul_(0.8)  # parameters in place: the next trace sees them
    shrunk = trace(field, o, d)
    fresh = trace(make_scene("sphere_box", device=device).with_params(field.params.clone()), o, d)
    for k, v in shrunk.items():
        assert torch.equal(v, fresh[k]), k
    assert not torch.equal(shrunk["t"], first["t"])


@pytest.mark.parametrize("height,width", [(12, 32), (7, 48), (6, 20), (1, 16)])
def test_image_shaped_rays_give_the_flat_calls_outputs_as_images(device, height, width):
    """`[H, W, 3]` rays: every output is the `[N, 3]` call's, bit for bit, shaped `[H, W]` / `[H, W, 3]`
    (the CPU packet tracer groups packets of two image rows when W is a multiple of 16, odd H
    included); with gradients too; `out=` takes an image result; shapes must agree."""
    from taichi_sdf.implicit.scenes import make_scene

    field = make_scene("sphere_box", device=device)
    cam = C.look_at(torch.tensor([[0.4, 0.3, 2.5]]), width=width, height=height, fov_x_deg=45.0)
    o, d = (x.reshape(height, width, 3).to(device, torch.float32).contiguous() for x in cam.image_rays())
    with torch.no_grad():
        flat = _all_outputs(sphere_trace(field, o.reshape(-1, 3), d.reshape(-1, 3)))
        image = sphere_trace(field, o, d)
        for k, v in _all_outputs(image).items():
            assert v.shape[:2] == (height, width) and torch.equal(v.reshape(flat[k].shape), flat[k]), k
        again = sphere_trace(field, o, d, out=image)  # frames of one size: the same buffers
        assert again.t.data_ptr() == image.t.data_ptr() and torch.equal(again.t.reshape(-1), flat["t"])
        with pytest.raises(ValueError, match=r"out.t: expected shape \[N\]"):
            sphere_trace(field, o.reshape(-1, 3), d.reshape(-1, 3), out=again)
    with pytest.raises(ValueError, match=r"directions: expected shape \[H, W, 3\]"):
        sphere_trace(field, o, d.reshape(-1, 3))
    params = field.params.clone().requires_grad_(True)
    traced = sphere_trace(field.with_params(params), o, d)
    assert traced.t.shape == (height, width) and traced.points.shape == (height, width, 3)
    assert torch.equal(traced.hit.reshape(-1), flat["hit"])
    torch.testing.assert_close(traced.t.detach().reshape(-1)[flat["hit"]], flat["t"][flat["hit"]], atol=1e-5, rtol=0)
    traced.t[traced.hit].sum().backward()
    assert params.grad is not None and torch.isfinite(params.grad).all() and params.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["t", "hit", "points", "normals", "min_sdf", "steps"])
def test_one_output_kept_alone_is_never_overwritten(device, name):
    """Keeping one output tensor of a result (and dropping the result) keeps its buffer out of the pool:
    the next call of the same size writes elsewhere (each output is a view of its own; the pool's
    storage counts see it)."""
    from taichi_sdf.implicit.scenes import make_scene

    field = make_scene("sphere_box", device=device)
    _, o, d = camera_rays(torch.float32, device, size=8)
    _, o2, d2 = camera_rays(torch.float32, device, eye=(0.5, -0.2, 2.2), size=8)
    with torch.no_grad():
        kept = getattr(sphere_trace(field, o, d), name)
        before = kept.clone()
        other = getattr(sphere_trace(field, o2, d2), name)
        assert not torch.equal(other, before)  # the second rays give other values ...
        assert torch.equal(kept, before)  # ... and the kept tensor still has the first call's
        image = getattr(sphere_trace(field, o.view(8, 8, 3), d.view(8, 8, 3)), name)
        sphere_trace(field, o2.view(8, 8, 3), d2.view(8, 8, 3))
        assert torch.equal(image.reshape(before.shape), before)
