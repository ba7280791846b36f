"""DVR's occupancy ray marcher: the wavefront `DVRMarcher` for torch callables and the fused `ray_march`
for Taichi fields. Closed-form depths, agreement with the dense twin and with DVR's original depth
function, exact gradients w.r.t. weights, a latent code and a camera pose vs finite differences, and
defined outputs on misses, rays starting inside, all-occupied and NaN fields."""

import math

import pytest
import taichi as ti
import torch

from taichi_sdf.cameras import camera as C
from taichi_sdf.cameras.rays import z_per_t
from taichi_sdf.implicit.fields import TaichiField
from taichi_sdf.implicit.marchers import DVRMarcher, Marcher
from taichi_sdf.implicit.marchers.dvr import dvr_depth, normalize_rays, start_inside
from taichi_sdf.implicit.ray_march import ray_march
from taichi_sdf.implicit.wavefront import march_field
from taichi_sdf.reference.implicit import wavefront as twin
from taichi_sdf.reference.implicit.dvr_depth import dvr_depth as original_depth

R, SCALE = 0.3, 10.0  # the analytic sphere: logit = SCALE * (R - |x|)
BOX = (0.25, 0.2, 0.3)


def rays(dtype, device, size=16, eye=(0.5, 0.4, 1.6), fov=45.0):
    cam = C.look_at(torch.tensor([eye]), width=size, height=size, fov_x_deg=fov).to(device, dtype)
    o, d = cam.image_rays()
    return cam, o.reshape(-1, 3).contiguous(), d.reshape(-1, 3).contiguous()


@ti.func
def sphere_occ(p, params: ti.template()):
    return params[1] * (params[0] - p.norm())


@ti.func
def box_occ(p, params: ti.template()):
    q = ti.abs(p) - ti.Vector([params[0], params[1], params[2]])
    sdf = ti.max(q, 0.0).norm() + ti.min(ti.max(q[0], ti.max(q[1], q[2])), 0.0)
    return -params[3] * sdf


def sphere_fn(x):
    return SCALE * (R - x.norm(dim=-1))


def box_fn(x):
    q = x.abs() - torch.tensor(BOX, dtype=x.dtype, device=x.device)
    return -SCALE * (q.clamp_min(0).norm(dim=-1) + q.max(dim=-1).values.clamp_max(0))


def sphere_depth(o, d):
    b = (o * d).sum(-1)
    disc = b * b - (o * o).sum(-1) + R * R
    return -b - disc.clamp_min(0).sqrt(), disc


def box_depth(o, d):
    half = torch.tensor(BOX, dtype=o.dtype, device=o.device)
    a, b = (-half - o) / d, (half - o) / d
    lo, hi = torch.minimum(a, b).max(-1).values, torch.maximum(a, b).min(-1).values
    return lo, hi - lo


class Decoder(torch.nn.Module):
    """A tiny DVR "simple" decoder (fc_p, ResNet-FC blocks, fc_out -> 1 + 3, optional code added before
    each block) on top of a sphere prior (logit slope `sharpness`), so a random init has a surface in the
    cube."""

    def __init__(self, hidden=16, blocks=2, c_dim=0, seed=0, sharpness=8.0):
        super().__init__()
        self.sharpness = sharpness
        torch.manual_seed(seed)
        self.fc_p = torch.nn.Linear(3, hidden)
        self.fc_c = torch.nn.ModuleList([torch.nn.Linear(c_dim, hidden) for _ in range(blocks)]) if c_dim else None
        self.blocks = torch.nn.ModuleList(
            [torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Linear(hidden, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, hidden))
             for _ in range(blocks)])  # fmt: skip
        self.fc_out = torch.nn.Linear(hidden, 4)

    def forward(self, x, c=None):
        h = self.fc_p(x)
        for i, block in enumerate(self.blocks):
            if self.fc_c is not None:
                h = h + self.fc_c[i](c)
            h = h + block(h)
        out = self.fc_out(torch.relu(h))
        return torch.cat([out[:, :1] + self.sharpness * (0.35 - x.norm(dim=-1, keepdim=True)), out[:, 1:]], 1)


