"""Score a mesh (or point cloud) against ground truth: Chamfer-L1/L2, normal consistency, F-score.

    python -m apps.evaluate PRED GT [--threshold 0.01 ...] [--transform scale_mat.json] [--n 100000]

PRED and GT are meshes (.ply/.obj/...) or point clouds (.npy [N, 3], or .ply points); a
`gt_normals.npy` next to a .npy GT is used for normal consistency. `--transform` (a JSON 4x4, e.g. a
dataset's scale_mat.json) maps both into another frame first (its inverse is applied: world ->
normalised); `--pred-transform` maps PRED alone by the matrix as given (e.g. scale_mat.json for a
mesh in the normalised frame scored against world-unit GT). A warning says when the two bounding
boxes disagree by more than `--frame-factor` (different frames?). Conventions in
`taichi_sdf.train.metrics`. Works on any method's output.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from taichi_sdf.core.errors import app_main
from taichi_sdf.train.metrics import evaluate_mesh, frame_mismatch, load_geometry, load_transform


@app_main("python -m apps.evaluate")
def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("pred")
    ap.add_argument("gt")
    ap.add_argument("--threshold", type=float, nargs="+", default=[0.01])
    ap.add_argument("--transform", default=None, help="JSON 4x4 (normalised -> world); both inputs are mapped by its inverse")
    ap.add_argument("--pred-transform", default=None, help="JSON 4x4 applied to PRED alone, as given (e.g. normalised -> world)")
    ap.add_argument("--frame-factor", type=float, default=1.5, help="warn when the bounding boxes differ by more than this")
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--out", default=None, help="write the metrics JSON here too")
    a = ap.parse_args(argv)
    if not a.frame_factor > 1:
        ap.error(f"--frame-factor: expected a number > 1, got {a.frame_factor}")
    T = np.linalg.inv(load_transform(a.transform)) if a.transform else None
    P = load_transform(a.pred_transform) if a.pred_transform else None
    pred = load_geometry(a.pred, P if T is None else T if P is None else T @ P)
    gt = load_geometry(a.gt, T)
    why = frame_mismatch(pred, gt, a.frame_factor)
    if why:
        print(
            f"warning: {a.pred} and {a.gt} look like different frames ({why}); if PRED is in a dataset's normalised "
            "frame, pass --pred-transform <dataset>/scale_mat.json (normalised -> world)",
            file=sys.stderr,
        )
    res = evaluate_mesh(pred, gt, n_points=a.n, thresholds=tuple(a.threshold))
    text = json.dumps(res, indent=2, default=float)
    print(text)
    if a.out:
        Path(a.out).write_text(text)
    return res


if __name__ == "__main__":
    main()
