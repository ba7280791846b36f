"""Multi-view datasets: readers and writers of the IDR/DTU, NeRF-synthetic, DVR, COLMAP and nerfstudio formats."""

from taichi_sdf.data.multiview.base import MultiViewDataset
from taichi_sdf.data.multiview.colmap import load_colmap, save_colmap
from taichi_sdf.data.multiview.dvr import load_dvr, load_dvr_depth, read_dvr_cameras, write_dvr_cameras, write_dvr_scene
from taichi_sdf.data.multiview.idr import load_idr, save_idr
from taichi_sdf.data.multiview.nerf import load_nerf, save_nerf
from taichi_sdf.data.multiview.nerfstudio import load_nerfstudio, save_nerfstudio
from taichi_sdf.data.multiview.normalize import estimate_normalization, visual_hull
from taichi_sdf.data.multiview.synthetic import sphere_dataset

__all__ = [
    "MultiViewDataset",
    "load_idr",
    "save_idr",
    "load_nerf",
    "save_nerf",
    "load_colmap",
    "save_colmap",
    "load_nerfstudio",
    "save_nerfstudio",
    "load_dvr",
    "load_dvr_depth",
    "read_dvr_cameras",
    "write_dvr_cameras",
    "write_dvr_scene",
    "estimate_normalization",
    "visual_hull",
    "sphere_dataset",
]
