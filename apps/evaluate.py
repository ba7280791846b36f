"""Score a mesh (or point cloud) against ground truth: Chamfer-L1/L2, normal consistency, F-score.

    python -m apps.evaluate PRED GT [--threshold 0.01 ...] [--transform scale_mat.json] [--n 100000]

PRED and GT are meshes (.ply/.obj/...) or point clouds (.npy [N, 3], or .ply points); a
`gt_normals.npy` next to a .npy GT is used for normal consistency. `--transform` (a JSON 4x4, e.g. a
dataset's scale_mat.json) maps both into another frame first (its inverse is applied: world ->
normalised). Conventions in `taichi_sdf.train.metrics`. Works on any method's output.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from taichi_sdf.core.errors import app_main
from taichi_sdf.train.metrics import evaluate_mesh, load_geometry


@app_main("python -m apps.evaluate")
def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("pred")
    ap.add_argument("gt")
    ap.add_argument("--threshold", type=float, nargs="+", default=[0.01])
    ap.add_argument("--transform", default=None, help="JSON 4x4 (normalised -> world); both inputs are mapped by its inverse")
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--out", default=None, help="write the metrics JSON here too")
    a = ap.parse_args(argv)
    T = None
    if a.transform:
        T = np.linalg.inv(np.asarray(json.loads(Path(a.transform).read_text()), dtype=np.float64))
    res = evaluate_mesh(load_geometry(a.pred, T), load_geometry(a.gt, T), n_points=a.n, thresholds=tuple(a.threshold))
    text = json.dumps(res, indent=2, default=float)
    print(text)
    if a.out:
        Path(a.out).write_text(text)
    return res


if __name__ == "__main__":
    main()
