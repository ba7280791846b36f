"""Load time of a COLMAP model, text vs binary: the model files alone and the whole scene folder.

    python -m bench.colmap_load [--views 100] [--size 64] [--points 10000] [--repeat 3]

The scene is the synthetic sphere (`sphere_dataset`) seen from `--views` cameras, written by
`save_colmap` with `--points` surface points whose tracks are the views whose mask holds them (no
occlusion test, so each point is seen by about half the views: more observations than a real
reconstruction of the same size). Columns: the files' size, `read_colmap_model` (parse only) and
`load_colmap` (parse + images + masks + visual-hull normalisation) median wall times.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from bench.common import machine, print_table, timeit
from taichi_sdf.data.multiview import load_colmap, save_colmap, sphere_dataset
from taichi_sdf.data.multiview.colmap_model import read_colmap_model


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--views", type=int, default=100)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--points", type=int, default=10000)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args(argv)
    import taichi_sdf

    taichi_sdf.init()
    ds = sphere_dataset(n_views=a.views, width=a.size, height=a.size, radius=0.5)
    d = np.random.default_rng(0).normal(size=(a.points, 3))
    points = 0.5 * d / np.linalg.norm(d, axis=1, keepdims=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for binary in (False, True):
            folder = save_colmap(ds, Path(tmp) / ("bin" if binary else "txt"), binary=binary, points=points)
            sparse = folder / "sparse" / "0"
            model = read_colmap_model(sparse)
            n_obs = sum(len(im.xys) for im in model.images.values())
            size = sum(p.stat().st_size for p in sparse.iterdir()) / 2**20
            t_model = timeit(lambda s=sparse: read_colmap_model(s), warmup=1, repeat=a.repeat)
            t_scene = timeit(lambda f=folder: load_colmap(f), warmup=1, repeat=a.repeat)
            rows.append(["binary" if binary else "text", len(model.images), len(model.points), n_obs, size, t_model, t_scene])
    print_table(
        f"COLMAP model load ({a.views} views of {a.size}x{a.size}; {machine()})",
        ["form", "images", "points", "observations", "files MiB", "read_colmap_model s", "load_colmap s"],
        rows,
    )


if __name__ == "__main__":
    main()