def test_dvr_marcher_follows_the_protocol():
    assert isinstance(DVRMarcher(), Marcher) and DVRMarcher.name == "dvr" in twin.MARCHERS


@pytest.mark.parametrize("path", ["wavefront", "fused"])
@pytest.mark.parametrize("shape", ["sphere", "box"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_depth_matches_closed_form(device, path, shape, dtype):
    _, o, d = rays(dtype, device)
    marcher = DVRMarcher(n_steps=32)
    if shape == "sphere":
        fn, params, occ = sphere_fn, [R, SCALE], sphere_occ
        t, margin = sphere_depth(o, d)
    else:
        fn, params, occ = box_fn, [*BOX, SCALE], box_occ
        t, margin = box_depth(o, d)
    if path == "wavefront":
        r = march_field(fn, o, d, marcher=marcher)
    else:
        r = ray_march(TaichiField(occ, torch.tensor(params, dtype=dtype, device=device)), o, d, marcher=marcher)
    clear = margin > (0.02 if shape == "sphere" else 0.08)  # away from the silhouette (box: chords > 2 proposals)
    assert clear.sum() > 30
    assert r.hit[clear].all() and not r.hit[margin < 0].any()
    assert (r.t - t)[clear].abs().max() < (2e-5 if dtype == torch.float32 else 1e-9)


@pytest.mark.parametrize("n_steps,method", [(16, "secant"), (64, "secant"), (32, "bisection")])
def test_decoder_matches_both_twins(device, n_steps, method):
    _, o, d = rays(torch.float32, device, size=24)
    net = Decoder().to(device)
    marcher = DVRMarcher(n_steps=n_steps, method=method, block_points=256)
    r = march_field(net, o, d, marcher=marcher, polish_steps=0)
    rt = twin.march_field(net, o, d, marcher=marcher, polish_steps=0)
    orig = original_depth(net, o, d, n_steps=n_steps, method=method)
    assert 0.1 < r.hit.float().mean() < 0.9
    for hit, t in [(rt.hit, rt.t), (orig.mask, orig.d)]:
        assert (r.hit == hit).float().mean() >= 0.995
        both = r.hit & hit
        assert (r.t - t)[both].abs().max() < 1e-4
    # DVR evaluates every proposal of every ray, then n_secant_steps on each valid ray.
    assert orig.num_points == o.shape[0] * n_steps + 8 * int(orig.mask.sum())
    assert r.marching_evals <= rt.marching_evals <= orig.num_points
    assert int(r.steps.sum()) == r.marching_evals


@pytest.mark.parametrize("stride,margin", [(1, 0.0), (4, 1.0)])
def test_fused_matches_wavefront_and_twin(device, stride, margin):
    _, o, d = rays(torch.float32, device, size=20)
    field = TaichiField(box_occ, torch.tensor([*BOX, SCALE], device=device), twin=lambda x, p: box_fn(x))
    # one coarse proposal per call: the same points as the fused loop
    marcher = DVRMarcher(n_steps=24, block_points=1, coarse_stride=stride, refine_margin=margin)
    rf = ray_march(field, o, d, marcher=marcher)
    rw = march_field(box_fn, o, d, marcher=marcher)
    rt = twin.march_field(box_fn, o, d, marcher=marcher)
    assert torch.equal(rf.hit, rw.hit) and (rf.hit == rt.hit).all()
    # the fused loop stops inside a refined interval at its crossing; the wavefront evaluates it at once
    assert torch.equal(rf.steps, rw.steps) if stride == 1 else (rf.steps <= rw.steps).all()
    torch.testing.assert_close(rf.t, rw.t, atol=1e-5, rtol=0)
    torch.testing.assert_close(rf.t_min_sdf, rt.t_min_sdf, atol=1e-6, rtol=0)


COARSE = [(16, 4, 8.0), (64, 8, 2.0), (33, 5, 8.0)]  # (n_steps, coarse_stride, refine_margin)


@pytest.mark.parametrize("n_steps,stride,margin", COARSE)
def test_coarse_search_matches_its_twin_and_dvr(device, n_steps, stride, margin):
    """A decoder as sharp as a fitted one (logits beyond the margin a coarse spacing from the surface;
    on softer fields the margin makes every interval a candidate: the exact search's points, plus up
    to stride - 1 past each hit)."""
    _, o, d = rays(torch.float32, device, size=24)
    net = Decoder(sharpness=40.0).to(device)
    coarse = DVRMarcher(n_steps=n_steps, coarse_stride=stride, refine_margin=margin, block_points=256)
    r = march_field(net, o, d, marcher=coarse, polish_steps=0)
    rt = twin.march_field(net, o, d, marcher=coarse, polish_steps=0)
    exact = march_field(net, o, d, marcher=DVRMarcher(n_steps=n_steps, coarse_stride=1, block_points=256),
                        polish_steps=0)  # fmt: skip
    orig = original_depth(net, o, d, n_steps=n_steps)
    assert 0.1 < r.hit.float().mean() < 0.9
    assert torch.equal(r.hit, rt.hit)
    torch.testing.assert_close(r.t, rt.t, atol=1e-5, rtol=0)
    torch.testing.assert_close(r.t_min_sdf, rt.t_min_sdf, atol=1e-6, rtol=0)
    assert (r.hit == orig.mask).float().mean() >= 0.995
    both = r.hit & orig.mask
    assert (r.t - orig.d)[both].abs().max() < 1e-4
    assert r.marching_evals <= exact.marching_evals


@pytest.mark.parametrize("margin", [0.0, 3.0])
def test_coarse_stride_one_is_dvr_exact_search(device, margin):
    """Stride 1 examines every pair: the twin's coarse-to-fine route gives the exact walk's results, and
    the kernel spends the exact mode's evaluations whatever the margin."""
    _, o, d = rays(torch.float64, device, size=16)
    net = Decoder().to(device, torch.float64)
    one = DVRMarcher(n_steps=24, coarse_stride=1, refine_margin=margin, block_points=64)
    ev = lambda x: twin._Evaluator(net)(x)  # noqa: E731
    hit, t, t_min = twin._trace_dvr_coarse(ev, o, d, one)
    hit_x, t_x, t_min_x = twin._trace_dvr(ev, o, d, one)
    assert torch.equal(hit, hit_x) and hit.sum() > 10
    assert torch.equal(t, t_x) and torch.equal(t_min, t_min_x)
    r = march_field(net, o, d, marcher=one, polish_steps=0)
    rx = march_field(net, o, d, marcher=DVRMarcher(n_steps=24, coarse_stride=1, refine_margin=0.0, block_points=64),
                    polish_steps=0)  # fmt: skip
    assert torch.equal(r.hit, rx.hit) and torch.equal(r.steps, rx.steps) and torch.equal(r.t, rx.t)


def thin_plate_fn(x):
    """The sphere with a thin square plate (0.02 thick, about one proposal of 64 across the cube) in
    front of it, union of logits."""
    plate = torch.stack([0.01 - (x[:, 2] - 0.45).abs(), 0.25 - x[:, 0].abs(), 0.25 - x[:, 1].abs()]).min(0).values
    return torch.maximum(sphere_fn(x), SCALE * plate)


def test_refine_margin_catches_a_thin_plate(device):
    """Coarse proposals (8 fine spacings apart) straddle the plate without a sign change: with no margin
    the rays go through it to the sphere (the limit of the coarse search); a margin above the plate's
    logit half a coarse spacing away (SCALE * (0.01 - 0.08) = -0.7) examines those intervals and finds
    the plate where DVR does."""
    _, o, d = rays(torch.float64, device, size=24, eye=(0.05, 0.03, 1.6), fov=40.0)
    orig = original_depth(thin_plate_fn, o, d, n_steps=64)
    on_plate = orig.mask & ((o + orig.d[:, None] * d)[:, 2] > 0.43)
    assert on_plate.sum() > 20  # DVR finds the plate where a proposal lands inside it
    blind = march_field(thin_plate_fn, o, d, marcher=DVRMarcher(n_steps=64, coarse_stride=8, refine_margin=0.0),
                        polish_steps=0)  # fmt: skip
    seen = march_field(thin_plate_fn, o, d, marcher=DVRMarcher(n_steps=64, coarse_stride=8, refine_margin=1.0),
                       polish_steps=0)  # fmt: skip
    assert ((blind.t - orig.d)[on_plate & blind.hit].abs() > 0.05).float().mean() > 0.5
    assert (seen.hit == orig.mask).float().mean() >= 0.995
    both = seen.hit & orig.mask
    assert (seen.t - orig.d)[both].abs().max() < 1e-6


def test_z_depth_equals_dvr_depth_of_unnormalised_rays(device):
    cam, o, d = rays(torch.float64, device, size=12)
    net = Decoder().to(device, torch.float64)
    w = d / z_per_t(cam.T_cam_world, d.reshape(1, -1, 3)).reshape(-1, 1)  # pixel lifted to camera depth 1
    unit, length = normalize_rays(w)
    torch.testing.assert_close(unit, d)
    r = march_field(net, o, unit, marcher=DVRMarcher(n_steps=32))
    orig = original_depth(net, o, w, n_steps=32)
    assert torch.equal(r.hit, orig.mask) and r.hit.sum() > 10
    z = r.z_depth(cam.T_cam_world, d.reshape(1, -1, 3)).reshape(-1)
    torch.testing.assert_close(z[r.hit], orig.d[r.hit], atol=1e-9, rtol=0)
    torch.testing.assert_close(dvr_depth(r, length), orig.d, atol=1e-9, rtol=0)  # inf on misses as DVR


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


TRAINING = DVRMarcher(n_steps=32)  # DVR's schedule at 32 steps, 8 secant steps, no polish


def test_gradient_wrt_decoder_weights_matches_fd(device):
    _, o, d = rays(torch.float64, device, size=8)
    net = Decoder().to(device, torch.float64)
    base = net.fc_p.weight.detach().clone()

    def fn(rows):
        def f(x):
            w = torch.cat([rows, base[2:]])
            return Decoder.forward(_WithFcP(net, w), x)

        return f

    mask = march_field(net, o, d, marcher=TRAINING, polish_steps=0).hit.clone()
    assert mask.sum() > 10
    wts = torch.linspace(0.5, 1.5, int(mask.sum()), dtype=torch.float64, device=device)

    def loss(rows):
        return (march_field(fn(rows), o, d, marcher=TRAINING, polish_steps=0).t[mask] * wts).sum()

    x = base[:2].clone().requires_grad_()
    (g,) = torch.autograd.grad(loss(x), x)
    assert g.abs().max() > 1e-3
    assert _rel_err(g, _fd(loss, base[:2])) < 1e-3


class _WithFcP(torch.nn.Module):
    """`net` with its fc_p weight replaced by `weight` (a function of the FD variables)."""

    def __init__(self, net, weight):
        super().__init__()
        self.net, self.weight = net, weight
        self.blocks, self.fc_c, self.fc_out, self.sharpness = net.blocks, net.fc_c, net.fc_out, net.sharpness

    def fc_p(self, x):
        return torch.nn.functional.linear(x, self.weight, self.net.fc_p.bias)


def test_gradient_wrt_latent_code_matches_fd(device):
    _, o, d = rays(torch.float64, device, size=8)
    net = Decoder(c_dim=3).to(device, torch.float64)
    c0 = torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64, device=device)
    mask = march_field(lambda x: net(x, c0), o, d, marcher=TRAINING, polish_steps=0).hit.clone()
    assert mask.sum() > 10
    wts = torch.linspace(0.5, 1.5, int(mask.sum()), dtype=torch.float64, device=device)

    def loss(c):
        return (march_field(lambda x: net(x, c), o, d, marcher=TRAINING, polish_steps=0).t[mask] * wts).sum()

    x = c0.clone().requires_grad_()
    (g,) = torch.autograd.grad(loss(x), x)
    assert g.abs().max() > 1e-3
    assert _rel_err(g, _fd(loss, c0)) < 1e-3


@pytest.mark.parametrize("path", ["wavefront", "fused"])
def test_gradient_wrt_camera_pose_matches_fd(device, path):
    from taichi_sdf.cameras.pose import axis_angle_to_matrix

    cam, _, _ = rays(torch.float64, device, size=10)
    net = Decoder().to(device, torch.float64)
    field = TaichiField(sphere_occ, torch.tensor([R, SCALE], dtype=torch.float64, device=device))

    def trace(pose6):
        R6 = axis_angle_to_matrix(pose6[:3])
        bottom = torch.tensor([[0.0, 0.0, 0.0, 1.0]], dtype=torch.float64, device=device)
        T = (torch.cat([torch.cat([R6, pose6[3:, None]], 1), bottom], 0) @ cam.T_cam_world[0])[None]
        o, d = C.Camera(cam.K, T, cam.width, cam.height).image_rays()
        o, d = o.reshape(-1, 3), d.reshape(-1, 3)
        if path == "fused":
            return ray_march(field, o, d, marcher=TRAINING)
        return march_field(net, o, d, marcher=TRAINING, polish_steps=0)

    x0 = torch.tensor([0.01, -0.02, 0.015, 0.02, -0.01, 0.03], dtype=torch.float64, device=device)
    mask = trace(x0).hit.clone()
    assert mask.sum() > 10
    wts = torch.linspace(0.5, 1.5, int(mask.sum()), dtype=torch.float64, device=device)

    def loss(pose6):
        return (trace(pose6).t[mask] * wts).sum()

    x = x0.clone().requires_grad_()
    (g,) = torch.autograd.grad(loss(x), x)
    assert g.abs().max() > 1e-3
    assert _rel_err(g, _fd(loss, x0)) < 1e-3


def test_fused_gradient_wrt_params_matches_fd(device):
    _, o, d = rays(torch.float64, device, size=8)
    p0 = torch.tensor([R, SCALE], dtype=torch.float64, device=device)
    mask = ray_march(TaichiField(sphere_occ, p0), o, d, marcher=TRAINING).hit.clone()
    assert mask.sum() > 10

    def loss(p):
        return (ray_march(TaichiField(sphere_occ, p), o, d, marcher=TRAINING).t[mask] * (1 + o[mask, 0])).sum()

    x = p0.clone().requires_grad_()
    (g,) = torch.autograd.grad(loss(x), x)
    assert g[0].abs() > 1e-1 and g[1].abs() < 1e-9  # the scale of the logit does not move its zero set
    assert _rel_err(g, _fd(loss, p0)) < 1e-3


@pytest.mark.parametrize("path", ["wavefront", "fused"])
def test_misses_and_rays_starting_inside(device, path):
    o = torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.0, 2.0], [0.0, 2.0, 2.0], [0.0, 0.0, 0.0], [0.2, 0.0, 0.0]], device=device)
    d = torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, 1.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], device=device)
    # hit; cube behind the origin; misses the cube; starts at the centre (inside); starts inside, off-centre
    if path == "wavefront":
        r = march_field(sphere_fn, o, d, marcher=DVRMarcher(n_steps=16))
    else:
        r = ray_march(TaichiField(sphere_occ, torch.tensor([R, SCALE], device=device)), o, d, marcher=DVRMarcher(n_steps=16))
    assert r.hit.tolist() == [True, False, False, False, False]
    assert start_inside(r).tolist() == [False, False, False, True, True]
    assert r.steps.tolist()[1:] == [0, 0, 1, 1]
    assert torch.isfinite(r.t).all() and torch.isfinite(r.t_min_sdf).all() and torch.isfinite(r.min_sdf).all()
    assert r.t_min_sdf[2] == pytest.approx(2.0)  # never evaluated: the point nearest the cube's centre
    depth = dvr_depth(r)
    assert depth[0] == pytest.approx(2.0 - R, abs=1e-5)
    assert depth[1:3].isinf().all() and (depth[3:] == 0).all()
    orig = original_depth(sphere_fn, o[[0, 2]], d[[0, 2]], n_steps=16)
    assert orig.d[1].isinf() and orig.d[0] == pytest.approx(float(depth[0]), abs=1e-5)


