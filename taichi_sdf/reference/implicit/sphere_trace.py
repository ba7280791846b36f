"""Torch twin of the fused tracer `taichi_sdf.implicit.sphere_trace.sphere_trace` (dense: every ray is
evaluated at every step until all are done; results identical). A leaf: torch and the twins' own
implicit step only."""

from __future__ import annotations

from collections.abc import Callable

import torch

from taichi_sdf.reference.implicit.implicit_step import Trace, trace_outputs


def sphere_bounds(o: torch.Tensor, d: torch.Tensor, radius: float):
    """(t_near, t_far, t_closest, intersects) of rays `[N, 3]` with the sphere |x| = radius."""
    b = (o * d).sum(-1)
    disc = b * b - ((o * o).sum(-1) - radius * radius)
    sq = torch.sqrt(disc.clamp_min(0))
    t_close = (-b).clamp_min(0)
    inside = (disc > 0) & (-b + sq > 0)
    t_near = torch.where(inside, (-b - sq).clamp_min(0), t_close)
    t_far = torch.where(inside, -b + sq, t_close)
    return t_near, t_far, t_close, inside


def sphere_trace(
    sdf: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    params: torch.Tensor,
    origins: torch.Tensor,  # [N, 3]
    directions: torch.Tensor,  # [N, 3]
    *,
    bound_radius: float = 1.0,
    max_steps: int = 128,
    eps: float | None = None,
    step_scale: float = 1.0,
) -> Trace:
    """Twin of `sphere_trace(TaichiField(sdf_func, params, bound_radius), ...)`, with
    `sdf(points [N, 3], params) -> [N]` a torch function; directions are normalised, as there."""
    directions = directions / directions.norm(dim=-1, keepdim=True)
    if eps is None:
        eps = 1e-5 if params.dtype == torch.float32 else 1e-7
    o, d = origins.detach(), directions.detach()
    p = params.detach()
    n = o.shape[0]
    with torch.no_grad():
        t_near, t_far, t_close, inside = sphere_bounds(o, d, bound_radius)
        t = t_near.clone()
        best_f = sdf(o + t[:, None] * d, p)
        best_t = t.clone()
        active = inside.clone()
        hit = torch.zeros(n, dtype=torch.bool, device=o.device)
        steps = torch.zeros(n, dtype=torch.int32, device=o.device)
        for _ in range(max_steps):
            if not active.any():
                break
            f = sdf(o + t[:, None] * d, p)
            steps += active.int()
            better = active & (f.abs() < best_f.abs())
            best_f, best_t = torch.where(better, f, best_f), torch.where(better, t, best_t)
            conv = active & (f.abs() < eps)
            hit |= conv
            active &= ~conv
            t = torch.where(active, t + step_scale * f, t)
            active &= (t <= t_far) & (t >= 0)
        t0 = torch.where(hit, t, best_t)
    tr = trace_outputs(lambda x: sdf(x, params), origins, directions, hit, t0, best_t, steps=steps,
                       marching_evals=int(steps.sum()))  # fmt: skip
    tr.normals = torch.where(hit[:, None], tr.normals, torch.zeros_like(tr.normals))  # no surface on a miss
    return tr
