"""Twin of `taichi_sdf.train.photometric.photometric_warp`, written the way DIST computes it.

DIST's conventions (`core/sdfrenderer/renderer_warp.py`, `core/utils/loss_utils.grid_sample_on_img`):
integer pixel centres (pixel (row, col) at (col, row)), rays `R^T K^-1 (u, v, 1)` scaled by the camera
z-depth, bilinear sampling with `align_corners=True` over integer positions and zero padding, the
background depth 1e11 and the squared-depth test `(z_proj - depth_j)^2 < thres`. Bilinear weights are
spelled out with `floor` here instead of `grid_sample`. Kept from the library's deviations: the in-image
test (between the outermost pixel centres) and the in-front test. Intrinsics `K1, K2` are in DIST's
integer convention: a project `Camera`'s K with `cx, cy` reduced by 0.5.
"""

from __future__ import annotations

import torch

BACKGROUND_DEPTH = 1e11  # DIST's depth where a ray misses


def _bilinear(image: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """`image [H, W, C]` at integer-centred positions `x, y [N]` (zero outside) -> `[N, C]`."""
    H, W = image.shape[:2]
    x0, y0 = torch.floor(x), torch.floor(y)
    out = 0
    for dx in (0, 1):
        for dy in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            w = (1 - (x - xi).abs()) * (1 - (y - yi).abs())  # [N]
            ok = (xi >= 0) & (xi <= W - 1) & (yi >= 0) & (yi <= H - 1)
            idx = (yi.clamp(0, H - 1) * W + xi.clamp(0, W - 1)).long()
            out = out + torch.where(ok, w, torch.zeros_like(w))[:, None] * image.reshape(H * W, -1)[idx]
    return out


def photometric_warp(depth1, K1, R1, T1, img1, K2, R2, T2, img2, depth2, thres: float = 0.001):
    """DIST's warp loss from view 1 to view 2: `(loss [], valid [H, W])`.

    depth1 `[H, W]` (non-finite or <= 0 where missed), img1 `[H, W, C]`, img2 `[H', W', C]`, depth2
    `[H', W']`, K `[3, 3]` (integer pixel centres), R `[3, 3]`, T `[3]` world-to-camera."""
    H, W = depth1.shape
    H2, W2 = depth2.shape
    hit1 = torch.isfinite(depth1) & (depth1 > 0)
    v, u = torch.meshgrid(torch.arange(H, dtype=depth1.dtype), torch.arange(W, dtype=depth1.dtype), indexing="ij")
    uv1 = torch.stack([u[hit1], v[hit1], torch.ones_like(u[hit1])], dim=0)  # [3, M]
    rays = R1.T @ torch.linalg.inv(K1) @ uv1  # camera z = 1
    centre1 = -R1.T @ T1
    points = centre1[:, None] + rays * depth1[hit1][None]  # [3, M]
    xyz = K2 @ (R2 @ points + T2[:, None])
    x, y, z = xyz[0] / xyz[2], xyz[1] / xyz[2], xyz[2]
    keep = (z > 0) & (x >= 0) & (x <= W2 - 1) & (y >= 0) & (y <= H2 - 1)
    hit2 = torch.isfinite(depth2) & (depth2 > 0)
    d2 = torch.where(hit2, depth2, torch.full_like(depth2, BACKGROUND_DEPTH))
    with torch.no_grad():
        d2_sample = _bilinear(d2[..., None], x, y)[:, 0]
        keep = keep & ((z - d2_sample) ** 2 < thres)
    c1 = img1[hit1][keep]
    c2 = _bilinear(img2, x[keep], y[keep])
    loss = torch.mean(torch.abs(c1 - c2)) if len(c1) else depth1.new_zeros(())
    valid = torch.zeros(H, W, dtype=torch.bool)
    valid[hit1] = keep
    return loss, valid
