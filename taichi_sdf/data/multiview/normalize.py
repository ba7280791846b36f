"""Estimate the normalisation (object -> unit sphere) from masks and cameras by a coarse visual hull."""

from __future__ import annotations

import torch

from taichi_sdf.cameras.camera import Camera


def visual_hull(cameras: Camera, masks: torch.Tensor, resolution: int = 64, extent: float | None = None,
                min_views_fraction: float = 1.0, min_seen_fraction: float = 0.5) -> torch.Tensor:  # fmt: skip
    """Points `[M, 3]` of a `resolution^3` grid that project inside the masks of every view that sees them.

    Args:
        masks: `[N, H, W]` bool.
        extent: half side of the cube searched around the origin; defaults to the distance of the
            nearest camera (the object must lie between the cameras).
        min_views_fraction: a point survives if inside the masks of at least this fraction of the views
            in which it projects into the image...
        min_seen_fraction: ...and if it projects into at least this fraction of all views (otherwise
            points far off to the side, seen by one or two cameras, would survive).
    """
    if extent is None:
        extent = float(cameras.centers.norm(dim=-1).min())
    lin = torch.linspace(-extent, extent, resolution, dtype=torch.float64)
    pts = torch.stack(torch.meshgrid(lin, lin, lin, indexing="ij"), -1).reshape(-1, 3)
    inside = torch.zeros(len(pts), dtype=torch.int32)
    seen = torch.zeros(len(pts), dtype=torch.int32)
    H, W = masks.shape[1:]
    for i in range(len(cameras)):
        uv, z = cameras[i].project(pts)
        uv, z = uv[0], z[0]
        col, row = torch.floor(uv[:, 0]).long(), torch.floor(uv[:, 1]).long()
        valid = (z > 0) & (col >= 0) & (col < W) & (row >= 0) & (row < H)
        hit = torch.zeros(len(pts), dtype=torch.bool)
        hit[valid] = masks[i].cpu()[row[valid], col[valid]]
        seen += valid.int()
        inside += hit.int()
    min_seen = max(1, int(min_seen_fraction * len(cameras)))
    keep = (seen >= min_seen) & (inside >= torch.ceil(min_views_fraction * seen.double()).int())
    return pts[keep]


def estimate_normalization(cameras: Camera, masks: torch.Tensor, margin: float = 1.1, resolution: int = 64) -> torch.Tensor:
    """`scale_mat [4, 4]` (normalised -> world) that puts the masks' visual hull inside the sphere of
    radius 1/margin: centre = centre of the hull's bounding box, scale = margin x the largest distance
    of a hull point from that centre. Raises ValueError when the masks are empty or inconsistent."""
    cams = cameras.to(dtype=torch.float64)
    hull = visual_hull(cams, masks, resolution)
    if len(hull) == 0:
        raise ValueError("masks: the visual hull is empty (masks empty, or cameras inconsistent with them)")
    # Refine on a tighter grid around the first estimate.
    centre = (hull.amin(0) + hull.amax(0)) / 2
    extent = float((hull - centre).abs().max()) + 2 * float(cams.centers.norm(dim=-1).min()) / resolution
    shift = torch.eye(4, dtype=torch.float64)
    shift[:3, 3] = centre
    shifted = cams.transformed(shift)
    hull = visual_hull(shifted, masks, resolution, extent=extent) + centre
    if len(hull) == 0:
        raise ValueError("masks: the visual hull is empty after refinement")
    centre = (hull.amin(0) + hull.amax(0)) / 2
    scale = margin * float((hull - centre).norm(dim=-1).max())
    S = torch.eye(4, dtype=torch.float64)
    S[:3, :3] *= scale
    S[:3, 3] = centre
    return S
