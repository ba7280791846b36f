"""python -m apps.dist MODE [--config PRESET] [--tag NAME] [--overwrite] [key=value ...]

DIST (Liu et al., CVPR 2020): optimise DeepSDF shape codes (and cameras) so that sphere-traced renders
match observations. Every mode runs on held-out shapes of a trained DeepSDF experiment
(`shapes.experiment`, default outputs/deepsdf: `python -m apps.deepsdf all` makes it on the built-in
chairs), whose observations it renders once with the project's rasterizer (`<out>/views/`).

  data            render the observations only (depth, normals, silhouettes, RGB, cameras)
  single-shape    shape code from one view's depth + normal + silhouette (`single.inputs`, sparse /
                  noisy depth through `views.depth_keep` / `views.depth_noise`), vs the DeepSDF code
                  fitted to 3D samples (upper bound) and the mean code (lower bound)
  single-camera   camera pose from a far initialisation with the shape fixed, over a sweep of errors
  multi-view      shape code from a photometric warp loss between views + silhouettes
                  (`multi.similarity=true`: also a Sim(3) from a rough initialisation)
  texture         a colour decoder + colour codes trained on the training shapes' coloured
                  surfaces, held-out colour codes fitted from RGB views, a moving-light demo

Outputs in `<out>/<mode>[_<tag>]/`: metrics.json (per shape and mean / median), shapes/*.json (a rerun
resumes), images/*.png (GT | initial | final). Defaults: configs/dist/cpu.yaml.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from taichi_sdf.core.errors import app_main

DEFAULT_PRESET = "configs/dist/cpu.yaml"
MODES = ("data", "single-shape", "single-camera", "multi-view", "texture")


def prepare(cfg, progress: bool):
    """(model, shapes, observation paths, code cache) for a run of `cfg`."""
    import torch

    from taichi_sdf.core.runtime import set_torch_threads

    from .data import make_observations
    from .shapes import held_out_shapes, load_shape_model

    set_torch_threads(cfg.torch_threads)
    torch.manual_seed(cfg.seed)
    model = load_shape_model(cfg.shapes, torch.device("cpu"))
    shapes = held_out_shapes(model, cfg.shapes)
    paths = make_observations(shapes, cfg.views, Path(cfg.out), progress=progress)
    from .common import code_cache

    return model, shapes, paths, code_cache(cfg, model)


def run_mode(mode: str, cfg, tag: str = "", overwrite: bool = False, progress: bool = True) -> dict:
    from tqdm import tqdm

    from .common import RunFolder, settings_of
    from .data import load_observations
    from .shapes import fitted_code

    model, shapes, paths, cache = prepare(cfg, progress)
    if mode == "data":
        print(f"dist: {len(paths)} observation files in {paths[0].parent}")
        return {"views": [str(p) for p in paths]}
    section = {"single-shape": "single", "single-camera": "camera", "multi-view": "multi", "texture": "texture"}[mode]
    run = RunFolder(Path(cfg.out), mode, settings_of(cfg, section), tag, overwrite)
    if mode == "multi-view" and cfg.multi.data is not None:  # one code for a dataset folder
        from .multi_view import run_dataset

        row = run_dataset(cfg, model, run.path)
        print(
            f"dist multi-view on {cfg.multi.data}: {run.path} "
            + json.dumps({k: v for k, v in row.items() if k in ("chamfer_l1", "fscore", "test_mask_iou", "seconds")})
        )
        return row
    if mode == "texture":  # its own loop: one colour decoder for all shapes, then per-shape fits
        from .texture import run_texture

        summary = run_texture(cfg, model, shapes, paths, run.path, progress)
        print(format_summary(mode, summary, run.path))
        return summary
    rows = []
    bar = tqdm(list(zip(shapes, paths)), desc=f"dist {mode}", unit="shape", disable=not progress, dynamic_ncols=True)
    for i, (shape, path) in enumerate(bar):
        row = run.done(shape.name)
        if row is None:
            obs = load_observations(path)
            fitted = fitted_code(model, shape, cache, seed=cfg.seed * 1000 + i)
            if mode == "single-shape":
                from .single_shape import run_shape
            elif mode == "single-camera":
                from .single_camera import run_shape
            else:
                from .multi_view import run_shape
            row = run_shape(model, shape, obs, cfg, fitted, i, run.path / "images")
            run.save(shape.name, row)
        rows.append(row)
    summary = summary_of(mode, rows)
    run.write_json("metrics.json", {"summary": summary, "shapes": rows})
    print(format_summary(mode, summary, run.path))
    return summary


def summary_of(mode: str, rows: list[dict]) -> dict:
    from .evaluate import summarize

    if mode == "single-camera":
        from .single_camera import summarize_camera

        return summarize_camera(rows)
    out = {}
    for key in ("dist", "initial", "deepsdf_3d", "mean_code"):
        out[key] = summarize([{**r[key], "seconds": r["seconds"]} if key == "dist" else r[key] for r in rows])
    return out


def format_summary(mode: str, summary: dict, where: Path) -> str:
    if mode == "texture":
        lines = [f"dist texture: {where}", f"{'codes':<14}{'PSNR mask':>10}{'PSNR img':>10}{'L1':>8}   (held-out views, means)"]
        for key in ("initial", "fitted", "oracle_albedo"):
            s = summary.get(key)
            if s:
                lines.append(f"{key:<14}{s['psnr']:10.2f}{s['psnr_image']:10.2f}{s['l1']:8.4f}")
        return "\n".join(lines)
    if mode == "single-camera":
        from .single_camera import format_camera

        return format_camera(summary, where)
    lines = [f"dist {mode}: {where}", f"{'codes':<12}{'CD x1000':>10}{'CD-L1':>10}{'F@0.01':>9}{'s/shape':>9}   (means)"]
    for key, s in summary.items():
        if not s or s.get("chamfer_l1") is None:
            lines.append(f"{key:<12}{'-':>10}")
            continue
        sec = f"{s['seconds']['mean']:9.1f}" if s.get("seconds") else f"{'':>9}"
        lines.append(
            f"{key:<12}{s['chamfer_dist_x1000']['mean']:10.3f}{s['chamfer_l1']['mean']:10.4f}{s['fscore']['mean']:9.3f}{sec}"
        )
    return "\n".join(lines)


@app_main("python -m apps.dist")
def main(argv=None) -> dict:
    from taichi_sdf.train.config import add_config_args, load_config
    from taichi_sdf.train.trainer import exit_on_user_error

    from .config import DISTConfig

    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(
        prog="python -m apps.dist", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("mode", choices=MODES)
    ap.add_argument("--tag", default="", help="a separate run folder <mode>_<tag>")
    ap.add_argument("--overwrite", action="store_true", help="replace a run folder made with other settings")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    add_config_args(ap, DISTConfig)
    args = ap.parse_intermixed_args(argv)
    try:
        cfg = load_config(DISTConfig, args.config or DEFAULT_PRESET, args.overrides)
    except (ValueError, FileNotFoundError) as e:
        ap.error(str(e))
    t0 = time.time()
    with exit_on_user_error(f"python -m apps.dist {args.mode}"):
        out = run_mode(args.mode, cfg, args.tag, args.overwrite, progress=not args.quiet)
    print(f"dist {args.mode}: {time.time() - t0:.0f} s")
    return out


if __name__ == "__main__":
    main()
