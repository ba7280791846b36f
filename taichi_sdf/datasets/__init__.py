"""Multi-view datasets: readers and writers of the IDR/DTU and NeRF-synthetic formats."""

from .base import MultiViewDataset
from .idr import load_idr, save_idr
from .nerf import load_nerf, save_nerf
from .normalize import estimate_normalization, visual_hull
from .synthetic import sphere_dataset

__all__ = ["MultiViewDataset", "load_idr", "save_idr", "load_nerf", "save_nerf", "estimate_normalization", "visual_hull", "sphere_dataset"]
