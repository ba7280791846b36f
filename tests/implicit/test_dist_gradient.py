"""DIST's approximate depth gradient (`taichi_sdf.implicit.dist_gradient`, `DISTMarcher(buffer_size=K)`,
`march_field(..., gradient="approximate")`): the sample buffer leaves marching unchanged and matches the
twin's sort of the full record; values and VJPs match the twin; the gradient is DIST's formula
alpha * sum_j d clamp(f(p_j)) (checked by finite differences of the formula, not of the depth: it is not
the exact gradient); on a converged sphere it points the way of the exact implicit gradient."""

import math

import pytest
import torch

from taichi_sdf.cameras import camera as C
from taichi_sdf.implicit.dist_gradient import approximate_depth
from taichi_sdf.implicit.marchers import DISTMarcher, IDRMarcher
from taichi_sdf.implicit.marchers.base import FieldEvaluator
from taichi_sdf.implicit.wavefront import march_field
from taichi_sdf.reference.implicit import wavefront as twin
from tests.implicit.test_wavefront import small_mlp

SIZE = 16
SHAPE = (1, SIZE, SIZE)


def rays(dtype, device, size=SIZE, eye=(0.5, 0.4, 2.4), fov=45.0):
    cam = C.look_at(torch.tensor([eye]), width=size, height=size, fov_x_deg=fov).to(device, dtype)
    o, d = cam.image_rays()
    return o.reshape(-1, 3).contiguous(), d.reshape(-1, 3).contiguous()


def latent_field(dtype, device):
    net = small_mlp(dtype, device, d_latent=4)
    z = torch.tensor([0.3, -0.5, 0.2, 0.6], dtype=dtype, device=device)
    return net, z


def test_buffer_leaves_marching_unchanged(device):
    o, d = rays(torch.float64, device)
    net, z = latent_field(torch.float64, device)
    runs = {}
    for k in (0, 4):
        batches = []

        def fn(x, batches=batches):
            batches.append(x.clone())
            return net.sdf(x, z)

        runs[k] = (DISTMarcher(buffer_size=k).march(FieldEvaluator(fn, 65536, o.dtype), o, d, image_shape=SHAPE), batches)
    (r0, b0), (r4, b4) = runs[0], runs[4]
    assert r0.t_buffer is None and r4.t_buffer.shape == (o.shape[0], 4)
    assert len(b0) == len(b4) and all(torch.equal(a, b) for a, b in zip(b0, b4))
    assert torch.equal(r0.hit, r4.hit) and torch.equal(r0.t, r4.t) and torch.equal(r0.t_min, r4.t_min)
    # Slot 0 is the min-|f| sample (the marcher's t); |f| ascends; empty slots only at the end.
    buf, hit = r4.t_buffer, r4.hit
    assert hit.sum() > 50 and torch.equal(buf[hit, 0], r4.t[hit])
    filled = torch.isfinite(buf)
    assert filled[:, 1].sum() > 50 and not (filled[:, 1:] & ~filled[:, :-1]).any()
    with torch.no_grad():
        f = net.sdf((o[:, None] + torch.nan_to_num(buf)[..., None] * d[:, None]).reshape(-1, 3), z).abs().reshape(buf.shape)
    f = torch.where(filled, f, math.inf)
    assert (f[:, 1:] >= f[:, :-1] - 1e-12).all()


@pytest.mark.parametrize("image_shape", [SHAPE, None], ids=["pyramid", "plain"])
def test_buffer_matches_twin(device, image_shape):
    o, d = rays(torch.float64, device)
    net, z = latent_field(torch.float64, device)
    cfg = DISTMarcher(buffer_size=5)
    fn = lambda x: net.sdf(x, z)  # noqa: E731
    r = cfg.march(FieldEvaluator(fn, 65536, o.dtype), o, d, image_shape=image_shape)
    with torch.no_grad():
        hit, t, _, buf = twin.MARCHERS["dist"](fn, o, d, cfg, image_shape)
    assert torch.equal(r.hit, hit)
    torch.testing.assert_close(r.t, t, rtol=0, atol=1e-12)
    torch.testing.assert_close(r.t_buffer, buf, rtol=0, atol=1e-12, equal_nan=True)
    assert torch.isnan(buf).any() and torch.isfinite(buf[:, 4]).any()  # both kinds of slot are compared


