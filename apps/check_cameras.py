"""Check a dataset's cameras against its masks: project a point cloud of the object and report the
fraction of points that land inside the masks (dilated by a few pixels), per view and overall.

    python -m apps.check_cameras DATA --points points.npy [--format idr|nerf] [--frame normalized|world] [--dilate 1]

A wrong pixel-centre convention, a transposed pose or a bad scale_mat shows up at once as a low
fraction. Points `[N, 3]` come from .npy or any mesh/point file trimesh reads (.ply, .obj).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from taichi_sdf.core.errors import app_main
from taichi_sdf.data.multiview import MultiViewDataset, load_idr, load_nerf


def load_points(path: str) -> torch.Tensor:
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{p}: point file not found")
    if p.suffix == ".npy":
        pts = np.load(p)
    else:
        import trimesh

        geom = trimesh.load(p)
        pts = np.asarray(geom.vertices)
    pts = np.asarray(pts, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"{p}: expected points [N, 3], got {list(pts.shape)}")
    return torch.from_numpy(pts)


def fraction_inside(ds: MultiViewDataset, points_normalized: torch.Tensor, dilate: int = 1) -> list[float]:
    """Per view: the fraction of points whose projection falls in the mask dilated by `dilate` px."""
    from scipy.ndimage import binary_dilation

    out = []
    for i in range(len(ds)):
        uv, z = ds.cameras[i].project(points_normalized.to(ds.cameras.dtype))
        col, row = torch.floor(uv[0, :, 0]).long(), torch.floor(uv[0, :, 1]).long()
        mask = ds.masks[i].numpy()
        if dilate > 0:
            mask = binary_dilation(mask, structure=np.ones((3, 3), bool), iterations=dilate)
        ok = (z[0] > 0) & (col >= 0) & (col < ds.width) & (row >= 0) & (row < ds.height)
        inside = np.zeros(len(col), bool)
        inside[ok.numpy()] = mask[row[ok].numpy(), col[ok].numpy()]
        out.append(float(inside.mean()))
    return out


@app_main("python -m apps.check_cameras")
def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data")
    ap.add_argument("--points", required=True)
    ap.add_argument("--format", choices=["idr", "nerf"], default=None, help="default: nerf if transforms_train.json exists")
    ap.add_argument("--frame", choices=["normalized", "world"], default="normalized",
                    help="frame of the points: the dataset's normalised frame, or world (file) units")
    ap.add_argument("--dilate", type=int, default=1)
    a = ap.parse_args(argv)
    fmt = a.format or ("nerf" if (Path(a.data) / "transforms_train.json").is_file() else "idr")
    # NeRF folders keep the file's frame here so that "normalized" means the frame the file uses.
    ds = load_idr(a.data) if fmt == "idr" else load_nerf(a.data, scale_mat=None)
    pts = load_points(a.points)
    if a.frame == "world":
        pts = ds.to_normalized(pts)
    fr = fraction_inside(ds, pts, a.dilate)
    res = {"format": fmt, "views": len(ds), "dilate_px": a.dilate, "fraction_inside": float(np.mean(fr)),
           "worst_view": ds.names[int(np.argmin(fr))], "worst_fraction": float(np.min(fr))}  # fmt: skip
    print(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
