"""The differentiable step shared by every tracer (`taichi_sdf.implicit.implicit_diff`): level sets other
than 0, fields positive inside, a third marcher plugged in through the `Marcher` protocol alone, and
camera z-depth (`z_per_t`, `TraceResult.z_depth`) against hand-derived values."""

from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch

from taichi_sdf.cameras import camera as C
from taichi_sdf.cameras.rays import z_per_t
from taichi_sdf.implicit.implicit_diff import MarchResult, differentiable_field, implicit_surface
from taichi_sdf.implicit.marchers import DISTMarcher, IDRMarcher, Marcher
from taichi_sdf.implicit.wavefront import march_field
from taichi_sdf.reference.implicit import wavefront as twin


def rays(device, size=16, eye=(0.3, 0.2, 2.4)):
    cam = C.look_at(torch.tensor([eye]), width=size, height=size, fov_x_deg=40.0).to(device, torch.float64)
    o, d = cam.image_rays()
    return o.reshape(-1, 3).contiguous(), d.reshape(-1, 3).contiguous()


def sphere_depth(o, d, c, r):
    """(hits, t) of rays with the sphere |x - c| = r, in closed form."""
    oc = o - c
    b = (oc * d).sum(-1)
    disc = b * b - (oc * oc).sum(-1) + r * r
    return disc > 0, -b - disc.clamp_min(0).sqrt(), disc


@pytest.mark.parametrize("marcher", [IDRMarcher(eps=1e-10, sphere_tracing_iters=200), DISTMarcher(eps=1e-12)], ids=["idr", "dist"])
def test_level_set_of_an_sdf(device, marcher):
    """f = |x| - 0.5 at level 0.1 is the sphere of radius 0.6; d t / d level = -1 / (grad f . d)."""
    o, d = rays(device)
    level = 0.1
    r = march_field(lambda x: x.norm(dim=-1) - 0.5, o, d, marcher=marcher, level=level)
    hit, t, disc = sphere_depth(o, d, torch.zeros(3, dtype=o.dtype, device=device), 0.6)
    clear = disc > 0.05
    assert clear.sum() > 30
    assert r.hit[clear].all() and not r.hit[~hit].any()
    assert (r.t - t)[clear].abs().max() < 1e-9
    # min_sdf is f - level at the point nearest the level set: > 0 on misses that pass outside.
    assert (r.min_sdf[~hit] > -1e-9).all()
    rt = twin.march_field(lambda x: x.norm(dim=-1) - 0.5, o, d, marcher=marcher, level=level)
    assert torch.equal(r.hit, rt.hit)
    assert (r.t - rt.t)[r.hit].abs().max() < 1e-9