def _vjp_case(which, dtype, device):
    """(fn, origins, directions, leaf tensors) of a latent-conditioned bumpy sphere."""
    o, d = rays(dtype, device)
    net, z = latent_field(dtype, device)
    if which == "rays":
        o, d = o.clone().requires_grad_(), d.clone().requires_grad_()
        return (lambda x: net.sdf(x, z)), o, d, [o, d]
    if which == "latent":
        z = z.clone().requires_grad_()
        return (lambda x: net.sdf(x, z)), o, d, [z]
    return (lambda x: net.sdf(x, z)), o, d, list(net.parameters())


@pytest.mark.parametrize("which", ["weights", "latent", "rays"])
def test_values_and_vjps_match_twin(device, which):
    fn, o, d, leaves = _vjp_case(which, torch.float64, device)
    cfg = DISTMarcher(buffer_size=5)
    r = march_field(fn, o, d, marcher=cfg, image_shape=SHAPE, gradient="approximate")
    rt = twin.march_field(fn, o, d, marcher=cfg, image_shape=SHAPE, gradient="approximate")
    assert torch.equal(r.hit, rt.hit) and r.hit.sum() > 50
    torch.testing.assert_close(r.t, rt.t, rtol=0, atol=1e-12)
    torch.testing.assert_close(r.points, rt.points, rtol=0, atol=1e-12)
    torch.testing.assert_close(r.normals, rt.normals, rtol=0, atol=1e-10)
    torch.testing.assert_close(r.min_sdf, rt.min_sdf, rtol=0, atol=1e-12)
    gen = torch.Generator(device="cpu").manual_seed(0)
    w_t = torch.randn(r.t.shape, generator=gen, dtype=r.t.dtype).to(device) * r.hit
    w_n = torch.randn(r.normals.shape, generator=gen, dtype=r.t.dtype).to(device) * r.hit[:, None]

    def vjp(res):
        return torch.autograd.grad((res.t * w_t).sum() + (res.normals * w_n).sum(), leaves)

    for g, gt in zip(vjp(r), vjp(rt)):
        assert gt.abs().max() > 1e-6
        torch.testing.assert_close(g, gt, rtol=1e-9, atol=1e-11)


def test_float32_agrees_with_twin(device):
    fn, o, d, leaves = _vjp_case("latent", torch.float32, device)
    cfg = DISTMarcher(buffer_size=3)
    r = march_field(fn, o, d, marcher=cfg, image_shape=SHAPE, gradient="approximate")
    rt = twin.march_field(fn, o, d, marcher=cfg, image_shape=SHAPE, gradient="approximate")
    both = r.hit & rt.hit
    assert both.sum() > 50 and (r.hit == rt.hit).float().mean() > 0.99
    assert (r.t - rt.t)[both].abs().max() < 1e-5
    (g,) = torch.autograd.grad(r.t[both].sum(), leaves)
    (gt,) = torch.autograd.grad(rt.t[both].sum(), leaves)
    torch.testing.assert_close(g, gt, rtol=1e-3, atol=1e-4)


def test_float64_gradient_is_dists_formula(device):
    """d t / d theta = alpha * sum_j d clamp(f(p_j)) / d theta with p_j = o + t_j d held at the buffered
    t_j; the formula is differentiated by central differences (no autograd), for the latent code (every
    coordinate), the weights and the ray origins (one random direction each)."""
    torch.manual_seed(1)
    o, d = rays(torch.float64, device)
    net, z0 = latent_field(torch.float64, device)
    cfg = DISTMarcher(buffer_size=4, alpha=1.5, clamp=0.1)
    ev = FieldEvaluator(lambda x: net.sdf(x, z0), 65536, o.dtype)
    march = cfg.march(ev, o, d, image_shape=SHAPE)
    hit, buf = march.hit, march.t_buffer
    assert hit.sum() > 50
    w = torch.rand(o.shape[0], dtype=o.dtype, device=device) * hit
    use = torch.isfinite(buf) & hit[:, None]
    assert use.sum() > 2 * hit.sum()  # several samples per ray on average

    def formula(z, oo):  # sum_r w_r * alpha * sum_j clamp(f(p_j))
        p = oo[:, None] + torch.nan_to_num(buf)[..., None] * d[:, None]
        c = net.sdf(p.reshape(-1, 3), z).reshape(buf.shape).clamp(-cfg.clamp, cfg.clamp)
        return (w[:, None] * cfg.alpha * torch.where(use, c, 0.0)).sum()

    def fd(f, x, v, h=1e-6):
        with torch.no_grad():
            return (f(x + h * v) - f(x - h * v)) / (2 * h)

    z = z0.clone().requires_grad_()
    oo = o.clone().requires_grad_()
    t = approximate_depth(lambda x: net.sdf(x, z), oo, d, march, alpha=cfg.alpha, clamp=cfg.clamp)
    # DIST's value: the best sample plus one plain step.
    with torch.no_grad():
        c0 = net.sdf(o[hit] + buf[hit, 0, None] * d[hit], z0).clamp(-cfg.clamp, cfg.clamp)
    torch.testing.assert_close(t[hit].detach(), buf[hit, 0] + c0, rtol=0, atol=1e-15)
    torch.testing.assert_close(t[~hit], march.t_min[~hit], rtol=0, atol=0)
    g_z, g_o = torch.autograd.grad((w * t).sum(), [z, oo], retain_graph=True)
    eye = torch.eye(4, dtype=o.dtype, device=device)
    fd_z = torch.stack([fd(lambda zz: formula(zz, o), z0, eye[i]) for i in range(4)])
    torch.testing.assert_close(g_z, fd_z, rtol=1e-6, atol=1e-8)
    v = torch.randn_like(o)
    torch.testing.assert_close((g_o * v).sum(), fd(lambda x: formula(z0, x), o, v), rtol=1e-6, atol=1e-8)
    # Weights: a random direction in parameter space.
    params = list(net.parameters())
    g_w = torch.autograd.grad((w * t).sum(), params)
    dirs = [torch.randn_like(p) for p in params]

    def formula_w(s):
        with torch.no_grad():
            for p, u in zip(params, dirs):
                p.add_(s * u)
            value = formula(z0, o)
            for p, u in zip(params, dirs):
                p.sub_(s * u)
        return value

    h = 1e-6
    fd_w = (formula_w(h) - formula_w(-h)) / (2 * h)
    torch.testing.assert_close(sum((g * u).sum() for g, u in zip(g_w, dirs)), fd_w, rtol=1e-6, atol=1e-8)


