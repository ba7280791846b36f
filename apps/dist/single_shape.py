"""`run_single_shape`: DIST's shape-code optimisation from one view's depth + normal + silhouette (or
any subset, from sparse / noisy depth, or from several views), for each held-out shape, against the
DeepSDF code fitted to full 3D samples (upper bound) and the mean training code (lower bound)."""

from __future__ import annotations

import dataclasses
import time

import torch

from taichi_sdf.train import losses

from .common import depth_row, initial_code, normal_row, view_losses, write_comparison
from .config import DISTConfig
from .data import Observations
from .evaluate import shape_metrics
from .render import render_sdf

MULTISCALE_BUFFERS = {1: 1, 2: 3, 4: 5}  # run_single_shape.py --multiscale: buffer sizes per renderer


def downsample_view(obs: Observations, factor: int) -> Observations:
    """Observation view 0 at 1/`factor` resolution, as DIST's `downsize_img_tensor` (area averages): the
    mask where more than half a block is covered, depth and normals averaged over the block's covered
    (depth: known) pixels."""
    pool = lambda x: torch.nn.functional.avg_pool2d(x, factor)  # noqa: E731  [C, H, W] -> [C, H/f, W/f]
    m = obs.mask[0].to(obs.depth.dtype)[None]
    known = (m * (obs.depth[0] > 0))[None][0]
    cover = pool(m)[0]
    depth = pool(obs.depth[0][None] * known)[0] / pool(known)[0].clamp_min(1e-12)
    clean = pool(obs.depth_clean[0][None] * m)[0] / cover.clamp_min(1e-12)
    normal = (pool(obs.normal[0].permute(2, 0, 1) * m) / cover.clamp_min(1e-12)).permute(1, 2, 0)
    rgb = pool(obs.rgb[0].permute(2, 0, 1)).permute(1, 2, 0)
    cam = obs.cameras.resized(obs.cameras.width // factor, obs.cameras.height // factor)
    return Observations(cam, rgb[None], (cover > 0.5)[None], depth[None], clean[None], normal[None])


def scaled_views(obs: Observations, cfg: DISTConfig):
    """[(observations, render settings)] of one view: itself, plus 1/2 and 1/4 resolution with DIST's
    buffer sizes when `single.multiscale` (each renderer's loss weighs 1, as `optimize_single_view`)."""
    if not cfg.single.multiscale:
        return [(obs, cfg.render)]
    out = []
    for f, k in MULTISCALE_BUFFERS.items():
        rc = dataclasses.replace(cfg.render, buffer_size=k)
        out.append((obs if f == 1 else downsample_view(obs, f), rc))
    return out


def fit_code(decoder, obs: Observations, cfg: DISTConfig, code0: torch.Tensor, callback=None) -> tuple[torch.Tensor, list[dict]]:
    """Optimise a code `[L]` from `code0` so that the renders of `cfg.single.views` views of `obs` match
    them (DIST's losses and weights; Adam). Returns the code and the per-iteration loss rows."""
    sc = cfg.single
    w = losses.DISTLossWeights(
        depth=sc.depth_weight, normal=sc.normal_weight, mask_gt=sc.mask_gt_weight, mask_out=sc.mask_out_weight
    )
    code = code0.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([code], lr=sc.lr)
    views = min(sc.views, len(obs))
    need_normals = "normal" in sc.inputs and sc.normal_weight > 0
    history = []
    for it in range(sc.iterations):
        t0 = time.perf_counter()
        terms: dict[str, torch.Tensor] = {}
        evals = 0
        for v in range(views):
            for obs_s, rc in scaled_views(obs.view(v), cfg):
                img = render_sdf(decoder.field(code), obs_s.cameras, rc, normals=need_normals)
                evals += img.evals
                for k, val in view_losses(img, obs_s, w, rc.eps, sc.inputs).items():
                    terms[k] = terms.get(k, 0) + val / views
        terms["latent"] = sc.latent_weight * (code.square().mean())
        loss = sum(terms.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        row = {"iteration": it + 1, "loss": float(loss.detach()), **{k: float(v.detach()) for k, v in terms.items()},
               "evals": evals, "seconds": time.perf_counter() - t0}  # fmt: skip
        history.append(row)
        if callback is not None:
            callback(row)
    return code.detach(), history


def comparison_image(decoder, obs: Observations, cfg: DISTConfig, codes: list[torch.Tensor]):
    """Rows depth / normals: GT | each code's render, for view 0."""
    depths, normals = [(obs.depth_clean[0], obs.mask[0])], [(obs.normal[0], obs.mask[0])]
    for c in codes:
        with torch.no_grad():
            img = render_sdf(decoder.field(c), obs.cameras[0], cfg.render, normals=False)
        n = img.normal if img.mask.any() else torch.zeros_like(obs.normal[0])
        depths.append((img.depth, img.mask))
        normals.append((n, img.mask))
    return [depth_row(depths), normal_row(normals)]


def run_shape(model, shape, obs: Observations, cfg: DISTConfig, fitted: torch.Tensor, index: int, images_dir) -> dict:
    """Fit one shape and score the initial, final, fitted-3D and mean codes."""
    dec = model.decoder
    code0 = initial_code(
        cfg.single.init, cfg.single.init_std, model.latent_size, fitted, model.mean_code, cfg.seed * 1000 + index
    )
    t0 = time.time()
    code, history = fit_code(dec, obs, cfg, code0)
    seconds = time.time() - t0
    row = {"shape": shape.name, "seconds": seconds, "iterations": len(history),
           "iterations_per_second": len(history) / max(seconds, 1e-9),
           "final_loss": history[-1] if history else None}  # fmt: skip
    for key, c in (("dist", code), ("initial", code0), ("deepsdf_3d", fitted), ("mean_code", model.mean_code)):
        m = shape_metrics(dec, c, shape.surface, cfg.eval, seed=index)
        m.pop("mesh", None)
        row[key] = m
    row["status"] = row["dist"]["status"]
    with torch.no_grad():
        img = comparison_image(dec, obs, cfg, [code0, code, fitted])
    write_comparison(images_dir / f"{shape.name}.png", img)
    return row
