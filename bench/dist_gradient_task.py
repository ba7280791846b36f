"""Exact vs approximate gradient on DIST's single-view task (issue 13, item 7), on a trained DeepSDF
experiment and its held-out shapes, measured side by side in one run.

    python -m bench.dist_gradient_task [--config configs/dist/cpu.yaml] [--shapes 6] [--buffers 1 3 5] [key=value ...]

For each held-out shape, at its initial code (fitted code + N(0, 0.1^2), as `apps.dist single-shape`)
and the view-0 observations of the preset: the gradient of DIST's full single-view loss (depth 10,
normal 5, masks 1, latent 1) w.r.t. the code with the exact implicit step and with DIST's approximate
gradient (buffer K). Prints the mean angle and relative norm difference |g - g_exact| / |g_exact| and
the median time of one forward + backward of each. The effect on the final Chamfer comes from
`python -m apps.dist single-shape --tag approximate render.gradient=approximate` beside the default run.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import time

from bench.common import machine, print_table


def main() -> None:
    from apps.dist.__main__ import DEFAULT_PRESET, prepare
    from apps.dist.common import initial_code, view_losses
    from apps.dist.config import DISTConfig
    from apps.dist.data import load_observations
    from apps.dist.render import render_sdf
    from apps.dist.shapes import fitted_code
    from taichi_sdf.train import losses
    from taichi_sdf.train.config import load_config

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=DEFAULT_PRESET)
    ap.add_argument("--shapes", type=int, default=6)
    ap.add_argument("--buffers", type=int, nargs="+", default=[1, 3, 5])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    cfg = load_config(DISTConfig, args.config, [f"shapes.max_shapes={args.shapes}", *args.overrides])
    model, shapes, paths, cache = prepare(cfg, progress=False)
    sc = cfg.single
    w = losses.DISTLossWeights(
        depth=sc.depth_weight, normal=sc.normal_weight, mask_gt=sc.mask_gt_weight, mask_out=sc.mask_out_weight
    )

    def grad(code0, obs, rc):
        code = code0.clone().requires_grad_(True)
        img = render_sdf(model.decoder.field(code), obs.cameras[0], rc)
        loss = sum(view_losses(img, obs.view(0), w, rc.eps, sc.inputs).values()) + sc.latent_weight * code.square().mean()
        loss.backward()
        return code.grad.detach()

    settings = [("implicit (exact)", cfg.render)] + [
        (f"approximate K={k}", dataclasses.replace(cfg.render, gradient="approximate", buffer_size=k)) for k in args.buffers
    ]
    stats = {name: {"angle": [], "rel": [], "ratio": [], "time": []} for name, _ in settings}
    for i, (shape, path) in enumerate(zip(shapes, paths)):
        obs = load_observations(path)
        code0 = initial_code(sc.init, sc.init_std, model.latent_size, fitted_code(model, shape, cache, cfg.seed * 1000 + i),
                             model.mean_code, cfg.seed * 1000 + i)  # fmt: skip
        g_exact = grad(code0, obs, cfg.render)
        for name, rc in settings:  # interleaved: every setting timed on the same shape in turn
            times = []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                g = grad(code0, obs, rc)
                times.append(time.perf_counter() - t0)
            cos = float((g @ g_exact) / (g.norm() * g_exact.norm()).clamp_min(1e-30))
            s = stats[name]
            s["angle"].append(math.degrees(math.acos(max(-1.0, min(1.0, cos)))))
            s["rel"].append(float((g - g_exact).norm() / g_exact.norm()))
            s["ratio"].append(float(g.norm() / g_exact.norm()))
            s["time"].append(statistics.median(times))
    rows = [[name, f"{statistics.mean(s['angle']):.2f}", f"{max(s['angle']):.2f}", f"{statistics.mean(s['rel']):.3f}",
             f"{statistics.mean(s['ratio']):.3f}", f"{1000 * statistics.median(s['time']):.0f}"] for name, s in stats.items()]  # fmt: skip
    print_table(
        f"DIST single-view loss gradient w.r.t. the code: {len(shapes)} held-out shapes of {cfg.shapes.experiment}, "
        f"{cfg.views.size} px, initial codes ({machine()})",
        ["gradient", "mean angle (deg)", "max angle", "|g - g_exact| / |g_exact|", "|g| / |g_exact|", "fwd+bwd ms (median)"],
        rows,
    )


if __name__ == "__main__":
    main()
