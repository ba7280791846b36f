"""The twins' own implicit-function step (written apart from `taichi_sdf.implicit.implicit_diff`, so that
twin-vs-kernel agreement also checks the library's differentiable step).

For hits at t0 on the level set f = level of a torch field `fn(points [M, 3]) -> [M]`:

    t = t0 - (fn(o + t0 d) - level) / slope,   slope = d . grad fn(o + t0 d), held constant,

preceded by `polish_steps` Newton steps (each kept only where it brings |fn - level| down, and at
most 0.05 long). Misses report `t_min`, detached; `min_sdf = fn(o + t_min d) - level` for every ray.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

SLOPE_FLOOR = 1e-4  # |slope| is raised to this (sign kept; 0 counts as negative)


@dataclass
class Trace:
    """What the twins return; the same attribute names as the library's `TraceResult`."""

    hit: torch.Tensor
    t: torch.Tensor
    points: torch.Tensor
    normals: torch.Tensor
    t_min_sdf: torch.Tensor
    min_sdf: torch.Tensor
    steps: torch.Tensor
    num_evals: int
    marching_evals: int


def spatial_gradient(fn, x: torch.Tensor, create_graph: bool) -> torch.Tensor:
    """d fn / d x `[M, 3]` by autograd (a graph for second-order losses when `create_graph`)."""
    with torch.enable_grad():
        xg = x if x.requires_grad else x.detach().requires_grad_(True)
        y = fn(xg)
        (g,) = torch.autograd.grad(y, xg, grad_outputs=torch.ones_like(y), create_graph=create_graph)
    return g


def _slope(fn, x, d):
    s = (spatial_gradient(fn, x, False) * d).sum(-1)
    floor = torch.full_like(s, SLOPE_FLOOR)
    return torch.where(s.abs() >= SLOPE_FLOOR, s, torch.where(s > 0, floor, -floor))


def trace_outputs(fn, origins, directions, hit, t0, t_min, *, level=0.0, polish_steps=0, create_graph=True,
                  steps=None, marching_evals=0) -> Trace:  # fmt: skip
    """Differentiable outputs of a twin trace from its (no-grad) `hit, t0, t_min` `[N]`."""
    n = origins.shape[0]
    o_h, d_h = origins[hit], directions[hit]
    th = t0.detach()[hit]
    with torch.no_grad():
        for _ in range(polish_steps):
            x = o_h.detach() + th[:, None] * d_h.detach()
            g = fn(x) - level
            cand = th - (g / _slope(fn, x, d_h.detach())).clamp(-0.05, 0.05)
            better = (fn(o_h.detach() + cand[:, None] * d_h.detach()) - level).abs() < g.abs()
            th = torch.where(better, cand, th)
    x0 = o_h + th[:, None] * d_h
    with torch.no_grad():
        slope = _slope(fn, x0.detach(), d_h.detach())
    t_hit = th - (fn(x0) - level) / slope
    t = t_min.detach().clone().masked_scatter(hit, t_hit)
    points = origins + t[:, None] * directions
    grad = spatial_gradient(fn, points, create_graph and torch.is_grad_enabled())
    normals = grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    min_sdf = fn(origins + t_min.detach()[:, None] * directions) - level
    if steps is None:
        steps = torch.zeros(n, dtype=torch.int32, device=origins.device)
    nh = int(hit.sum())
    evals = marching_evals + 3 * nh * polish_steps + 2 * nh + 2 * n
    return Trace(hit, t, points, normals, t_min.detach(), min_sdf, steps, evals, marching_evals)
