"""The IDR training iteration at the `cpu` preset: where its time goes, before and after the fused network.

    python -m bench.train_step [--quick] [--threads 1 2] [--steps N] [--repeats R]

One iteration is `IDRSystem.forward` (the app's loss), `zero_grad`, `backward` and Adam's step, on
the preset's networks (configs/idr/cpu.yaml: 4x128 SDF network, multires 4, 2x128 rendering network),
512 rays of a 64x64 view from distance 2.5 and 512 eikonal points. The networks start from geometric
init (a sphere of radius 0.6; the mask is a sphere of 0.55), and every measured iteration starts from
the same weights with a fresh Adam, one of `--steps` fixed batches, so "before" and "after" do the same
work; they alternate iteration by iteration.

"before" is `SDFNetwork(fused=False)` (nn.Softplus, weight norm recomputed on every call, skip scale
on the activations), "after" the default fused formulation. Both run in one process, interleaved,
with 1 and 2 torch threads; each figure is the median over all measured iterations of a variant.

Columns (ms per iteration): the SDF and rendering networks' forward without grad (the tracer's
marching) and with grad; `d/dx` the autograd.grad calls of the forward (normals and eikonal
gradients, create_graph); `backward` loss.backward(); `tracer` the marcher's time outside the network
(Taichi kernels and their Python launches); `glue` the rest of the loss (rays, the implicit step,
losses, indexing); `optim` zero_grad + Adam; `rest` what the others leave; `total` the wall time and
`CPU` the process's CPU time of the iteration (all threads; steadier than wall time on a shared
machine). GFLOP/s: the network forward's multiply-adds over its time, against the GEMMs alone
(torch.mm) of exactly the same shapes (the network calls of the last iteration of each thread count;
"before" computes the last layer's every row where "after" needs only the SDF row for most calls, so
both are counted with the "after" shapes: the figure compares time for the same useful work), and a
large dense GEMM as the machine's reference.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections import defaultdict

import torch

import taichi_sdf
from apps.idr.config import IDRConfig
from apps.idr.system import IDRSystem
from bench.common import machine, print_table
from taichi_sdf.cameras import camera as cameras
from taichi_sdf.implicit.marchers.idr import IDRMarcher
from taichi_sdf.models.idr import build_idr_networks
from taichi_sdf.train.config import load_config


class Meter:
    """Accumulates wall time by phase, and the network's calls (points, grad mode) for FLOP counts."""

    def __init__(self) -> None:
        self.t: dict[str, float] = defaultdict(float)
        self.calls: list[tuple[str, int, bool]] = []  # (network, points, SDF row only)
        self.net_depth = 0
        self.in_march = False


def instrument(system: IDRSystem, meter: Meter):
    """Hooks on the two networks, and wrappers of IDRMarcher.march and torch.autograd.grad; returns undo."""
    handles = []
    for name, net in (("implicit", system.implicit), ("rendering", system.rendering)):
        def pre(mod, args, kwargs, name=name):
            meter.net_depth += 1
            if meter.net_depth == 1:
                meter.t0 = time.perf_counter()
                meter.calls.append((name, args[0].shape[0], bool(kwargs.get("sdf_only"))))

        def post(mod, args, out):
            meter.net_depth -= 1
            if meter.net_depth == 0:
                dt = time.perf_counter() - meter.t0
                meter.t["net fwd (no grad)" if not torch.is_grad_enabled() else "net fwd (grad)"] += dt
                if meter.in_march:
                    meter.t["_net in march"] += dt

        handles += [net.register_forward_pre_hook(pre, with_kwargs=True), net.register_forward_hook(post)]
    march, grad = IDRMarcher.march, torch.autograd.grad

    def timed_march(self, *a, **k):
        meter.in_march = True
        t0 = time.perf_counter()
        try:
            return march(self, *a, **k)
        finally:
            meter.t["_march"] += time.perf_counter() - t0
            meter.in_march = False

    def timed_grad(*a, **k):
        t0 = time.perf_counter()
        try:
            return grad(*a, **k)
        finally:
            meter.t["d/dx"] += time.perf_counter() - t0

    IDRMarcher.march, torch.autograd.grad = timed_march, timed_grad

    def undo():
        IDRMarcher.march, torch.autograd.grad = march, grad
        for h in handles:
            h.remove()

    return undo


