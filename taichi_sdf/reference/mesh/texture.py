"""Torch twin of `taichi_sdf.mesh.texture.sample_texture` (same signature, same texel convention)."""

from __future__ import annotations

import torch


def _axis(x: torch.Tensor, n: int, repeat: bool):
    if repeat:
        xr = x - torch.floor(x / n).detach() * n
    else:
        xr = x.clamp(-1.0, float(n))
    x0 = torch.floor(xr).detach()
    i0 = x0.long()
    i1 = i0 + 1
    if repeat:
        i0, i1 = i0 % n, i1 % n
    else:
        i0, i1 = i0.clamp(0, n - 1), i1.clamp(0, n - 1)
    return i0, i1, xr - x0


def sample_texture(
    texture: torch.Tensor,  # [B, Ht, Wt, C] or [Ht, Wt, C]
    uv: torch.Tensor,  # [B, H, W, 2]
    mask: torch.Tensor | None = None,  # [B, H, W] bool
    address: str = "clamp",
) -> torch.Tensor:
    """Twin of `taichi_sdf.mesh.texture.sample_texture`: bilinear lookups `[B, H, W, C]` at u right / v up
    coordinates (x = u Wt - 0.5, y = (1 - v) Ht - 0.5), 0 where masked or not finite."""
    tex = texture if texture.dim() == 4 else texture[None]
    B = uv.shape[0]
    tex = tex.expand(B, -1, -1, -1)
    Ht, Wt = tex.shape[1:3]
    u, v = uv[..., 0], uv[..., 1]
    valid = torch.isfinite(u) & torch.isfinite(v) & (u.abs() < 2.0**100) & (v.abs() < 2.0**100)
    if mask is not None:
        valid = valid & mask
    zero = torch.zeros_like(u)
    u, v = torch.where(valid, u, zero), torch.where(valid, v, zero)  # no NaN into the graph
    repeat = address == "repeat"
    x0, x1, fx = _axis(u * Wt - 0.5, Wt, repeat)
    y0, y1, fy = _axis((1.0 - v) * Ht - 0.5, Ht, repeat)
    bidx = torch.arange(B, device=uv.device).view(B, 1, 1)
    fx, fy = fx[..., None], fy[..., None]
    top = (1 - fx) * tex[bidx, y0, x0] + fx * tex[bidx, y0, x1]
    bottom = (1 - fx) * tex[bidx, y1, x0] + fx * tex[bidx, y1, x1]
    val = (1 - fy) * top + fy * bottom
    return torch.where(valid[..., None], val, torch.zeros_like(val))
