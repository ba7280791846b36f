"""Wavefront tracer for torch callables (IDR and DIST algorithms): closed-form depth, agreement with
the torch twins, exact gradients w.r.t. MLP weights, latent codes and cameras vs finite differences,
and defined behaviour on edge cases."""

import functools

import pytest
import torch

from taichi_sdf.cameras import camera as C
from taichi_sdf.implicit.marchers import DISTMarcher, DVRMarcher, IDRMarcher
from taichi_sdf.implicit.wavefront import march_field
from taichi_sdf.models.sdf_net import SDFNetwork
from taichi_sdf.reference.implicit import scenes as scene_twins
from taichi_sdf.reference.implicit import wavefront as twin

TRACERS = [IDRMarcher(), DISTMarcher()]
IDS = ["idr", "dist"]


def rays(dtype, device, size=20, eye=(0.5, 0.4, 2.4)):
    cam = C.look_at(torch.tensor([eye]), width=size, height=size, fov_x_deg=45.0).to(device, dtype)
    o, d = cam.image_rays()
    return cam, o.reshape(-1, 3).contiguous(), d.reshape(-1, 3).contiguous()


class BumpySphere(torch.nn.Module):
    """f(x[, z]) = |x| - 0.5 + 0.08 tanh(mlp(x, z)): a sphere with MLP-made bumps. |grad f| stays near
    1 and the surface well inside the unit sphere, so every tracer converges on it (a bare untrained
    MLP is no SDF: its zero set may cross the bound, where IDR stops at once)."""

    def __init__(self, d_latent=0, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.net = SDFNetwork(d_latent=d_latent, hidden=32, n_layers=2, skip_in=(), multires=0,
                              softplus_beta=100, geometric_init=False, weight_norm=False)  # fmt: skip
        self.layers, self.act = self.net.layers, self.net.act

    def bump(self, h):
        return 0.08 * torch.tanh(h)

    def sdf(self, x, z=None):
        return x.norm(dim=-1) - 0.5 + self.bump(self.net(x, z)[:, 0])


def small_mlp(dtype, device, d_latent=0, seed=0):
    return BumpySphere(d_latent, seed).to(device, dtype)


@pytest.mark.parametrize("tracer", TRACERS, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sphere_depth_matches_closed_form(device, tracer, dtype):
    _, o, d = rays(dtype, device)
    R = 0.5
    r = march_field(lambda x: x.norm(dim=-1) - R, o, d, marcher=tracer, image_shape=(1, 20, 20))
    b = (o * d).sum(-1)
    disc = b * b - (o * o).sum(-1) + R * R
    t = -b - disc.clamp_min(0).sqrt()
    clear = disc > 0.05  # away from the silhouette
    assert clear.sum() > 50
    assert r.hit[clear].all() and not r.hit[disc < 0].any()
    assert (r.t - t)[clear].abs().max() < 1e-4


@pytest.mark.parametrize("tracer", TRACERS, ids=IDS)
def test_mlp_matches_twin(device, tracer):
    _, o, d = rays(torch.float32, device, size=32)
    net = small_mlp(torch.float32, device)
    fn = net.sdf
    r = march_field(fn, o, d, marcher=tracer, image_shape=(1, 32, 32))
    rt = twin.march_field(fn, o, d, marcher=tracer, image_shape=(1, 32, 32))
    assert r.hit.float().mean() > 0.1
    assert (r.hit == rt.hit).float().mean() >= 0.995
    both = r.hit & rt.hit
    assert (r.t - rt.t)[both].abs().max() < 1e-4
    torch.testing.assert_close(r.normals[both], rt.normals[both], atol=1e-3, rtol=0)
    # The twin marches every ray in the sphere at every step; compaction evaluates only active rays.
    assert r.marching_evals <= rt.marching_evals


def _fd(loss_fn, x, h=1e-6):
    fd = torch.zeros_like(x).view(-1)
    for i in range(x.numel()):
        e = torch.zeros_like(x).view(-1)
        e[i] = h
        with torch.no_grad():
            fd[i] = (loss_fn(x + e.view_as(x)) - loss_fn(x - e.view_as(x))) / (2 * h)
    return fd.view_as(x)


def _rel_err(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


# Finite differences of a re-traced depth are only as good as the depth itself: converge tightly so
# that the FD reference is accurate (with IDR's eps = 5e-5 and Softplus(100) curvature, the Newton-
# refined depth still jitters by ~1e-7 between nearby parameters, which swamps a 1e-6 FD step).
TIGHT = [IDRMarcher(eps=1e-10, sphere_tracing_iters=200, n_secant_steps=60), DISTMarcher(eps=1e-12)]


def sdf_with_rows(net, base, rows):
    """The SDF of `net` with its first two first-layer weight rows replaced by `rows` (a function of them)."""

    def sdf(x):
        h = torch.nn.functional.linear(x, torch.cat([rows, base[2:]]), net.layers[0].bias)
        for lin in net.layers[1:]:
            h = lin(net.act(h))
        return x.norm(dim=-1) - 0.5 + net.bump(h[:, 0])

    return sdf


@pytest.mark.parametrize("tracer", TIGHT, ids=IDS)
def test_gradient_wrt_mlp_weights_matches_fd(device, tracer):
    _, o, d = rays(torch.float64, device, size=10)
    net = small_mlp(torch.float64, device)
    base = net.layers[0].weight.detach().clone()

    sdf_with = functools.partial(sdf_with_rows, net, base)

    ref = march_field(net.sdf, o, d, marcher=tracer)
    mask = ref.hit.clone()
    assert mask.sum() > 10
    w = torch.linspace(0.5, 1.5, int(mask.sum()), dtype=torch.float64, device=device)

    def loss(rows):
        return (march_field(sdf_with(rows), o, d, marcher=tracer).t[mask] * w).sum()

    x = base[:2].clone().requires_grad_()
    (g,) = torch.autograd.grad(loss(x), x)
    assert g.abs().max() > 1e-3
    assert _rel_err(g, _fd(loss, base[:2])) < 1e-3


@pytest.mark.parametrize("tracer", TIGHT, ids=IDS)
def test_gradient_wrt_latent_code_matches_fd(device, tracer):
    _, o, d = rays(torch.float64, device, size=10)
    net = small_mlp(torch.float64, device, d_latent=4)
    z0 = torch.tensor([0.1, -0.2, 0.05, 0.3], dtype=torch.float64, device=device)
    ref = march_field(lambda x: net.sdf(x, z0), o, d, marcher=tracer)
    mask = ref.hit.clone()
    assert mask.sum() > 10
    w = torch.linspace(0.5, 1.5, int(mask.sum()), dtype=torch.float64, device=device)

    def loss(z):
        r = march_field(lambda x: net.sdf(x, z), o, d, marcher=tracer)
        return (r.t[mask] * w).sum() + (r.normals[mask][:, 2] * w).sum()

    z = z0.clone().requires_grad_()
    (g,) = torch.autograd.grad(loss(z), z)
    assert g.abs().max() > 1e-6
    assert _rel_err(g, _fd(loss, z0)) < 1e-3


@pytest.mark.slow
def test_gradient_wrt_camera_pose_matches_fd(device):
    from taichi_sdf.cameras.pose import axis_angle_to_matrix

    cam, o, d = rays(torch.float64, device, size=10)
    net = small_mlp(torch.float64, device)
    ref = march_field(net.sdf, o, d, marcher=TIGHT[0])
    mask = ref.hit.clone()
    w = torch.linspace(0.5, 1.5, int(mask.sum()), dtype=torch.float64, device=device)

    def loss(pose6):
        D = torch.cat([torch.cat([axis_angle_to_matrix(pose6[:3]), pose6[3:, None]], 1),
                       torch.tensor([[0.0, 0.0, 0.0, 1.0]], dtype=torch.float64, device=device)], 0)  # fmt: skip
        oo, dd = C.Camera(cam.K, (D @ cam.T_cam_world[0])[None], cam.width, cam.height).image_rays()
        r = march_field(net.sdf, oo.reshape(-1, 3), dd.reshape(-1, 3), marcher=TIGHT[0])
        return (r.t[mask] * w).sum()

    x = torch.tensor([0.01, -0.02, 0.015, 0.02, -0.01, 0.03], dtype=torch.float64, device=device)
    xg = x.clone().requires_grad_()
    (g,) = torch.autograd.grad(loss(xg), xg)
    assert _rel_err(g, _fd(loss, x)) < 1e-3


def test_normals_carry_second_order_gradients(device):
    _, o, d = rays(torch.float32, device)
    net = small_mlp(torch.float32, device)
    r = march_field(net.sdf, o, d)
    rt = twin.march_field(net.sdf, o, d, marcher=IDRMarcher())
    both = r.hit & rt.hit
    # A normal loss (e.g. DIST's normal term) must train the weights through second derivatives.
    target = torch.tensor([0.0, 0.0, 1.0], device=device)
    g = torch.autograd.grad((r.normals[both] * target).sum(), net.layers[0].weight)[0]
    gt = torch.autograd.grad((rt.normals[both] * target).sum(), net.layers[0].weight)[0]
    assert g.abs().max() > 0 and torch.isfinite(g).all()
    torch.testing.assert_close(g, gt, atol=1e-3, rtol=1e-2)


def test_min_sdf_points_for_misses(device):
    _, o, d = rays(torch.float64, device)
    r = march_field(lambda x: x.norm(dim=-1) - 0.3, o, d, marcher=IDRMarcher(min_sdf_samples=100))
    miss = ~r.hit
    true_min = torch.linalg.cross(o, d).norm(dim=-1) - 0.3
    gap = (r.min_sdf.detach() - true_min)[miss]
    assert gap.min() > -1e-9 and gap.max() < 0.02


def test_chunking_does_not_change_results(device):
    _, o, d = rays(torch.float32, device)
    net = small_mlp(torch.float32, device)
    a = march_field(net.sdf, o, d, chunk_size=37)
    b = march_field(net.sdf, o, d)
    assert torch.equal(a.hit, b.hit)
    torch.testing.assert_close(a.t, b.t, atol=1e-6, rtol=0)


def test_dist_pyramid_agrees_with_plain_marching(device):
    _, o, d = rays(torch.float32, device, size=32)
    net = small_mlp(torch.float32, device)
    a = march_field(net.sdf, o, d, marcher=DISTMarcher(), image_shape=(1, 32, 32))
    b = march_field(net.sdf, o, d, marcher=DISTMarcher())
    assert (a.hit == b.hit).float().mean() >= 0.99
    both = a.hit & b.hit
    # Upsampled coarse depths can skip past a thin part (DIST's trade-off): nearly all rays agree.
    assert ((a.t - b.t)[both].abs() < 1e-3).float().mean() >= 0.98
    assert a.marching_evals < b.marching_evals  # the pyramid is the point


# -- edge cases --------------------------------------------------------------------------------------


@pytest.mark.parametrize("tracer", TRACERS, ids=IDS)
def test_misses_inside_and_empty(device, tracer):
    fn = lambda x: x.norm(dim=-1) - 0.3  # noqa: E731
    o = torch.tensor([[0.0, 0.0, 3.0], [0.0, 0.0, 0.8], [0.0, 0.0, 0.8]], device=device)
    d = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, -1.0], [0.0, 0.0, 1.0]], device=device)
    r = march_field(fn, o, d, marcher=tracer)
    assert r.hit.tolist() == [False, True, False]
    assert abs(float(r.t[1]) - 0.5) < 1e-4
    for x in (r.t, r.points, r.normals, r.min_sdf):
        assert torch.isfinite(x).all()
    e = march_field(fn, torch.zeros(0, 3, device=device), torch.zeros(0, 3, device=device), marcher=tracer)
    assert e.hit.shape == (0,) and e.points.shape == (0, 3)