@pytest.mark.parametrize("path", ["wavefront", "fused"])
def test_all_occupied_field(device, path):
    _, o, d = rays(torch.float32, device, size=8)
    marcher = DVRMarcher(n_steps=16, search_outside_cube=True)
    if path == "wavefront":
        r = march_field(lambda x: x[:, 0] * 0 + 1, o, d, marcher=marcher)
    else:
        r = ray_march(TaichiField(sphere_occ, torch.tensor([10.0, 1.0], device=device)), o, d, marcher=marcher)
    assert not r.hit.any() and start_inside(r).all() and (dvr_depth(r) == 0).all()
    assert torch.isfinite(r.t).all() and r.marching_evals == o.shape[0]
    orig = original_depth(lambda x: torch.ones_like(x[:, 0]), o, d, n_steps=16)
    assert (orig.d == 0).all() and orig.first_occupied.all()


def test_nan_logits_raise(device):
    _, o, d = rays(torch.float32, device, size=8)
    with pytest.raises(ValueError, match="fn: returned .* non-finite"):
        march_field(lambda x: torch.full_like(x[:, 0], math.nan), o, d, marcher=DVRMarcher(n_steps=16))
    field = TaichiField(sphere_occ, torch.tensor([R, math.inf], device=device))
    with pytest.raises(ValueError, match="field.params"):
        ray_march(field, o, d)

    @ti.func
    def nan_occ(p, params: ti.template()):
        return ti.sqrt(params[0] - 1.0 - p.norm())  # NaN everywhere for params[0] = 0

    with pytest.raises(ValueError, match="NaN along"):
        ray_march(TaichiField(nan_occ, torch.tensor([0.0], device=device)), o, d, marcher=DVRMarcher(n_steps=16))


