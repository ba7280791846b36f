"""`run_single_shape`: DIST's shape-code optimisation from one view's depth + normal + silhouette (or
any subset, from sparse / noisy depth, or from several views), for each held-out shape, against the
DeepSDF code fitted to full 3D samples (upper bound) and the mean training code (lower bound)."""

from __future__ import annotations

import time

import torch

from .common import ViewWeights, depth_row, initial_code, normal_row, view_losses, write_comparison
from .config import DISTConfig
from .data import Observations
from .evaluate import shape_metrics
from .render import render_sdf


def fit_code(decoder, obs: Observations, cfg: DISTConfig, code0: torch.Tensor, callback=None) -> tuple[torch.Tensor, list[dict]]:
    """Optimise a code `[L]` from `code0` so that the renders of `cfg.single.views` views of `obs` match
    them (DIST's losses and weights; Adam). Returns the code and the per-iteration loss rows."""
    sc = cfg.single
    w = ViewWeights(sc.depth_weight, sc.normal_weight, sc.mask_gt_weight, sc.mask_out_weight)
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
            img = render_sdf(decoder.field(code), obs.cameras[v], cfg.render, normals=need_normals)
            evals += img.evals
            for k, val in view_losses(img, obs.view(v), w, cfg.render.eps, sc.inputs).items():
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
