"""Write a multi-view dataset (images, masks, cameras, ground truth) of a built-in scene or a mesh.

    python -m apps.make_dataset --scene csg --views 48 --size 64 --format idr --out data/csg_idr
    python -m apps.make_dataset --mesh spot.obj [--texture spot_texture.png] [--ssaa 2] --out data/spot_idr
    python -m apps.make_dataset --scene csg --format colmap|nerfstudio --out data/csg_colmap

Built-in scenes (SDFs of `taichi_sdf.implicit.scenes`) are rendered by the fused sphere tracer with a
spatially varying albedo under a fixed sun + ambient light (Lambertian: view-independent, like
../shared/data/spot), from cameras on a Fibonacci sphere of radius 2.75 with a 40 degree field of
view. World units differ from the normalised frame by `scale_mat` (a scale and an offset), so
loaders and mesh export are exercised. Ground truth in world units: `gt_points.npy`,
`gt_normals.npy` (100k surface samples) and `gt_mesh.ply`; `splits.json` lists train/test views.

Meshes (`--mesh`: OBJ, PLY, GLB, ... anything trimesh reads) go through the same cameras and light:
- World units are the mesh's own units. The mesh is normalised into the cameras' frame by the
  similarity `scale_mat` (normalised -> mesh frame: scale s and offset c, the bounding-box centre,
  with s = 1.1 x the largest distance of a vertex from c), so the object fills ~90% of the unit
  sphere and the IDR app's metrics against the ground truth are in mesh units.
- Albedo: the texture image of trimesh's TextureVisuals with the mesh's uvs (bilinear; clamp-to-edge
  addressing when every uv lies in [0, 1], i.e. an atlas, else repeat, i.e. a tiled material), else
  vertex colours, else a constant grey (0.7). An OBJ whose .mtl is missing can be given its image
  with `--texture`; without it a sibling image named `<stem>_texture.png` / `<stem>.png` (or .jpg)
  is used when the mesh has uvs (the run says so).
- Rendering: `taichi_sdf.render_mesh` with the hard rasterizer, smooth normals (computed on the mesh
  welded by position, so seams of the uv layout do not show; `--normals flat` for faceted objects),
  Lambert with the built-in SUN and ambient (view-independent). Anti-aliasing by supersampling:
  colours are rendered at `--ssaa` times the resolution and box-filtered (edge pixels blend with the
  black background); masks and depth come from one sample at each pixel centre (like the
  sphere-traced datasets). The rasterizer draws both sides of every face; normals follow the
  faces' winding (counter-clockwise from outside), so a mesh with flipped faces shades dark there.
- Extra output: depth maps, `[H, W]` float32 camera z in world units (0 on background), one .npy
  per image: IDR `depth/NNN.npy` next to `image/NNN.png`; NeRF `{split}/r_K_depth.npy` next to
  `{split}/r_K.png`; COLMAP / nerfstudio `depth/<image stem>.npy`.
- COLMAP (`sparse/0/*.txt`, `images/`, `masks/`) and nerfstudio (`transforms.json`, `sparse_pc.ply`)
  exports carry 5000 ground-truth surface samples as their sparse points, in world units.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

from taichi_sdf.core.errors import app_main
from taichi_sdf.data.builtin import (
    FORMATS,
    load_mesh_asset,
    mesh_ground_truth,
    render_mesh_dataset,
    render_scene_dataset,
    write_dataset,
)
from taichi_sdf.implicit.scenes import SCENES


@app_main("python -m apps.make_dataset")
def main(argv=None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scene", default=None, choices=sorted(SCENES), help="built-in scene (default csg)")
    ap.add_argument("--mesh", default=None, help="render this mesh file instead (OBJ, PLY, GLB, ...)")
    ap.add_argument("--texture", default=None, help="texture image for a mesh with uvs but no material image")
    ap.add_argument("--ssaa", type=int, default=2, help="mesh: supersampling factor per axis (1 = off)")
    ap.add_argument("--normals", default="smooth", choices=["smooth", "flat"], help="mesh: shading normals")
    ap.add_argument("--views", type=int, default=48)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--format", default="idr", choices=list(FORMATS))
    ap.add_argument("--distance", type=float, default=2.75)
    ap.add_argument("--fov", type=float, default=40.0)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    if a.views < 1 or a.size < 8:
        ap.error("--views must be >= 1 and --size >= 8")
    if not math.isfinite(a.distance) or a.distance <= 1.0:
        ap.error("--distance must be > 1 (cameras outside the unit sphere)")
    if a.mesh is not None:
        if a.scene is not None:
            ap.error("give --scene or --mesh, not both")
        if not 1 <= a.ssaa <= 8:
            ap.error("--ssaa must be in [1, 8]")
        t0 = time.perf_counter()
        asset = load_mesh_asset(a.mesh, a.texture)
        ds, depth = render_mesh_dataset(asset, a.views, a.size, a.distance, a.fov, a.ssaa, a.normals,
                                        source=f"mesh:{a.mesh}")  # fmt: skip
        t1 = time.perf_counter()
        out = write_dataset(ds, a.out, a.format, gt=mesh_ground_truth(asset), depth=depth)
        print(f"wrote {a.format} dataset of {a.mesh} ({len(asset.faces)} faces, albedo: {asset.albedo}; {a.views} "
              f"views, {a.size}x{a.size}, ssaa {a.ssaa}) to {out}: rendered in {t1 - t0:.1f} s, "
              f"written in {time.perf_counter() - t1:.1f} s")  # fmt: skip
        return out
    if a.texture is not None:
        ap.error("--texture needs --mesh")
    scene = a.scene or "csg"
    ds = render_scene_dataset(scene, a.views, a.size, a.distance, a.fov)
    out = write_dataset(ds, a.out, a.format, scene)
    print(f"wrote {a.format} dataset of '{scene}' ({a.views} views, {a.size}x{a.size}) to {out}")
    return out


if __name__ == "__main__":
    main()
