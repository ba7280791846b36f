"""Metrics of a fitted shape against its ground truth, in DeepSDF's normalised frame (the shape in the
unit sphere): DIST's Chamfer (`core/evaluation/eval_func.py`: the sum over both directions of the mean
squared nearest-neighbour distance, printed x1000) and the project's Chamfer-L1 / F-score@0.01."""

from __future__ import annotations

import numpy as np
import torch

from taichi_sdf.geometry.fast_mesh import fast_extract
from taichi_sdf.train.metrics import chamfer_distance, deepsdf_chamfer, fscore, sample_surface

from .config import EvalConfig

METRICS = ("chamfer_dist_x1000", "chamfer_l1", "fscore")


def shape_metrics(decoder, code: torch.Tensor, gt_points: np.ndarray, ec: EvalConfig, seed: int = 0) -> dict:
    """Mesh `decoder.field(code)` with DIST's fast mesher (a coarse grid at half the resolution, the
    network queried only near the surface, marching cubes at `ec.resolution` over [-1, 1]^3) and score
    `ec.points` samples on it against `gt_points [P, 3]` (normalised frame). A field that never
    crosses 0 gives {"status": "no surface"}."""
    try:
        mesh, _ = fast_extract(decoder.field(code.detach()), resolution=ec.resolution, coarse_resolution=ec.resolution // 2)
    except ValueError as e:
        return {"status": "no surface", "error": str(e)}
    if len(mesh.faces) == 0:
        return {"status": "no surface"}
    pts, _ = sample_surface(mesh, ec.points, seed=seed)
    cd = deepsdf_chamfer(pts, gt_points)
    l1 = chamfer_distance(pts, gt_points)
    f = fscore(pts, gt_points, (ec.fscore_threshold,))[ec.fscore_threshold][2]
    return {"status": "ok", "chamfer_dist_x1000": 1000 * cd, "chamfer_l1": l1["chamfer_l1"], "fscore": f, "mesh": mesh}


def summarize(rows: list[dict]) -> dict:
    ok = [r for r in rows if r.get("status") == "ok"]
    out: dict = {"shapes": len(rows), "evaluated": len(ok)}
    for m in (*METRICS, "seconds"):
        vals = np.array([r[m] for r in ok if m in r], dtype=np.float64)
        out[m] = {"mean": float(vals.mean()), "median": float(np.median(vals))} if len(vals) else None
    return out
