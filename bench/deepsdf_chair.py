"""DIST's benchmark network: DeepSDF's 8x512 decoder fitted to one procedural chair.

    decoder, field = fitted_chair_decoder()   # field: points [N, 3] -> sdf [N], no grad needed

DIST's renderer is measured on trained DeepSDF shapes (ShapeNet chairs, sofas, planes); no trained
decoder ships with the project and a freshly initialised one has no surface, so the benchmark fits
one: DeepSDF's decoder (`models.deepsdf.DeepSDFDecoder`, 8 x 512, ReLU, weight norm, skip at layer
4, tanh out; latent size 256, dropout off) with a latent of zeros, trained by DeepSDF's loss (L1 of
the predictions and targets clamped to +-0.1) on chair 0 of the project's chair family
(`geometry.shape_family`), normalised as DeepSDF normalises meshes (centred, radius 1 / 1.03).
Samples follow DeepSDF's recipe (surface points perturbed by N(0, 0.0025) and N(0, 0.00025) per axis,
exact SDF targets from the analytic chair) except that `uniform` = 30% are uniform in [-1, 1]^3, not
5%: a fit of seconds, not DeepSDF's 2000 epochs, learns the far field (values beyond the clamp) only
from them, and a far field below the clamp makes DIST take short steps through empty space. Like a trained
DeepSDF shape, the fit is accurate near the surface and only known to be beyond the clamp away from
it: DIST's step clamp (0.1) is there for that.

The fit is seeded and deterministic; its weights are cached in `outputs/cache/` under a name keyed by
the settings, so repeated runs skip it.
"""

from __future__ import annotations

import hashlib
import os
import time

import torch

from taichi_sdf.geometry.families import class_sdf
from taichi_sdf.models.deepsdf import DeepSDFDecoder

__all__ = ["fitted_chair_decoder", "chair_target"]

CLAMP = 0.1  # DeepSDF's ClampingDistance
RADIUS = 1 / 1.03  # DeepSDF's normalisation: the shape's farthest point at this radius


def chair_target(index: int = 0, seed: int = 0, pool: int = 200_000):
    """The chair's exact SDF in DeepSDF's frame: points `[N, 3]` -> sdf `[N]` (analytic, no network)."""
    raw = class_sdf("chair", index, seed)
    g = torch.Generator().manual_seed(1234)
    x = torch.rand(pool, 3, generator=g) - 0.5  # the chair lies in the unit cube
    inside = x[raw(x) <= 0]
    centre = 0.5 * (inside.max(0).values + inside.min(0).values)
    scale = RADIUS / float((inside - centre).norm(dim=1).max())
    return lambda p: raw(p / scale + centre) * scale


def _samples(target, n: int, uniform: float, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """DeepSDF-style samples `[n, 3]` and their SDF targets `[n]`."""
    seeds = torch.rand(40 * n, 3, generator=g) * 2 - 1
    with torch.enable_grad():
        s = seeds.requires_grad_(True)
        f = target(s)
        (grad,) = torch.autograd.grad(f.sum(), s)
    near = (f.detach().abs() < 0.1) & (grad.norm(dim=1) > 0.5)
    surf = (seeds.detach() - f.detach()[:, None] * grad)[near]  # one projection onto the surface
    n_uniform = int(n * uniform)
    m = (n - n_uniform) // 2
    surf = surf[torch.randint(len(surf), (m,), generator=g)]
    pts = torch.cat([surf + torch.randn(m, 3, generator=g) * 0.0025**0.5,
                     surf + torch.randn(m, 3, generator=g) * 0.00025**0.5,
                     torch.rand(n - 2 * m, 3, generator=g) * 2 - 1])  # fmt: skip
    return pts, target(pts)


def fitted_chair_decoder(steps: int = 500, batch: int = 1024, lr: float = 1e-3, uniform: float = 0.3, index: int = 0,
                         seed: int = 0, cache_dir: str = "outputs/cache", verbose: bool = True):  # fmt: skip
    """(decoder in eval mode, field callable `points [N, 3] -> sdf [N]` with the zero latent)."""
    torch.manual_seed(0)
    dec = DeepSDFDecoder(latent_size=256, dropout=(), dropout_prob=0.0)
    key = hashlib.sha1(f"deepsdf-chair v3 {steps} {batch} {lr} {uniform} {index} {seed}".encode()).hexdigest()[:12]
    path = os.path.join(cache_dir, f"deepsdf_chair_{key}.pt")
    if os.path.exists(path):
        dec.load_state_dict(torch.load(path))
    else:
        target = chair_target(index, seed)
        g = torch.Generator().manual_seed(seed)
        pts, sdf = _samples(target, steps * batch // 4, uniform, g)  # each sample seen ~4 times
        opt = torch.optim.Adam(dec.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
        zero = torch.zeros(256)
        start = time.perf_counter()
        for _ in range(steps):
            i = torch.randint(len(pts), (batch,), generator=g)
            pred = dec(zero, pts[i])
            loss = (pred.clamp(-CLAMP, CLAMP) - sdf[i].clamp(-CLAMP, CLAMP)).abs().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        if verbose:
            print(f"fitted DeepSDF's decoder to chair {index}: {steps} Adam steps of {batch} samples, "
                  f"final clamped L1 {float(loss.detach()):.4f}, {time.perf_counter() - start:.0f} s; cached in {path}")  # fmt: skip
        os.makedirs(cache_dir, exist_ok=True)
        tmp = path + ".tmp"
        torch.save(dec.state_dict(), tmp)
        os.replace(tmp, path)
    dec.eval()
    zero = torch.zeros(256)
    return dec, lambda x: dec(zero.to(x), x)
