"""DIST's approximate depth gradient next to the exact implicit one: one table, measured in one run.

    python -m bench.dist_gradient [--quick] [--size 64] [--latent 256] [--width 512] [--arch cpu|cuda]

A DeepSDF decoder (`models/deepsdf.py`, 8 hidden layers, latent code, random init, eval mode) made
sphere-like: f(x) = |x| - 0.5 + bump * (decoder(z, x) - m) / s, with m, s the decoder's mean and spread on
the unit ball at z = 0, so that the bumps are about `bump` high. Rays: `size x size` pixels from distance 2.4 (40 degree field of
view). Codes drawn as DeepSDF initialises them (N(0, 1/latent)); target: the depth of another such code
(exact march, no grad). Loss: the L1 depth
error mean |t(z) - t_target| over the rays that hit in both renders. For each gradient (the exact implicit
step; DIST's approximate one with buffer K = 1, 3 (DIST's single-view demo), 5 (`SDFRenderer` default))
it prints the angle and the relative norm difference |g - g_exact| / |g_exact| of dL/dz, the norm ratio,
the mean number of filled buffer slots on the loss rays, and median wall times of one forward + backward
(march_field, loss, backward) and of the differentiable step + loss + backward alone (on a march done
once), all with 1 torch thread, interleaved in this run.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from functools import partial

import torch

import taichi_sdf
from bench.common import machine, print_table, sync
from taichi_sdf.cameras import camera as cameras
from taichi_sdf.implicit.dist_gradient import approximate_trace_result
from taichi_sdf.implicit.implicit_diff import differentiable_field, trace_result
from taichi_sdf.implicit.marchers.base import FieldEvaluator
from taichi_sdf.implicit.marchers.dist import DISTMarcher
from taichi_sdf.implicit.wavefront import march_field
from taichi_sdf.models.deepsdf import DeepSDFDecoder


def sphere_like(decoder: DeepSDFDecoder, bump: float, device):
    """field(z) -> fn with fn(x) = |x| - 0.5 + bump * (decoder(z, x) - m) / s: a random-init decoder's output
    is nearly constant (its mean m over the unit ball at z = 0) with a small spread s."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(4096, 3, generator=gen)
    x = (x / x.norm(dim=1, keepdim=True) * torch.rand(4096, 1, generator=gen) ** (1 / 3)).to(device)
    z0 = torch.zeros(decoder.latent_size, device=device)
    with torch.no_grad():
        y = decoder(z0, x)
        m, s = float(y.mean()), float(y.std()) or 1.0

    def field(z):
        return lambda p: p.norm(dim=-1) - 0.5 + bump * (decoder(z, p) - m) / s

    return field


def angle_deg(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()  # float32's cosine rounds 1 - 6e-8 to an angle of 0.02 degrees
    cos = float((a @ b) / (a.norm() * b.norm()))
    return math.degrees(math.acos(max(-1.0, min(1.0, cos))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="32x32 rays, width 128, latent 64, 1 repeat")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--latent", type=int, default=256)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--bump", type=float, default=0.05)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--arch", default="auto")
    args = ap.parse_args()
    if args.quick:
        args.size, args.width, args.latent, args.repeat = 32, 128, 64, 1
    info = taichi_sdf.init(args.arch)
    torch.set_num_threads(1)
    dev = info.device
    torch.manual_seed(0)
    decoder = DeepSDFDecoder(latent_size=args.latent, dims=(args.width,) * 8).to(dev).eval()
    for p in decoder.parameters():
        p.requires_grad_(False)
    field = sphere_like(decoder, args.bump, dev)
    cam = cameras.look_at(torch.tensor([[0.9, 0.7, 2.1]]), width=args.size, height=args.size, fov_x_deg=40.0)
    o, d = (x.reshape(-1, 3).to(dev, torch.float32).contiguous() for x in cam.image_rays())
    shape = (1, args.size, args.size)
    # Codes drawn as DeepSDF initialises them: N(0, 1 / latent) per coordinate.
    z0 = torch.randn(args.latent, device=dev) / math.sqrt(args.latent)
    z_target = torch.randn(args.latent, device=dev) / math.sqrt(args.latent)
    target = march_field(field(z_target), o, d, marcher=DISTMarcher(), image_shape=shape)
    t_target, hit_target = target.t.detach(), target.hit

    def loss_grad(r, z):
        mask = r.hit & hit_target
        loss = (r.t - t_target)[mask].abs().mean()
        return torch.autograd.grad(loss, z)[0], mask

    def run(marcher, gradient):  # what an app's step does: march_field, loss, backward
        z = z0.clone().requires_grad_(True)
        r = march_field(field(z), o, d, marcher=marcher, image_shape=shape, gradient=gradient, create_graph=False)
        return loss_grad(r, z)

    def step(march, marcher, gradient):  # march_field's differentiable step alone, on a given march
        z = z0.clone().requires_grad_(True)
        values_fn, gradients_fn = differentiable_field(FieldEvaluator(field(z), 65536, o.dtype).values, False)
        if gradient == "approximate":
            r = approximate_trace_result(values_fn, gradients_fn, o, d, march, alpha=marcher.alpha, clamp=marcher.clamp)
        else:
            r = trace_result(values_fn, gradients_fn, o, d, march, polish_steps=1)
        return loss_grad(r, z)

    cases = [("implicit (exact)", DISTMarcher(), "implicit")]
    cases += [(f"approximate K={k}", DISTMarcher(buffer_size=k), "approximate") for k in (1, 3, 5)]
    marches = []
    for _, marcher, _ in cases:
        with torch.no_grad():
            marches.append(marcher.march(FieldEvaluator(field(z0), 65536, o.dtype), o, d, level=0.0, image_shape=shape))
    results = [run(marcher, gradient) for _, marcher, gradient in cases]  # also the warm-up (compiles)
    g_exact = results[0][0]
    times = [([], []) for _ in cases]
    for _ in range(args.repeat):  # interleaved, so load from other processes hits every case alike
        for i, (_, marcher, gradient) in enumerate(cases):
            for j, work in enumerate((partial(run, marcher, gradient), partial(step, marches[i], marcher, gradient))):
                sync()
                t0 = time.perf_counter()
                work()
                sync()
                times[i][j].append(time.perf_counter() - t0)
    rows = []
    for (name, _, _), (g, mask), march, (t_all, t_step) in zip(cases, results, marches, times):
        rel = float((g - g_exact).norm() / g_exact.norm())
        ratio = float(g.norm() / g_exact.norm())
        filled = "-" if march.t_buffer is None else float(torch.isfinite(march.t_buffer[mask]).sum(1).double().mean())
        rows.append([name, angle_deg(g, g_exact), rel, ratio, filled, statistics.median(t_all) * 1e3,
                     statistics.median(t_step) * 1e3])  # fmt: skip
    n_hit, n_loss = int(target.hit.sum()), int(results[0][1].sum())
    print(f"machine: {machine()}; torch threads: {torch.get_num_threads()}; arch: {info.arch}")
    print_table(
        f"DIST approximate vs exact gradient of an L1 depth loss w.r.t. the latent code (DeepSDF decoder 8x{args.width}, "
        f"latent {args.latent}, sphere-like, bump {args.bump}; {args.size}x{args.size} rays, {n_hit} target hits, "
        f"{n_loss} loss rays; times: medians of {args.repeat})",
        ["gradient", "angle to exact (deg)", "|g - g_exact| / |g_exact|", "|g| / |g_exact|", "filled slots / ray",
         "march+step+bwd (ms)", "step+bwd (ms)"],
        rows,
    )  # fmt: skip


if __name__ == "__main__":
    main()