class Sphere(torch.nn.Module):
    """f(x) = |x - c| - R with learnable centre c and radius R (an exact SDF)."""

    def __init__(self, dtype, device):
        super().__init__()
        self.c = torch.nn.Parameter(torch.tensor([0.05, -0.03, 0.02], dtype=dtype, device=device))
        self.R = torch.nn.Parameter(torch.tensor(0.5, dtype=dtype, device=device))

    def forward(self, x):
        return (x - self.c).norm(dim=-1) - self.R


def test_direction_agrees_with_exact_gradient_on_converged_sphere(device):
    """For f = |x - c| - R and theta = (c, R), the exact gradient of a hit's t is -(n, 1) / |n . d| (n the
    unit normal), the approximate one -alpha * sum_j (n_j, 1) with n_j = (p_j - c) / |p_j - c|. Every vector
    (m, 1) with unit m within angle beta of a unit u lies within gamma = acos((1 + cos beta) / 2) of (u, 1),
    so each sum of such vectors with positive weights does too, and the two gradients of a loss that
    weights every ray positively are at most 2 gamma apart: cosine >= cos(2 gamma), where beta (from the
    geometry of the hit points and samples, not from any gradient) bounds the spread of the normals.
    On the ray through the centre every n_j = n: the two are parallel with ratio alpha * (filled slots)."""
    dtype = torch.float64
    sphere = Sphere(dtype, device)
    params = [sphere.c, sphere.R]
    o, d = rays(dtype, device, size=24, eye=(0.0, 0.0, 2.4), fov=30.0)
    cfg = DISTMarcher(buffer_size=5, eps=1e-10)
    ex = march_field(sphere, o, d, marcher=cfg, image_shape=(1, 24, 24))
    ap = march_field(sphere, o, d, marcher=cfg, image_shape=(1, 24, 24), gradient="approximate")
    assert torch.equal(ex.hit, ap.hit)
    with torch.no_grad():
        torch.testing.assert_close(ap.t[ap.hit], ex.t[ex.hit], rtol=0, atol=1e-9)  # both on the surface
        n = ex.normals
        keep = ex.hit & ((n * d).sum(-1).abs() > 0.8)
        u = n[keep].mean(0)
        u = u / u.norm()
        march = cfg.march(FieldEvaluator(sphere, 65536, dtype), o, d, image_shape=(1, 24, 24))
        buf = march.t_buffer[keep]
        filled = torch.isfinite(buf)
        p = o[keep, None] + torch.nan_to_num(buf)[..., None] * d[keep, None]
        m = (p - sphere.c) / (p - sphere.c).norm(dim=-1, keepdim=True)
        cos_beta = torch.cat([(n[keep] @ u), (m @ u)[filled]]).min()
        gamma = math.acos((1 + float(cos_beta)) / 2)
        bound = math.cos(2 * gamma)
    assert keep.sum() > 100 and bound > 0.5

    def grad(t):
        g = torch.autograd.grad(t, params, retain_graph=True)
        return torch.cat([g[0], g[1][None]])

    def cosine(a, b):
        return float((a @ b) / (a.norm() * b.norm()))

    g_ex, g_ap = grad(ex.t[keep].sum()), grad(ap.t[keep].sum())
    assert cosine(g_ex, g_ap) > bound
    # The ray nearest the centre: n_j = n up to O(pixel angle), so the two are parallel and the ratio of
    # norms is alpha * K * |n . d| (the exact one is 1 / |n . d| times (n, 1), the approximate alpha * K).
    centre = int((torch.linalg.cross(sphere.c.detach()[None] - o, d).norm(dim=-1)).argmin())
    ce, ca = grad(ex.t[centre]), grad(ap.t[centre])
    k_filled = int(torch.isfinite(march.t_buffer[centre]).sum())
    assert k_filled >= 2
    assert cosine(ce, ca) > 1 - 1e-6
    cos_nd = float((ex.normals[centre].detach() * d[centre]).sum().abs())
    assert abs(float(ca.norm() / ce.norm()) / (cfg.alpha * k_filled * cos_nd) - 1) < 1e-4