def test_sign_flipped_field_gives_the_same_surface_and_gradients(device):
    """The implicit step does not assume which side is inside: f = -sdf (positive inside, like an
    occupancy logit) at the same hits gives the same t and the same gradients."""
    o, d = rays(device)
    p = torch.tensor([0.05, -0.02, 0.0, 0.45], dtype=torch.float64, device=device, requires_grad=True)
    sdf = lambda x: (x - p[:3]).norm(dim=-1) - p[3]  # noqa: E731
    hit, t_exact, disc = sphere_depth(o, d, p[:3].detach(), p[3].detach())
    hit = hit & (disc > 0.02)
    t0 = torch.where(hit, t_exact + 1e-4, torch.zeros_like(t_exact))  # a marcher's inexact hits
    outs = []
    for sign in (1.0, -1.0):
        values, grads = differentiable_field(lambda x, s=sign: s * sdf(x))
        s = implicit_surface(values, grads, o, d, hit, t0, polish_steps=1)
        (g,) = torch.autograd.grad((s.t[hit] * torch.linspace(0.5, 1.5, int(hit.sum()), dtype=o.dtype)).sum(), p)
        outs.append((s.t.detach(), s.normals.detach(), g))
    torch.testing.assert_close(outs[0][0], outs[1][0], atol=1e-12, rtol=0)
    torch.testing.assert_close(outs[0][0][hit], t_exact[hit], atol=1e-10, rtol=0)
    torch.testing.assert_close(outs[0][2], outs[1][2], atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(outs[0][1][hit], -outs[1][1][hit], atol=1e-12, rtol=0)  # grad f flips
    # t = -b - sqrt(disc) with disc = b^2 - |o - c|^2 + r^2: dt/dr = -r / sqrt(disc) (the hits sit
    # ~1e-8 off the root after one Newton step from 1e-4: the gradient there agrees to ~1e-7).
    w = torch.linspace(0.5, 1.5, int(hit.sum()), dtype=o.dtype)
    dt_dr = -p[3].detach() / disc[hit].sqrt()
    torch.testing.assert_close(outs[1][2][3], (dt_dr * w).sum(), atol=0, rtol=1e-6)


@dataclass(frozen=True)
class SignChangeMarcher:
    """A third marcher written in a test, through the protocol alone: uniform samples on the bounding
    sphere's chord, first change of sign of f - level (either direction, like DVR's occupancy
    marcher), then bisection. Pure torch, no kernels."""

    name: ClassVar[str] = "sign_change"
    n_samples: int = 64
    n_bisect: int = 40

    def march(self, evaluate, origins, directions, *, level, image_shape):
        n = origins.shape[0]
        b = (origins * directions).sum(-1)
        disc = b * b - (origins * origins).sum(-1) + 1.0
        near = (-b - disc.clamp_min(0).sqrt()).clamp_min(0)
        far = (-b + disc.clamp_min(0).sqrt()).clamp_min(0)
        s = torch.linspace(0, 1, self.n_samples, dtype=origins.dtype, device=origins.device)
        z = near[:, None] + s * (far - near)[:, None]  # [N, S]
        f = (evaluate((origins[:, None] + z[..., None] * directions[:, None]).reshape(-1, 3)) - level).reshape(n, -1)
        change = (f[:, :1] * f[:, 1:]) < 0
        hit = change.any(1) & (disc > 0)
        k = change.float().argmax(1)
        lo, hi = z.gather(1, k[:, None])[:, 0], z.gather(1, k[:, None] + 1)[:, 0]
        f_lo = f.gather(1, k[:, None])[:, 0]
        for _ in range(self.n_bisect):
            mid = 0.5 * (lo + hi)
            f_mid = evaluate(origins + mid[:, None] * directions) - level
            same = (f_mid * f_lo) > 0
            lo, hi = torch.where(same, mid, lo), torch.where(same, hi, mid)
        t_min = z.gather(1, f.abs().argmin(1, keepdim=True))[:, 0]
        return MarchResult(hit, torch.where(hit, 0.5 * (lo + hi), t_min), t_min)


def test_a_marcher_plugs_in_through_the_protocol(device):
    """march_field runs any object with the protocol's `march`, on a field positive inside at a level."""
    assert isinstance(SignChangeMarcher(), Marcher) and isinstance(IDRMarcher(), Marcher)
    o, d = rays(device)
    p = torch.tensor([0.45], dtype=torch.float64, device=device, requires_grad=True)
    occupancy_logit = lambda x: 4.0 * (p[0] - x.norm(dim=-1))  # noqa: E731  (> 0 inside)
    level = 0.2  # the sphere of radius 0.45 - 0.05
    r = march_field(occupancy_logit, o, d, marcher=SignChangeMarcher(), level=level)
    hit, t, disc = sphere_depth(o, d, torch.zeros(3, dtype=o.dtype, device=device), 0.4)
    clear = disc > 0.02
    assert clear.sum() > 30 and r.hit[clear].all() and not r.hit[~hit].any()
    assert (r.t - t)[clear].abs().max() < 1e-10
    (g,) = torch.autograd.grad(r.t[clear].sum(), p)
    torch.testing.assert_close(g[0], (-0.4 / disc[clear].sqrt()).sum(), atol=1e-8, rtol=1e-8)
    assert r.marching_evals == o.shape[0] * (64 + 40)
    with pytest.raises(TypeError, match="marcher: expected an object with a march"):
        march_field(occupancy_logit, o, d, marcher="idr")


# -- camera z-depth ---------------------------------------------------------------------------------


def test_z_per_t_by_hand(device):
    """Camera 0: identity rotation, so z per t is d_z. Camera 1: rotated 90 degrees about y (world x
    is its optical axis: R row 2 = (1, 0, 0)), so z per t is d_x. Shapes [B, H, W, 3] -> [B, H, W]."""
    T = torch.eye(4, dtype=torch.float64, device=device).repeat(2, 1, 1)
    T[1, :3, :3] = torch.tensor([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]], dtype=torch.float64)
    T[:, :3, 3] = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)  # translation plays no part
    d = torch.tensor([[0.6, 0.0, 0.8], [0.0, 0.28, 0.96], [-0.8, 0.6, 0.0]], dtype=torch.float64, device=device)
    dirs = torch.stack([d, d]).reshape(2, 1, 3, 3)
    z = z_per_t(T, dirs)
    assert z.shape == (2, 1, 3)
    expected = torch.tensor([[[0.8, 0.96, 0.0]], [[0.6, 0.0, -0.8]]], dtype=torch.float64, device=device)
    torch.testing.assert_close(z, expected, atol=1e-15, rtol=0)


def test_z_depth_of_a_traced_sphere_by_hand(device):
    """A camera at (0, 0, -2) looking along +z at the sphere |x| = 0.5: the axial ray hits at t = 1.5
    (z = 1.5); the ray with d = (0.1, 0, sqrt(0.99)) at t = 2 sqrt(0.99) - sqrt(0.21), z = t sqrt(0.99)."""
    T = torch.eye(4, dtype=torch.float64, device=device)[None].clone()
    T[0, 2, 3] = 2.0  # x_cam = x_world + (0, 0, 2): the camera centre is (0, 0, -2)
    c = 0.99**0.5
    d = torch.tensor([[0.0, 0.0, 1.0], [0.1, 0.0, c]], dtype=torch.float64, device=device)
    o = torch.tensor([[0.0, 0.0, -2.0]], dtype=torch.float64, device=device).expand(2, 3).contiguous()
    r = march_field(lambda x: x.norm(dim=-1) - 0.5, o, d, marcher=IDRMarcher(eps=1e-12, sphere_tracing_iters=100))
    t_hand = torch.tensor([1.5, 2 * c - 0.21**0.5], dtype=torch.float64, device=device)
    torch.testing.assert_close(r.t, t_hand, atol=1e-10, rtol=0)
    z = r.reshape(1, 2).z_depth(T, d.reshape(1, 2, 3))
    torch.testing.assert_close(z, (t_hand * torch.tensor([1.0, c], dtype=torch.float64, device=device))[None], atol=1e-10, rtol=0)
    assert r.steps.device == o.device and r.reshape(1, 2).marching_evals == r.marching_evals
