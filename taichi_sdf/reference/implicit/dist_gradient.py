"""Torch twin of DIST's approximate depth gradient (`taichi_sdf.implicit.dist_gradient`), written the
way the original states it (B1ueber2y/DIST-Renderer `core/sdfrenderer/renderer.py`:
`get_index_from_sdf_list(..., 'min_abs')` ranks every recorded sample of a ray by |f| with `topk`, then
`get_sample_on_marching_zdepth_along_ray` adds `alpha * (f - f.detach())` once per buffered sample).

- `smallest_abs_buffer`: the K samples of smallest |f| from the full per-step record of a trace (a sort,
  where the kernels insert into a running buffer).
- `approximate_depth`: DIST's forward value and gradient from that buffer, one slot at a time.

A leaf: torch only.
"""

from __future__ import annotations

import torch


def smallest_abs_buffer(f_steps: torch.Tensor, t_steps: torch.Tensor, k: int) -> torch.Tensor:
    """t `[N, k]` of the k samples of smallest |f| of each ray, ascending (ties: the earlier step first),
    NaN where a ray has fewer than k samples. `f_steps, t_steps [S, N]`: the value and distance of every
    step, f = inf where the ray was not evaluated at that step."""
    if f_steps.shape[0] == 0:
        return torch.full((t_steps.shape[1], k), float("nan"), dtype=t_steps.dtype, device=t_steps.device)
    a = f_steps.abs().T  # [N, S]
    order = torch.sort(a, dim=1, stable=True).indices[:, :k]
    t = t_steps.T.gather(1, order)
    t = torch.where(torch.isfinite(a.gather(1, order)), t, torch.full_like(t, float("nan")))
    if t.shape[1] < k:
        t = torch.nn.functional.pad(t, (0, k - t.shape[1]), value=float("nan"))
    return t


def approximate_depth(fn, origins, directions, hit, t_min, t_buffer, *, alpha: float, clamp: float,
                      level: float = 0.0) -> torch.Tensor:  # fmt: skip
    """DIST's distance `[N]` of the hits: t_0 + (1 - alpha) c_0 after the relaxed step t_0 + alpha c_0
    (c = clamp(f - level, -clamp, clamp) at p_j = o + t_j d), then `+ alpha * (c_j - c_j.detach())` for each
    filled slot j; misses get `t_min`, detached. `fn(points [M, 3]) -> [M]`, `t_buffer [N, K]` (NaN = empty)."""
    t = t_min.detach().clone()
    use = hit & torch.isfinite(t_buffer[:, 0])
    if not use.any():
        return t
    o, d, buf = origins[use], directions[use], t_buffer[use].detach()

    def c_at(j):
        tj = torch.nan_to_num(buf[:, j])
        return (fn(o + tj[:, None] * d) - level).clamp(-clamp, clamp)

    c0 = c_at(0).detach()
    z = buf[:, 0] + alpha * c0  # the distance after the relaxed step from the best sample
    z = z + (1 - alpha) * c0
    for j in range(buf.shape[1]):
        c = c_at(j)
        z = z + torch.where(torch.isfinite(buf[:, j]), alpha * c - alpha * c.detach(), torch.zeros_like(c))
    return t.masked_scatter(use, z)
