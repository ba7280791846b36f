"""Tiny analytic datasets made on the fly (no files, no downloads), for tests and smoke runs."""

from __future__ import annotations

import torch

from taichi_sdf.cameras.camera import fibonacci_cameras
from taichi_sdf.core.runtime import device
from taichi_sdf.data.multiview.base import MultiViewDataset


def sphere_dataset(
    n_views: int = 8, width: int = 32, height: int = 24, radius: float = 0.5,
    camera_distance: float = 2.75, fov_x_deg: float = 40.0, scale_mat: torch.Tensor | None = None,
) -> MultiViewDataset:  # fmt: skip
    """A sphere of `radius` at the origin of the normalised frame seen from a Fibonacci sphere of
    cameras; colour = 0.5 + 0.5 * normal, black background. Exact masks (pixel-centre rays)."""
    cams = fibonacci_cameras(n_views, camera_distance, width, height, fov_x_deg)
    o, d = (x.cpu() for x in cams.to(device()).image_rays())  # the ray kernel runs where Taichi runs
    b = (o * d).sum(-1)
    disc = b * b - (o * o).sum(-1) + radius**2
    hit = disc > 0
    t = -b - torch.sqrt(disc.clamp_min(0))
    normal = (o + t[..., None] * d) / radius
    images = torch.where(hit[..., None], 0.5 + 0.5 * normal, torch.zeros_like(normal)).float()
    return MultiViewDataset(
        images=images,
        masks=hit,
        cameras=cams,
        scale_mat=torch.eye(4, dtype=torch.float64) if scale_mat is None else scale_mat.double(),
        names=[f"{i:03d}" for i in range(n_views)],
        splits={"train": list(range(n_views)), "test": [0, n_views // 2]},
        source="synthetic:sphere",
    )
