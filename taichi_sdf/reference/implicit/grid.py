"""Torch twin of `taichi_sdf.implicit.grid.grid_sample`."""

from __future__ import annotations

import torch


def grid_sample(grid: torch.Tensor, points: torch.Tensor, bound_min, bound_max) -> torch.Tensor:
    """Trilinear interpolation of `grid [X, Y, Z]` at `points [N, 3]` -> `[N]` (nodes span the box
    [bound_min, bound_max] inclusive; points are clamped onto the box)."""
    lo = torch.as_tensor(bound_min, dtype=points.dtype, device=points.device)
    hi = torch.as_tensor(bound_max, dtype=points.dtype, device=points.device)
    n = torch.tensor(grid.shape, dtype=points.dtype, device=points.device)
    x = (points - lo) * (n - 1) / (hi - lo)
    x = torch.minimum(torch.maximum(x, torch.zeros_like(x)), n - 1)
    base = torch.minimum(x.detach().floor().long(), (n - 2).long())
    w = x - base
    out = torch.zeros(points.shape[0], dtype=points.dtype, device=points.device)
    for di in (0, 1):
        for dj in (0, 1):
            for dk in (0, 1):
                wx = w[:, 0] if di else 1 - w[:, 0]
                wy = w[:, 1] if dj else 1 - w[:, 1]
                wz = w[:, 2] if dk else 1 - w[:, 2]
                out = out + wx * wy * wz * grid[base[:, 0] + di, base[:, 1] + dj, base[:, 2] + dk]
    return out