def test_bad_callables_raise(device):
    _, o, d = rays(torch.float32, device, size=4)
    with pytest.raises(ValueError, match="fn: returned .* non-finite"):
        march_field(lambda x: x.norm(dim=-1) * float("nan"), o, d)
    with pytest.raises(ValueError, match=r"fn: expected output \[M\] or \[M, 1 \+ F\]"):
        march_field(lambda x: x[:1, 0], o, d)
    with pytest.raises(TypeError, match="fn: expected a callable"):
        march_field(3.0, o, d)
    with pytest.raises(ValueError, match="image_shape"):
        march_field(lambda x: x.norm(dim=-1) - 0.3, o, d, image_shape=(1, 3, 3))
    with pytest.raises(ValueError, match="directions: expected shape"):
        march_field(lambda x: x.norm(dim=-1) - 0.3, o, d[:3].contiguous())


@pytest.mark.parametrize("tracer", TRACERS, ids=IDS)
def test_wavefront_agrees_with_fused_tracer_on_csg(device, tracer):
    """The same CSG scene traced by the fused kernel (Taichi SDF) and by the wavefront tracer (its
    torch twin as the callable) gives the same hit mask and depths."""
    from taichi_sdf.implicit.scenes import make_scene
    from taichi_sdf.implicit.sphere_trace import sphere_trace

    field = make_scene("csg", device=device)
    _, o, d = rays(torch.float32, device, size=48, eye=(1.2, 0.9, 2.0))
    with torch.no_grad():
        fused = sphere_trace(field, o, d)
    wave = march_field(lambda x: scene_twins.twin(field.name)(x, field.params), o, d, marcher=tracer, image_shape=(1, 48, 48))
    assert fused.hit.float().mean() > 0.1
    assert (fused.hit == wave.hit).float().mean() >= 0.995
    both = fused.hit & wave.hit
    # DIST's over-relaxed steps from upsampled coarse depths can land on a farther surface behind a
    # thin part (its published trade-off): allow 2% of its hits there.
    same_depth = ((fused.t - wave.t.detach())[both].abs() < 1e-3).float().mean()
    assert same_depth >= (0.995 if isinstance(tracer, IDRMarcher) else 0.98)