def test_search_outside_cube_finds_what_dvr_finds(device):
    """A blob outside the padded cube: skipped by default, found as DVR finds it with the option on."""
    _, o, d = rays(torch.float64, device, size=16, eye=(0.0, 0.0, 2.0), fov=90.0)
    centre = torch.tensor([0.8, 0.0, 0.9], dtype=torch.float64, device=device)  # seen past the cube
    fn = lambda x: SCALE * (0.15 - (x - centre).norm(dim=-1))  # noqa: E731
    default = march_field(fn, o, d, marcher=DVRMarcher(n_steps=64))
    faithful = march_field(fn, o, d, marcher=DVRMarcher(n_steps=64, search_outside_cube=True))
    orig = original_depth(fn, o, d, n_steps=64)
    assert not default.hit.any() and faithful.hit.sum() > 3
    assert torch.equal(faithful.hit, orig.mask)
    torch.testing.assert_close(faithful.t[orig.mask], orig.d[orig.mask], atol=1e-9, rtol=0)


def test_level_selects_tau(device):
    _, o, d = rays(torch.float64, device, size=10)
    tau = 0.6  # logit(0.6): the sphere of radius R - logit / SCALE
    r = march_field(sphere_fn, o, d, marcher=DVRMarcher(n_steps=32), level=math.log(tau / (1 - tau)))
    orig = original_depth(sphere_fn, o, d, n_steps=32, tau=tau)
    assert torch.equal(r.hit, orig.mask) and r.hit.sum() > 5
    torch.testing.assert_close(r.t[r.hit], orig.d[r.hit], atol=1e-9, rtol=0)


@pytest.mark.parametrize(
    "kwargs,match",
    [({"n_steps": 1}, "n_steps"), ({"n_secant_steps": -1}, "n_secant_steps"), ({"method": "newton"}, "method"),
     ({"padding": -0.1}, "padding"), ({"depth_range": (2.0, 1.0)}, "depth_range"), ({"block_points": 0}, "block_points"),
     ({"coarse_stride": 0}, "coarse_stride"), ({"coarse_stride": 2.0}, "coarse_stride"),
     ({"refine_margin": -1.0}, "refine_margin"), ({"refine_margin": math.nan}, "refine_margin")],
)  # fmt: skip
def test_bad_options_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DVRMarcher(**kwargs)


def test_bad_inputs_raise(device):
    _, o, d = rays(torch.float32, device, size=4)
    with pytest.raises(TypeError, match="marcher"):
        ray_march(TaichiField(sphere_occ, torch.tensor([R, SCALE], device=device)), o, d, marcher="dvr")
    with pytest.raises(ValueError, match="w: expected"):
        normalize_rays(torch.zeros(3, 3))
