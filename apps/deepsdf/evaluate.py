"""DeepSDF evaluation (`evaluate.py` of facebookresearch/DeepSDF) plus Chamfer-L1 and F-score.

    python -m apps.deepsdf evaluate [--experiment DIR | --config PRESET] [--checkpoint latest|EPOCH]
                                    [--split test|train|PATH] [--partial] [--tag NAME] [key=value ...]

Per reconstructed shape of the split:
- chamfer: DeepSDF's Chamfer, mean squared NN distance reconstruction -> GT plus GT -> reconstruction,
  between `evaluate.points` (30k) points sampled on the reconstructed mesh and the 30k GT
  SurfaceSamples, both in the mesh's units (as the original; its README reports it x1000);
- chamfer_l1 (0.5 * (accuracy + completeness), Euclidean) and F-score at `evaluate.fscore_threshold`
  (0.01), computed in the normalised frame (shape in the unit sphere), where the threshold is 1% of
  the bounding radius whatever the mesh's units.
Writes Evaluations/<epoch>[_partial][_<tag>]/chamfer.csv (one row per shape) and metrics.json (per shape and
mean/median summary), and prints the summary. Shapes without a mesh (no surface found) are counted
as failed and left out of the means.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path

import numpy as np

from taichi_sdf.core.errors import app_main
from taichi_sdf.data.deepsdf import Instance, load_normalization, load_surface_samples, normalize
from taichi_sdf.train.checkpoint import atomic_write_bytes, load_checkpoint
from taichi_sdf.train.metrics import chamfer_distance, deepsdf_chamfer, fscore, sample_surface

from .config import DeepSDFConfig
from .reconstruct import experiment_config, mesh_file, reconstruction_dir, split_file

METRICS = ("chamfer_x1000", "chamfer_l1", "fscore")


def evaluate_shape(mesh, gt_points: np.ndarray, offset: np.ndarray, scale: float, n_points: int = 30000,
                   threshold: float = 0.01, seed: int = 0) -> dict[str, float]:  # fmt: skip
    """Metrics of one reconstruction: `mesh` and `gt_points [M, 3]` in mesh units; (offset, scale) the
    shape's NormalizationParameters. See the module docstring for the definitions."""
    pts, _ = sample_surface(mesh, n_points, seed=seed)
    cd = deepsdf_chamfer(pts, gt_points)
    pts_n, gt_n = normalize(pts, offset, scale), normalize(gt_points, offset, scale)
    l1 = chamfer_distance(pts_n, gt_n)
    p, r, f = fscore(pts_n, gt_n, (threshold,))[threshold]
    return {"chamfer": cd, "chamfer_x1000": 1000 * cd, "chamfer_l1": l1["chamfer_l1"], "accuracy": l1["accuracy"],
            "completeness": l1["completeness"], "precision": p, "recall": r, "fscore": f}  # fmt: skip


def summarize(rows: list[dict]) -> dict:
    ok = [r for r in rows if r.get("status") == "ok"]
    out: dict = {"shapes": len(rows), "evaluated": len(ok), "failed": len(rows) - len(ok)}
    for m in METRICS:
        vals = np.array([r[m] for r in ok], dtype=np.float64)
        out[m] = {"mean": float(vals.mean()), "median": float(np.median(vals))} if len(vals) else {"mean": None, "median": None}
    return out


def format_table(summary: dict, title: str) -> str:
    lines = [title, f"{'metric':<16}{'mean':>12}{'median':>12}"]
    for m in METRICS:
        s = summary[m]
        fmt = (lambda v: f"{v:12.4f}") if s["mean"] is not None else (lambda v: f"{'-':>12}")
        lines.append(f"{m:<16}{fmt(s['mean'])}{fmt(s['median'])}")
    lines.append(f"shapes: {summary['evaluated']} evaluated, {summary['failed']} failed (no mesh)")
    return "\n".join(lines)


def checkpoint_epoch(experiment: Path, checkpoint: str) -> int:
    if checkpoint.isdigit():
        return int(checkpoint)
    return int(load_checkpoint(experiment / "checkpoints" / f"{checkpoint}.pt")["epoch"])


def evaluate_split(cfg: DeepSDFConfig, checkpoint: str = "latest", split: str = "test", partial: bool = False,
                   tag: str = "") -> dict:  # fmt: skip
    import trimesh

    experiment = Path(cfg.out)
    epoch = checkpoint_epoch(experiment, checkpoint)
    recon = reconstruction_dir(experiment, epoch, partial, tag)
    if not recon.is_dir():
        raise FileNotFoundError(f"{recon}: no reconstructions for epoch {epoch}; run `python -m apps.deepsdf reconstruct` first")
    instances: list[Instance] = [it for it in _instances(cfg, split)]
    ev = cfg.evaluate
    rows = []
    for it in instances:
        row: dict = {"dataset": it.dataset, "class": it.class_name, "instance": it.instance}
        path = mesh_file(recon, it)
        if not path.is_file():
            row["status"] = "no mesh"
        else:
            mesh = trimesh.load(path, process=False, force="mesh")
            gt = load_surface_samples(it.surface_samples(cfg.data.root))
            offset, scale = load_normalization(it.normalization(cfg.data.root))
            if len(mesh.faces) == 0:
                row["status"] = "no mesh"
            else:
                row.update(evaluate_shape(mesh, gt, offset, scale, ev.points, ev.fscore_threshold, ev.seed), status="ok")
        rows.append(row)
    summary = summarize(rows)
    out_dir = experiment / "Evaluations" / recon.name
    result = {"epoch": epoch, "partial": partial, "reconstructions": str(recon), "fscore_threshold": ev.fscore_threshold,
              "points": ev.points, "summary": summary, "shapes": rows}  # fmt: skip
    atomic_write_bytes(out_dir / "metrics.json", json.dumps(result, indent=1).encode())
    buf = io.StringIO()
    fields = ["dataset", "class", "instance", "status", "chamfer", "chamfer_x1000", "chamfer_l1", "fscore", "precision", "recall"]
    w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    atomic_write_bytes(out_dir / "chamfer.csv", buf.getvalue().encode())
    return result


def _instances(cfg: DeepSDFConfig, split: str) -> list[Instance]:
    from taichi_sdf.data.deepsdf import load_split

    instances = load_split(split_file(cfg, split))
    if not instances:
        raise ValueError(f"{split_file(cfg, split)}: the split lists no instances")
    return instances


@app_main("python -m apps.deepsdf evaluate")
def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m apps.deepsdf evaluate", description="Chamfer / F-score of reconstructions.")
    ap.add_argument("--checkpoint", default="latest", help="'latest' or the epoch whose reconstructions to evaluate")
    ap.add_argument("--split", default="test", help="test, train, or a split JSON file")
    ap.add_argument("--partial", action="store_true", help="evaluate the reconstructions from partial samples")
    ap.add_argument("--tag", default="", help="the --tag given to reconstruct")
    cfg, args = experiment_config(ap, list(sys.argv[1:] if argv is None else argv))
    result = evaluate_split(cfg, args.checkpoint, args.split, args.partial, args.tag)
    title = f"DeepSDF evaluation, epoch {result['epoch']}{' (partial)' if args.partial else ''}: {result['reconstructions']}"
    print(format_table(result["summary"], title))
    return result


if __name__ == "__main__":
    main()
