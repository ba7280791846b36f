"""The one dataset type every reader returns: images, masks, cameras and the normalisation."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from taichi_sdf.cameras.camera import Camera


@dataclass
class MultiViewDataset:
    """N posed views of one object, in the normalised frame where the object lies in the unit sphere.

    Attributes:
        images: `[N, H, W, 3]` float32 RGB in [0, 1] (background as stored, or composited for RGBA).
        masks: `[N, H, W]` bool object masks.
        cameras: N cameras of the normalised frame (see `taichi_sdf.cameras.camera` for the convention).
        scale_mat: `[4, 4]` float64 similarity mapping normalised coordinates to world (file) units:
            `x_world = scale_mat @ x_normalised`. Meshes are written back in world units with it.
        names: one name per view (the image file stem).
        splits: view indices per split, e.g. {"train": [...], "test": [...]}.
        source: where it was read from.
    """

    images: torch.Tensor
    masks: torch.Tensor
    cameras: Camera
    scale_mat: torch.Tensor
    names: list[str]
    splits: dict[str, list[int]] = field(default_factory=dict)
    source: str = ""

    def __post_init__(self) -> None:
        n = len(self.names)
        if self.images.dim() != 4 or self.images.shape[-1] != 3 or self.images.shape[0] != n:
            raise ValueError(f"images: expected shape [N={n}, H, W, 3], got {list(self.images.shape)}")
        if tuple(self.masks.shape) != tuple(self.images.shape[:3]):
            raise ValueError(f"masks: expected shape {list(self.images.shape[:3])}, got {list(self.masks.shape)}")
        if len(self.cameras) != n:
            raise ValueError(f"cameras: expected {n} cameras, got {len(self.cameras)}")
        H, W = self.images.shape[1:3]
        if (self.cameras.height, self.cameras.width) != (H, W):
            raise ValueError(f"cameras: image size {self.cameras.width}x{self.cameras.height} differs from the images' {W}x{H}")
        if tuple(self.scale_mat.shape) != (4, 4):
            raise ValueError(f"scale_mat: expected shape [4, 4], got {list(self.scale_mat.shape)}")
        self.masks = self.masks.bool()
        if not self.splits:
            self.splits = {"train": list(range(n))}

    def __len__(self) -> int:
        return len(self.names)

    @property
    def height(self) -> int:
        return self.images.shape[1]

    @property
    def width(self) -> int:
        return self.images.shape[2]

    def subset(self, indices) -> MultiViewDataset:
        """The views `indices` (splits renumbered to the new order)."""
        idx = [int(i) for i in indices]
        pos = {old: new for new, old in enumerate(idx)}
        splits = {k: [pos[i] for i in v if i in pos] for k, v in self.splits.items()}
        return MultiViewDataset(
            self.images[idx], self.masks[idx], self.cameras[torch.tensor(idx)], self.scale_mat,
            [self.names[i] for i in idx], {k: v for k, v in splits.items() if v}, self.source,
        )  # fmt: skip

    def split(self, name: str) -> MultiViewDataset:
        if name not in self.splits:
            raise ValueError(f"split: expected one of {sorted(self.splits)}, got {name!r}")
        return self.subset(self.splits[name])

    def to_world(self, points: torch.Tensor) -> torch.Tensor:
        """Normalised-frame points `[N, 3]` -> world units `[N, 3]`."""
        S = self.scale_mat.to(points.device, points.dtype)
        return points @ S[:3, :3].T + S[:3, 3]

    def to_normalized(self, points: torch.Tensor) -> torch.Tensor:
        """World points `[N, 3]` -> normalised frame `[N, 3]`."""
        S = torch.linalg.inv(self.scale_mat).to(points.device, points.dtype)
        return points @ S[:3, :3].T + S[:3, 3]