def test_approximate_depth_equals_march_field_option(device):
    fn, o, d, leaves = _vjp_case("latent", torch.float64, device)
    cfg = DISTMarcher(buffer_size=3, alpha=1.2, clamp=0.05)
    r = march_field(fn, o, d, marcher=cfg, image_shape=SHAPE, gradient="approximate")
    unit = d / d.norm(dim=-1, keepdim=True)  # what march_field hands its marcher
    march = cfg.march(FieldEvaluator(fn, 65536, o.dtype), o, unit, image_shape=SHAPE)
    t = approximate_depth(fn, o, d, march, alpha=1.2, clamp=0.05)
    torch.testing.assert_close(t, r.t, rtol=0, atol=0)
    (g,) = torch.autograd.grad(t.sum(), leaves)
    (gr,) = torch.autograd.grad(r.t.sum(), leaves)
    torch.testing.assert_close(g, gr, rtol=0, atol=0)


def test_misses_and_empty_input(device):
    o, d = rays(torch.float64, device)
    far = lambda x: x.norm(dim=-1) + 0.1  # noqa: E731  (no surface at all)
    r = march_field(far, o, d, marcher=DISTMarcher(buffer_size=3), image_shape=SHAPE, gradient="approximate")
    assert not r.hit.any() and torch.isfinite(r.t).all()
    e = o.new_empty(0, 3)
    r = march_field(far, e, e, marcher=DISTMarcher(buffer_size=3), gradient="approximate")
    assert r.t.shape == (0,) and r.points.shape == (0, 3)


def test_bad_options_raise(device):
    o, d = rays(torch.float64, device, size=4)
    fn = lambda x: x.norm(dim=-1) - 0.5  # noqa: E731
    with pytest.raises(ValueError, match="buffer_size"):
        DISTMarcher(buffer_size=-1)
    with pytest.raises(ValueError, match="gradient"):
        march_field(fn, o, d, marcher=DISTMarcher(), gradient="approximate")
    with pytest.raises(ValueError, match="gradient"):
        march_field(fn, o, d, marcher=IDRMarcher(), gradient="approximate")
    with pytest.raises(ValueError, match="gradient"):
        march_field(fn, o, d, marcher=DISTMarcher(buffer_size=2), gradient="unrolled")
    march = DISTMarcher().march(FieldEvaluator(fn, 64, o.dtype), o, d)
    with pytest.raises(ValueError, match="t_buffer"):
        approximate_depth(fn, o, d, march)
    with pytest.raises(TypeError, match="fn"):
        approximate_depth(None, o, d, march)


def test_field_batches_do_not_depend_on_thread_timing_with_buffer(device):
    # As tests/implicit/test_wavefront.py's check, with the buffer kept and the approximate step run.
    o, d = rays(torch.float32, device, size=64)
    runs = []
    for _ in range(3):
        batches = []

        def fn(x, batches=batches):
            batches.append(x.detach().clone())
            return x.norm(dim=-1) - 0.5 + 0.05 * torch.sin(9 * x[:, 0]) * torch.cos(7 * x[:, 1])

        r = march_field(fn, o, d, marcher=DISTMarcher(buffer_size=5), gradient="approximate")
        runs.append((batches, r))
    first, ref = runs[0]
    assert len(first) > 3 and ref.hit.sum() > 500
    for batches, r in runs[1:]:
        assert len(batches) == len(first) and all(torch.equal(a, b) for a, b in zip(first, batches))
        assert torch.equal(r.t, ref.t)