# -- gradients at the settings used in training -------------------------------------------------------


def _first_layer_rows_loss(net, o, d, mask, base):
    """loss(rows, marcher, polish_steps): weighted depths of the `mask` rays with the net's first two
    first-layer weight rows replaced by `rows`."""
    w = torch.linspace(0.5, 1.5, int(mask.sum()), dtype=torch.float64, device=o.device)

    sdf_with = functools.partial(sdf_with_rows, net, base)

    def loss(rows, marcher, polish_steps=1, image_shape=None):
        r = march_field(sdf_with(rows), o, d, marcher=marcher, polish_steps=polish_steps, image_shape=image_shape)
        return (r.t[mask] * w).sum()

    return loss


def test_idr_training_settings_gradients_match_fd_and_need_the_polish(device):
    """IDR's default marcher (eps = 5e-5, as in training) with the Newton polish gives the gradient of
    the true intersection distance; without the polish it is measurably worse. The FD reference
    differentiates a tightly converged trace (the default one jitters by more than a 1e-6 FD step
    can resolve). Measured (CPU, f64): rel. error 1e-7 with the polish, 9e-5 without."""
    _, o, d = rays(torch.float64, device, size=10)
    net = small_mlp(torch.float64, device)
    base = net.layers[0].weight.detach().clone()
    default = IDRMarcher()
    assert default.eps == 5e-5
    mask = march_field(net.sdf, o, d, marcher=TIGHT[0]).hit & march_field(net.sdf, o, d, marcher=default).hit
    assert mask.sum() > 10
    loss = _first_layer_rows_loss(net, o, d, mask, base)
    fd = _fd(lambda rows: loss(rows, TIGHT[0]), base[:2])
    errs = {}
    for polish in (1, 0):
        x = base[:2].clone().requires_grad_()
        (g,) = torch.autograd.grad(loss(x, default, polish), x)
        errs[polish] = _rel_err(g, fd)
    assert errs[1] < 1e-3
    assert errs[0] > 10 * errs[1], errs


