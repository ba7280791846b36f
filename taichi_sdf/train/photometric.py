"""DIST's multi-view photometric warp loss (methods.md 1.2, "Multi-view synthetic").

DIST (`core/sdfrenderer/renderer_warp.py`, `core/inv_optimizer/loss_multi.py`) renders camera z-depth
in view i, back-projects the pixels that hit to world points, projects them into view j, samples view
j's colour bilinearly there and takes the L1 distance to view i's colour on the pixels that view j sees
too: the projected depth must agree with view j's rendered depth, `(z_proj - depth_j)^2 < 0.001`.
That threshold is in DeepSDF's canonical units (the shape inside the unit sphere), i.e.
`|z_proj - depth_j| < sqrt(0.001) = 0.0316`, about 1.6 % of the sphere's diameter; it is
`DIST_DEPTH_THRESHOLD` here, an absolute depth difference, to be scaled with the scene for other units.
The loss is DIST's `mean(|c_i - c_j|)` over the kept pixels and the colour channels (weight 5 in
`run_multi_pmodata.py`), 0 (still connected to the graph) when no pixel is kept.

Differences from the original, on purpose:
- Pixel centres follow the project (`Camera`: pixel (row, col) at (col + 0.5, row + 0.5)), not DIST's
  integer centres; bilinear sampling is `grid_sample(align_corners=False)`, which uses exactly that
  convention. A DIST camera converts with `cx, cy += 0.5`.
- Projections must land between the outermost pixel centres of view j (DIST commented its in-image
  test out and let `grid_sample` pad with zeros) and in front of camera j.
- View j's depth is read only for the visibility test, so it gets no gradient (DIST renders it with
  `no_grad_depth=True`); invalid depth there (NaN/inf/<= 0 or `mask_j` False) rejects every projection
  whose bilinear footprint touches it, as DIST's background depth of 1e11 does.
Gradients flow to `depth_i`, to both cameras' `T_cam_world` (hence to any pose or Sim(3) parameters
they were built from) and to `image_j`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from taichi_sdf.cameras.camera import Camera

__all__ = ["DIST_DEPTH_THRESHOLD", "WarpResult", "photometric_warp", "photometric_warp_loss"]

DIST_DEPTH_THRESHOLD = 0.001**0.5  # renderer_warp.py: (z_proj - depth_j)^2 < 0.001, canonical units
_MIN_Z = 1e-6  # projections closer to camera j's plane than this count as behind it (keeps 1/z finite)


@dataclass
class WarpResult:
    """Output of `photometric_warp` (view i's pixel grid `[H, W]`).

    Attributes:
        loss: `[]` mean |image_i - warped| over the valid pixels and channels.
        valid: `[H, W]` bool, pixels of view i that hit, land inside view j, in front of it, and whose
            depth agrees with view j's depth.
        warped: `[H, W, C]` view j's colour sampled at the projections (meaningful where `valid`).
        uv: `[H, W, 2]` projections into view j in pixels (centres at +0.5).
        z_proj: `[H, W]` camera-z depth of the back-projected points in view j.
    """

    loss: torch.Tensor
    valid: torch.Tensor
    warped: torch.Tensor
    uv: torch.Tensor
    z_proj: torch.Tensor


def _check_camera(name: str, camera) -> None:
    if not isinstance(camera, Camera):
        raise TypeError(f"{name}: expected a Camera, got {type(camera).__name__}")
    if len(camera) != 1:
        raise ValueError(f"{name}: expected one camera, got a batch of {len(camera)}")


def _check_image(name: str, x, shape: tuple, dtype: torch.dtype | None, what: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    ok = x.dim() == len(shape) and all(w is None or a == w for a, w in zip(x.shape, shape))
    if not ok:
        want = ", ".join("C" if w is None else str(w) for w in shape)
        raise ValueError(f"{name}: expected {what} of shape [{want}], got {list(x.shape)}")
    if dtype is not None and x.dtype != dtype:
        want = str(dtype).replace("torch.", "")
        raise ValueError(f"{name}: expected dtype {want} (like depth_i), got {str(x.dtype).replace('torch.', '')}")
    return x


def _sample(image: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of `image [H, W, C]` at normalised positions `grid [N, 2]` -> `[N, C]`."""
    out = F.grid_sample(
        image.permute(2, 0, 1)[None], grid[None, :, None, :], mode="bilinear", padding_mode="zeros", align_corners=False
    )
    return out[0, :, :, 0].T


def photometric_warp(
    depth_i: torch.Tensor,  # [H, W]
    camera_i: Camera,
    image_i: torch.Tensor,  # [H, W, C]
    camera_j: Camera,
    image_j: torch.Tensor,  # [H', W', C]
    depth_j: torch.Tensor,  # [H', W']
    *,
    mask_i: torch.Tensor | None = None,  # [H, W] bool
    mask_j: torch.Tensor | None = None,  # [H', W'] bool
    depth_threshold: float = DIST_DEPTH_THRESHOLD,
) -> WarpResult:
    """DIST's warp from view i to view j and its photometric L1 loss (module docstring).

    Args:
        depth_i: `[H, W]` camera-z depth rendered in view i (differentiable); NaN, inf or <= 0 where the
            ray missed. `H, W` are `camera_i`'s image size.
        camera_i, camera_j: one `Camera` each (their `T_cam_world` may carry gradients).
        image_i: `[H, W, C]` view i's ground-truth colour.
        image_j: `[H', W', C]` view j's ground-truth colour (`camera_j`'s image size).
        depth_j: `[H', W']` camera-z depth rendered in view j (used without gradient, visibility only).
        mask_i, mask_j: optional `[H, W]` / `[H', W']` bool masks of the pixels that hit (ANDed with
            the finite, positive depths).
        depth_threshold: largest |z_proj - depth_j| of a consistent pixel, in depth units
            (default DIST's sqrt(0.001) for the unit-sphere canonical frame).

    Returns: `WarpResult` (loss `[]`, valid `[H, W]`, warped `[H, W, C]`, uv `[H, W, 2]`, z_proj `[H, W]`).
    """
    _check_camera("camera_i", camera_i)
    _check_camera("camera_j", camera_j)
    if not isinstance(depth_i, torch.Tensor):
        raise TypeError(f"depth_i: expected a torch.Tensor, got {type(depth_i).__name__}")
    if depth_i.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"depth_i: expected dtype float32 or float64, got {str(depth_i.dtype).replace('torch.', '')}")
    H, W, Hj, Wj = camera_i.height, camera_i.width, camera_j.height, camera_j.width
    dtype = depth_i.dtype
    _check_image("depth_i", depth_i, (H, W), None, "camera z-depth of camera_i's image")
    _check_image("image_i", image_i, (H, W, None), dtype, "colours of camera_i's image")
    _check_image("image_j", image_j, (Hj, Wj, image_i.shape[-1]), dtype, "colours of camera_j's image (C like image_i)")
    _check_image("depth_j", depth_j, (Hj, Wj), dtype, "camera z-depth of camera_j's image")
    for name, m, shape in (("mask_i", mask_i, (H, W)), ("mask_j", mask_j, (Hj, Wj))):
        if m is not None:
            _check_image(name, m, shape, torch.bool, "a hit mask")
    if not (isinstance(depth_threshold, (int, float)) and 0 < depth_threshold < float("inf")):
        raise ValueError(f"depth_threshold: expected a positive finite number, got {depth_threshold!r}")

    device = depth_i.device
    K_i, T_i = camera_i.K[0].to(device, dtype), camera_i.T_cam_world[0].to(device, dtype)
    K_j, T_j = camera_j.K[0].to(device, dtype), camera_j.T_cam_world[0].to(device, dtype)

    hit_i = torch.isfinite(depth_i) & (depth_i > 0)
    if mask_i is not None:
        hit_i = hit_i & mask_i
    z_i = torch.where(hit_i, depth_i, torch.ones_like(depth_i))  # NaN-free, so masked pixels get 0 gradient

    # Back-project view i's pixel centres: p_cam = z K^-1 (u, v, 1), x = R^T (p_cam - t).
    rows, cols = torch.meshgrid(
        torch.arange(H, dtype=dtype, device=device), torch.arange(W, dtype=dtype, device=device), indexing="ij"
    )
    pix = torch.stack([cols + 0.5, rows + 0.5, torch.ones_like(cols)], dim=-1).reshape(-1, 3)  # [N, 3]
    p_cam = z_i.reshape(-1, 1) * torch.linalg.solve(K_i, pix.T).T  # [N, 3]
    x_world = (p_cam - T_i[:3, 3]) @ T_i[:3, :3]

    # Project into view j.
    p_j = x_world @ T_j[:3, :3].T + T_j[:3, 3]  # [N, 3]
    z_proj = p_j[:, 2]
    front = z_proj > _MIN_Z
    uvw = p_j @ K_j.T
    uv = uvw[:, :2] / torch.where(front, z_proj, torch.ones_like(z_proj))[:, None]  # [N, 2]
    size = torch.tensor([Wj, Hj], dtype=dtype, device=device)
    inside = ((uv >= 0.5) & (uv <= size - 0.5)).all(-1)
    grid = 2 * uv / size - 1  # align_corners=False: pixel centre col + 0.5 -> 2 (col + 0.5) / W - 1

    # Visibility in view j: bilinear depth_j over a footprint of valid pixels only.
    with torch.no_grad():
        hit_j = torch.isfinite(depth_j) & (depth_j > 0)
        if mask_j is not None:
            hit_j = hit_j & mask_j
        z_j = torch.where(hit_j, depth_j, torch.zeros_like(depth_j))
        weight = _sample(hit_j.to(dtype)[..., None], grid.detach())[:, 0]
        z_sampled = _sample(z_j[..., None], grid.detach())[:, 0] / weight.clamp_min(1e-12)
        seen_j = weight > 1 - 1e-5  # every neighbour with a nonzero bilinear weight hit
        consistent = (z_proj.detach() - z_sampled).abs() < depth_threshold
    valid = hit_i.reshape(-1) & front & inside & seen_j & consistent  # [N]

    warped = _sample(image_j, grid)  # [N, C]
    diff = (image_i.reshape(-1, image_i.shape[-1]) - warped)[valid]
    loss = diff.abs().sum() / max(diff.numel(), 1)
    return WarpResult(
        loss=loss,
        valid=valid.reshape(H, W),
        warped=warped.reshape(H, W, -1),
        uv=uv.reshape(H, W, 2),
        z_proj=z_proj.reshape(H, W),
    )


def photometric_warp_loss(
    depth_i: torch.Tensor,  # [H, W]
    camera_i: Camera,
    image_i: torch.Tensor,  # [H, W, C]
    camera_j: Camera,
    image_j: torch.Tensor,  # [H', W', C]
    depth_j: torch.Tensor,  # [H', W']
    **kwargs,
) -> torch.Tensor:
    """`photometric_warp(...).loss`: the `[]` L1 warp loss from view i to view j (same arguments)."""
    return photometric_warp(depth_i, camera_i, image_i, camera_j, image_j, depth_j, **kwargs).loss
