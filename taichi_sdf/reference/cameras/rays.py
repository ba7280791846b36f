"""Torch twins of `taichi_sdf.cameras.rays`."""

from __future__ import annotations

import torch


def _rays_from_uv(K: torch.Tensor, T_cam_world: torch.Tensor, uv: torch.Tensor):
    # uv: [B, N, 2] continuous pixel coordinates
    fx, skew, cx = K[:, 0, 0, None], K[:, 0, 1, None], K[:, 0, 2, None]
    fy, cy = K[:, 1, 1, None], K[:, 1, 2, None]
    y = (uv[..., 1] - cy) / fy
    x = (uv[..., 0] - cx - skew * y) / fx
    d_cam = torch.stack([x, y, torch.ones_like(x)], dim=-1)  # [B, N, 3]
    R, t = T_cam_world[:, :3, :3], T_cam_world[:, :3, 3]
    d_world = d_cam @ R  # rows: R^T d
    d_world = d_world / d_world.norm(dim=-1, keepdim=True)
    centre = -(R.transpose(1, 2) @ t[..., None])[..., 0]  # [B, 3]
    return centre[:, None, :].expand_as(d_world), d_world


def image_rays(K: torch.Tensor, T_cam_world: torch.Tensor, height: int, width: int):
    """Twin of `taichi_sdf.cameras.rays.image_rays`: origins, directions `[B, H, W, 3]`."""
    B = K.shape[0]
    v, u = torch.meshgrid(
        torch.arange(height, dtype=K.dtype, device=K.device) + 0.5,
        torch.arange(width, dtype=K.dtype, device=K.device) + 0.5,
        indexing="ij",
    )
    uv = torch.stack([u, v], dim=-1).reshape(1, -1, 2).expand(B, -1, -1)
    o, d = _rays_from_uv(K, T_cam_world, uv)
    return o.reshape(B, height, width, 3), d.reshape(B, height, width, 3)


def pixel_rays(K: torch.Tensor, T_cam_world: torch.Tensor, pixels: torch.Tensor):
    """Twin of `taichi_sdf.cameras.rays.pixel_rays`: origins, directions `[B, N, 3]`."""
    return _rays_from_uv(K, T_cam_world, pixels)