def _pose_delta(pose6):
    from taichi_sdf.cameras.pose import axis_angle_to_matrix

    R = axis_angle_to_matrix(pose6[:3])
    bottom = torch.tensor([[0.0, 0.0, 0.0, 1.0]], dtype=pose6.dtype, device=pose6.device)
    return torch.cat([torch.cat([R, pose6[3:, None]], 1), bottom], 0)


@pytest.mark.parametrize("pyramid", [False, True], ids=["plain", "pyramid"])
def test_dist_gradient_wrt_camera_pose_matches_fd(device, pyramid):
    """DIST w.r.t. a camera pose (depths and normals), with and without the image pyramid."""
    size = 12
    cam, o, d = rays(torch.float64, device, size=size)
    net = small_mlp(torch.float64, device)
    shape = (1, size, size) if pyramid else None
    marcher = TIGHT[1]

    def trace(pose6):
        T = (_pose_delta(pose6) @ cam.T_cam_world[0])[None]
        oo, dd = C.Camera(cam.K, T, cam.width, cam.height).image_rays()
        return march_field(net.sdf, oo.reshape(-1, 3), dd.reshape(-1, 3), marcher=marcher, image_shape=shape)

    x = torch.tensor([0.01, -0.02, 0.015, 0.02, -0.01, 0.03], dtype=torch.float64, device=device)
    mask = trace(x).hit.clone()  # the hits at the pose differentiated (FD steps do not cross a silhouette)
    assert mask.sum() > 10
    w = torch.linspace(0.5, 1.5, int(mask.sum()), dtype=torch.float64, device=device)

    def loss(pose6):
        r = trace(pose6)
        return (r.t[mask] * w).sum() + (r.normals[mask][:, 1] * w).sum()

    xg = x.clone().requires_grad_()
    (g,) = torch.autograd.grad(loss(xg), xg)
    assert g.abs().max() > 1e-3
    assert _rel_err(g, _fd(loss, x)) < 1e-3