def make_setup(seed: int = 0):
    cfg = load_config(IDRConfig, "configs/idr/cpu.yaml")
    torch.manual_seed(seed)
    implicit, rendering = build_idr_networks(cfg.model)
    t = cfg.tracer
    tracer = IDRMarcher(eps=t.eps, sphere_tracing_iters=t.sphere_tracing_iters, line_step_iters=t.line_step_iters,
                        n_steps=t.n_steps, n_secant_steps=t.n_secant_steps, min_sdf_samples=t.min_sdf_samples)  # fmt: skip
    tr = cfg.train
    system = IDRSystem(implicit, rendering, tracer, rgb_weight=tr.rgb_weight, eikonal_weight=tr.eikonal_weight,
                       mask_weight=tr.mask_weight)  # fmt: skip
    return cfg, system


def make_batches(cfg, count: int, seed: int = 0) -> list[dict]:
    size, n, m = cfg.data.size, cfg.train.pixels, cfg.train.eikonal_points
    cam = cameras.look_at(torch.tensor([[0.0, 0.5, 2.5]]), width=size, height=size, fov_x_deg=40.0).to("cpu", torch.float32)
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(count):
        flat = torch.randint(size * size, (n,), generator=g)
        uv = torch.stack([flat % size, flat // size], -1).float() + 0.5
        o, d = cam.pixel_rays(uv[None])
        o, d = o[0], d[0] / d[0].norm(dim=-1, keepdim=True)
        b, c = (o * d).sum(-1), (o * o).sum(-1) - 0.55**2
        batches.append({"view": 0, "camera": cam, "uv": uv, "rgb": torch.rand(n, 3, generator=g) * 2 - 1,
                        "mask": b * b - c > 0, "eikonal_points": torch.rand(m, 3, generator=g) * 2 - 1,
                        "alpha": cfg.train.alpha})  # fmt: skip
    return batches


def run_iteration(system, start: dict, batch: dict, variant: dict, lr: float) -> tuple[dict, list]:
    """One training iteration on `batch` from the state `start` with a fresh Adam (so every variant
    does the same work); its phases (ms) and the network calls it made."""
    system.load_state_dict(start)
    for k, v in variant.items():
        setattr(system.implicit, k, v)
    system.implicit.clear_weight_cache()
    opt = torch.optim.Adam(system.parameters(), lr=lr)
    meter = Meter()
    undo = instrument(system, meter)
    try:
        c0 = time.process_time()
        t0 = time.perf_counter()
        terms = system(batch)
        t1 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        t2 = time.perf_counter()
        terms["loss"].backward()
        t3 = time.perf_counter()
        opt.step()
        t4 = time.perf_counter()
        c4 = time.process_time()
    finally:
        undo()
    p = meter.t
    row = {"net fwd (no grad)": p["net fwd (no grad)"], "net fwd (grad)": p["net fwd (grad)"], "d/dx": p["d/dx"],
           "backward": t3 - t2, "tracer": p["_march"] - p["_net in march"], "optim": (t2 - t1) + (t4 - t3)}  # fmt: skip
    row["glue"] = (t1 - t0) - row["net fwd (no grad)"] - row["net fwd (grad)"] - row["d/dx"] - row["tracer"]
    row["total"] = t4 - t0
    row["rest"] = row["total"] - sum(v for k, v in row.items() if k != "total")
    row["CPU"] = c4 - c0
    return {k: 1e3 * v for k, v in row.items()}, meter.calls


def layer_shapes(net) -> list[tuple[int, int]]:
    return [tuple(lin.weight.shape) for lin in net.layers]


def gemm_time(calls, shapes: dict, repeats: int) -> tuple[float, float]:
    """(seconds, flops) of the GEMMs alone (torch.mm) of the recorded network calls' shapes."""
    plans, xs, flops = [], {}, 0.0
    for name, n, sdf_only in calls:
        layers = list(shapes[name])
        if sdf_only:
            layers[-1] = (1, layers[-1][1])
        for o, i in layers:
            flops += 2.0 * n * o * i
            xs.setdefault((n, i), torch.randn(n, i))
            xs.setdefault((i, o), torch.randn(i, o) * 0.1)
            plans.append((xs[(n, i)], xs[(i, o)]))

    def run():
        for a, b in plans:
            torch.mm(a, b)

    run()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), flops


def dense_gemm_gflops(repeats: int, n: int = 4096, k: int = 512) -> float:
    """GFLOP/s of one large square-ish GEMM `[n, k] @ [k, k]` (the machine's reference)."""
    a, b = torch.randn(n, k), torch.randn(k, k)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t0)
    return 2.0 * n * k * k / statistics.median(times) / 1e9


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a short run (fewer iterations and repeats)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts (default 1 2)")
    ap.add_argument("--steps", type=int, default=None, help="distinct batches (default 12, quick 4)")
    ap.add_argument("--repeats", type=int, default=None, help="rounds over the batches (default 5, quick 2)")
    ap.add_argument("--compile", action="store_true", help="also 'after + compile': compile_no_grad=True (compiles first)")
    args = ap.parse_args(argv)
    steps = args.steps or (4 if args.quick else 12)
    repeats = args.repeats or (2 if args.quick else 5)
    taichi_sdf.init(arch="cpu")
    cfg, system = make_setup()
    start = copy.deepcopy(system.state_dict())
    batches = make_batches(cfg, steps + 1)
    shapes = {"implicit": layer_shapes(system.implicit), "rendering": layer_shapes(system.rendering)}
    variants = [("before", {"fused": False, "compile_no_grad": False}), ("after", {"fused": True, "compile_no_grad": False})]
    if args.compile:
        variants.append(("after + compile", {"fused": True, "compile_no_grad": True}))
    results = defaultdict(list)  # (threads, variant) -> [phase dict]
    calls_of = {}
    for threads in args.threads:  # warm-up: Taichi compiles, torch.compile when asked
        torch.set_num_threads(threads)
        for _, variant in variants:
            run_iteration(system, start, batches[0], variant, cfg.train.lr)
    # Variants alternate iteration by iteration (order reversed every other round), each from the same
    # state on the same batch, so a load that drifts on a shared machine hits them alike.
    for r in range(repeats * steps):
        batch = batches[1 + r % steps]
        for threads in args.threads:
            torch.set_num_threads(threads)
            for name, variant in variants if r % 2 == 0 else variants[::-1]:
                res, calls = run_iteration(system, start, batch, variant, cfg.train.lr)
                results[(threads, name)].append(res)
                calls_of[threads] = calls
    cols = ["net fwd (no grad)", "net fwd (grad)", "d/dx", "backward", "tracer", "glue", "optim", "rest", "total", "CPU"]
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        calls = calls_of[threads]
        gemm_s, flops = gemm_time(calls, shapes, max(3, repeats))
        dense = dense_gemm_gflops(max(5, 2 * repeats))
        base_total = base_cpu = None
        for name, _ in variants:
            med = {k: statistics.median(r[k] for r in results[(threads, name)]) for k in results[(threads, name)][0]}
            fwd_ms = med["net fwd (no grad)"] + med["net fwd (grad)"]
            base_total, base_cpu = base_total or med["total"], base_cpu or med["CPU"]
            rows.append([threads, name, *[round(med[k], 1) for k in cols], round(base_total / med["total"], 2),
                         round(base_cpu / med["CPU"], 2),
                         round(flops / (fwd_ms * 1e-3) / 1e9, 1), round(flops / gemm_s / 1e9, 1), round(dense, 1)])  # fmt: skip
    points = sum(n for _, n, _ in calls_of[args.threads[-1]])
    print(f"machine: {machine()}; {steps} batches x {repeats} rounds per variant; network points of the last iteration: {points}")
    print_table("IDR training iteration, cpu preset, 512 rays (ms per iteration, medians)",
                ["threads", "network", *cols, "speed-up", "CPU speed-up", "net fwd GFLOP/s", "same GEMMs GFLOP/s",
                "4096x512x512 GEMM GFLOP/s"], rows)  # fmt: skip


if __name__ == "__main__":
    main()
