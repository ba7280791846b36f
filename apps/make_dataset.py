"""Write a multi-view dataset (images, masks, cameras, ground truth) of a built-in scene.

    python -m apps.make_dataset --scene csg --views 48 --size 64 --format idr --out data/csg_idr

The scene (an SDF of `taichi_sdf.scenes`) is rendered by the fused sphere tracer with a spatially
varying albedo under a fixed sun + ambient light (Lambertian: view-independent, like
../shared/data/spot), from cameras on a Fibonacci sphere of radius 2.75 with a 40 degree field of
view. World units differ from the normalised frame by `scale_mat` (a scale and an offset), so
loaders and mesh export are exercised. Ground truth in world units: `gt_points.npy`,
`gt_normals.npy` (100k surface samples) and `gt_mesh.ply`; `splits.json` lists train/test views.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch

import taichi_sdf
from taichi_sdf import cameras
from taichi_sdf.datasets import MultiViewDataset, save_idr, save_nerf
from taichi_sdf.meshing import extract_mesh, save_mesh
from taichi_sdf.metrics import sample_surface
from taichi_sdf.scenes import SCENES, make_scene
from taichi_sdf.sphere_trace import sphere_trace

DATASET_VERSION = 1  # bump when the rendering below changes (invalidates cached built-in datasets)
# normalised -> world: x_world = 1.5 x + (0.1, -0.2, 0.3)
DEFAULT_SCALE_MAT = torch.tensor(
    [[1.5, 0, 0, 0.1], [0, 1.5, 0, -0.2], [0, 0, 1.5, 0.3], [0, 0, 0, 1.0]], dtype=torch.float64
)
SUN = (-0.3, -1.0, -0.5)  # direction of travel, normalised frame (as in the spot data)


def albedo(points: torch.Tensor) -> torch.Tensor:
    """A smooth colour pattern `[N, 3]` in [0.15, 0.85] so that RGB losses see texture."""
    phase = torch.tensor([0.0, 2.1, 4.2], dtype=points.dtype, device=points.device)
    return 0.5 + 0.35 * torch.sin(5.0 * points[:, :1] + 3.0 * points[:, 1:2] - 2.0 * points[:, 2:3] + phase)


def shade(points: torch.Tensor, normals: torch.Tensor) -> torch.Tensor:
    L = -torch.tensor(SUN, dtype=points.dtype, device=points.device)
    L = L / L.norm()
    return (albedo(points) * (0.35 + 0.65 * (normals * L).sum(-1, keepdim=True).clamp_min(0))).clamp(0, 1)


def render_scene_dataset(scene: str = "csg", views: int = 48, size: int = 64, distance: float = 2.75,
                         fov_x_deg: float = 40.0, scale_mat: torch.Tensor = DEFAULT_SCALE_MAT,
                         test_every: int = 8, test_offset: int = 3) -> MultiViewDataset:  # fmt: skip
    info = taichi_sdf.init()
    field = make_scene(scene, device=info.device)
    cams = cameras.fibonacci_cameras(views, distance, size, size, fov_x_deg)
    o, d = cams.to(info.device, torch.float32).image_rays()
    with torch.no_grad():
        r = sphere_trace(field, o.reshape(-1, 3).contiguous(), d.reshape(-1, 3).contiguous())
    rgb = torch.where(r.hit[:, None], shade(r.points, r.normals), torch.zeros_like(r.points))
    test = list(range(test_offset, views, test_every))
    return MultiViewDataset(
        images=rgb.reshape(views, size, size, 3).float().cpu(),
        masks=r.hit.reshape(views, size, size).cpu(),
        cameras=cams,
        scale_mat=scale_mat.double(),
        names=[f"{i:03d}" for i in range(views)],
        splits={"train": [i for i in range(views) if i not in test], "test": test},
        source=f"builtin:{scene}",
    )


def ground_truth(scene: str, scale_mat: torch.Tensor, n_points: int = 100_000, resolution: int = 256):
    """(mesh, points [n, 3], normals [n, 3]) of a built-in scene's surface, in world units."""
    info = taichi_sdf.init()
    field = make_scene(scene, device=info.device)
    mesh = extract_mesh(lambda x: field.values(x.contiguous()), resolution=resolution, device=info.device,
                        T_world_field=scale_mat.numpy())  # fmt: skip
    pts, nrm = sample_surface(mesh, n_points, seed=0)
    return mesh, np.asarray(pts), np.asarray(nrm)


def write_dataset(ds: MultiViewDataset, out: str | Path, fmt: str = "idr", scene: str | None = None) -> Path:
    out = Path(out)
    if fmt == "idr":
        save_idr(ds, out)
    elif fmt == "nerf":
        save_nerf(ds, out)
    else:
        raise ValueError(f"format: expected 'idr' or 'nerf', got {fmt!r}")
    (out / "splits.json").write_text(json.dumps(ds.splits))
    if scene is not None:
        mesh, pts, nrm = ground_truth(scene, ds.scale_mat)
        np.save(out / "gt_points.npy", pts)
        np.save(out / "gt_normals.npy", nrm)
        save_mesh(mesh, out / "gt_mesh.ply")
        (out / "scale_mat.json").write_text(json.dumps(ds.scale_mat.tolist()))
    return out


def main(argv=None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scene", default="csg", choices=sorted(SCENES))
    ap.add_argument("--views", type=int, default=48)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--format", default="idr", choices=["idr", "nerf"])
    ap.add_argument("--distance", type=float, default=2.75)
    ap.add_argument("--fov", type=float, default=40.0)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    if a.views < 1 or a.size < 8:
        ap.error("--views must be >= 1 and --size >= 8")
    if not math.isfinite(a.distance) or a.distance <= 1.0:
        ap.error("--distance must be > 1 (cameras outside the unit sphere)")
    ds = render_scene_dataset(a.scene, a.views, a.size, a.distance, a.fov)
    out = write_dataset(ds, a.out, a.format, a.scene)
    print(f"wrote {a.format} dataset of '{a.scene}' ({a.views} views, {a.size}x{a.size}) to {out}")
    return out


if __name__ == "__main__":
    main()