def test_dist_pyramid_gradient_wrt_weights_matches_fd(device):
    size = 12
    _, o, d = rays(torch.float64, device, size=size)
    net = small_mlp(torch.float64, device)
    base = net.layers[0].weight.detach().clone()
    shape = (1, size, size)
    mask = march_field(net.sdf, o, d, marcher=TIGHT[1], image_shape=shape).hit.clone()
    assert mask.sum() > 10
    rows_loss = _first_layer_rows_loss(net, o, d, mask, base)

    def loss(rows):
        return rows_loss(rows, TIGHT[1], image_shape=shape)

    x = base[:2].clone().requires_grad_()
    (g,) = torch.autograd.grad(loss(x), x)
    assert g.abs().max() > 1e-3
    assert _rel_err(g, _fd(loss, base[:2])) < 1e-3


def test_min_sdf_gradients_of_misses(device):
    """IDR's mask loss: d min_sdf / d (centre, radius) of a sphere field for the missing rays is
    -(x - c)/|x - c| and -1 at the reported min-SDF point x (the point is held fixed), and the
    gradient w.r.t. the ray origins is the spatial gradient there."""
    _, o, d = rays(torch.float64, device)
    p = torch.tensor([0.05, -0.03, 0.02, 0.3], dtype=torch.float64, device=device, requires_grad=True)
    og = o.clone().requires_grad_()
    r = march_field(lambda x: (x - p[:3]).norm(dim=-1) - p[3], og, d, marcher=IDRMarcher(min_sdf_samples=100))
    miss = ~r.hit
    assert miss.sum() > 20
    cot = torch.linspace(0.5, 1.5, int(miss.sum()), dtype=torch.float64, device=device)
    gp, go = torch.autograd.grad((r.min_sdf[miss] * cot).sum(), (p, og))
    x = (o + r.t_min_sdf[:, None] * d)[miss]
    u = (x - p[:3].detach()) / (x - p[:3].detach()).norm(dim=-1, keepdim=True)
    expected = torch.cat([-(u * cot[:, None]).sum(0), -cot.sum()[None]])
    torch.testing.assert_close(gp, expected, atol=1e-10, rtol=1e-10)
    expected_o = torch.zeros_like(o)
    expected_o[miss] = u * cot[:, None]
    torch.testing.assert_close(go, expected_o, atol=1e-10, rtol=1e-10)


def test_old_names_are_aliases():
    from taichi_sdf.implicit import wavefront as W

    assert W.IDRTracer is IDRMarcher and W.DISTTracer is DISTMarcher
    o = torch.tensor([[0.0, 0.0, 2.0]])
    dd = torch.tensor([[0.0, 0.0, -1.0]])
    r = W.sphere_trace_mlp(lambda x: x.norm(dim=-1) - 0.5, o, dd, tracer=W.DISTTracer())
    assert bool(r.hit[0]) and abs(float(r.t[0]) - 1.5) < 1e-4
    assert r.marching_evals > 0 and r.num_evals > r.marching_evals


@pytest.mark.parametrize("tracer", [*TRACERS, DVRMarcher()], ids=[*IDS, "dvr"])
def test_field_batches_do_not_depend_on_thread_timing(device, tracer):
    # A field's values depend on a point's row in its batch at the ulp level (DESIGN section 6), so
    # repeatable training needs every batch in the same order on every call. Atomic-counter gathers
    # reordered 4096-ray batches in nearly every call on 2 threads; the drivers now fix the order.
    _, o, d = rays(torch.float32, device, size=96)
    sign = -1.0 if tracer.name == "dvr" else 1.0  # occupancy logits are positive inside

    def recorded(batches):
        def fn(x):
            batches.append(x.clone())
            return sign * (x.norm(dim=-1) - 0.5 + 0.05 * torch.sin(9 * x[:, 0]) * torch.cos(7 * x[:, 1]))
        return fn

    runs = []
    for _ in range(4):
        batches = []
        result = march_field(recorded(batches), o, d, marcher=tracer)
        runs.append((batches, result))
    first, ref = runs[0]
    assert len(first) > 3 and ref.hit.sum() > 1000
    for batches, result in runs[1:]:
        assert len(batches) == len(first)
        assert all(torch.equal(a, b) for a, b in zip(first, batches))
        assert torch.equal(result.hit, ref.hit) and torch.equal(result.t, ref.t)
