"""Sphere-tracing benchmark: one table, measured in one run.

    python -m bench.sphere_trace [--quick] [--arch cpu|cuda] [--only fused|drjit|wavefront] [--threads N]
    python -m bench.sphere_trace --separate [--threads N] [--rounds K]

(a) fused Taichi tracer vs its torch twin on the CSG scene at 512x512 (forward, and with backward);
(d) the fused tracer against Dr.Jit (LLVM backend, when installed: `pip install drjit`, bench only) on the
    union of a sphere and a box at 256^2, 512^2 and 1024^2, in one table: the whole `sphere_trace` call
    (early exit from the bounding sphere, Newton step and tetrahedral normals on hits, min-SDF, all outputs, no
    grad) on the camera's rays as an image `[H, W, 3]` (which lets the CPU packet tracer march packets of two
    image rows together) and as `[N, 3]` rays in any order, vs the same algorithm with the same outputs
    written in Dr.Jit (given the same rays, in image order), and the fixed workload used to
    compare systems (64 fixed steps, every ray: Dr.Jit, our basic kernel in SIMD packets, eager torch
    at 256^2 only). Also the call with `out=` buffer reuse, and with `out=` and the viewer's outputs only
    (points, normals). Timings are interleaved round-robin in one process, medians (ratios: medians of
    the per-round ratios), Taichi and Dr.Jit on the same number of threads. Compare with `--threads 1`:
    with more, the two thread pools share the cores in one process (Dr.Jit's spinning workers hold
    the cores a Taichi kernel launched right after wants); use `--separate` for that;
(e) from the same run, where the call's time goes: the packet kernel alone on ready buffers (march
    only and whole trace with image rays as `sphere_trace` runs them, whole trace with `[N, 3]` rays),
    the whole call, its per-call cost on 16 rays, and Dr.Jit's march alone. The whole call runs
    0.1-0.3 ms longer than its kernel here because the Dr.Jit entries run a lot of Python (tracing
    its loop) before some of its calls, which leaves the next call's Python and launch code out of the
    caches (alone, the call is within 0.1 ms of its kernel at 1024^2);
(f) with `--separate` (for several threads): the fused call and Dr.Jit's same algorithm each in a
    process of its own, median of back-to-back calls (a frame loop: warm caches, no other system's
    Python or thread pool in between), over `--rounds` rounds of the two processes in alternating order
    (the median and range of the per-round ratios);
(b) wavefront tracer vs its torch twin on an IDR-like 8x256 MLP (geometric init, multires 6,
    Softplus(100), weight norm) at 128x128 from distance 3 with a 40 degree field of view: wall time
    of the marching and network evaluations per pixel, IDR and DIST algorithms;
(c) the share of (b)'s marching time spent outside the MLP.
"""

from __future__ import annotations

import argparse
import time

import torch

import taichi_sdf
from bench.common import interleaved, machine, print_table, sync, timeit
from taichi_sdf.cameras import camera as cameras
from taichi_sdf.core.launch import lean_kernel
from taichi_sdf.implicit.marchers.base import FieldEvaluator
from taichi_sdf.implicit.marchers.dist import DISTMarcher
from taichi_sdf.implicit.marchers.idr import IDRMarcher
from taichi_sdf.implicit.scenes import make_scene
from taichi_sdf.implicit.sphere_trace import sphere_trace
from taichi_sdf.implicit.wavefront import march_field
from taichi_sdf.kernels.implicit.sphere_trace import PACKET_LANES, basic_trace_kernel
from taichi_sdf.models.sdf_net import SDFNetwork
from taichi_sdf.reference.implicit import sphere_trace as fused_twin
from taichi_sdf.reference.implicit import wavefront as wavefront_twin
from taichi_sdf.reference.implicit.scenes import twin as scene_twin


def camera_rays(size, eye, device, fov=40.0):
    cam = cameras.look_at(torch.tensor([eye]), width=size, height=size, fov_x_deg=fov).to(device, torch.float32)
    o, d = cam.image_rays()
    return o.reshape(-1, 3).contiguous(), d.reshape(-1, 3).contiguous()


def _drjit():
    """(drjit, Float, Bool, Int) of the LLVM backend, or None when Dr.Jit is not installed."""
    try:
        import drjit as dr
        from drjit.llvm import Bool, Float, Int
    except Exception:
        return None
    return dr, Float, Bool, Int


def _drjit_scene(dr, r: float, b: float):
    """The sphere∪box SDF (`scenes.sphere_box`) on Dr.Jit arrays. Max/min by `dr.select`: `dr.maximum`
    emits `llvm.maximum`, which LLVM 15 cannot select on x86 ("LLVM ERROR: Cannot select: fmaximum")."""

    def vmax(a, c):
        return dr.select(a > c, a, c)

    def vmin(a, c):
        return dr.select(a < c, a, c)

    def sdf(x, y, z):
        s = dr.sqrt((x + 0.25) ** 2 + y * y + z * z) - r
        qx, qy, qz = dr.abs(x - 0.3125) - b, dr.abs(y) - b, dr.abs(z) - b
        outside = dr.sqrt(vmax(qx, 0.0) ** 2 + vmax(qy, 0.0) ** 2 + vmax(qz, 0.0) ** 2)
        return vmin(s, outside + vmin(vmax(qx, vmax(qy, qz)), 0.0))

    return sdf, vmax


def _drjit_rays(Float, o: torch.Tensor, d: torch.Tensor):
    on, dn = o.cpu().numpy(), d.cpu().numpy()
    return tuple(Float(on[:, i]) for i in range(3)), tuple(Float(dn[:, i]) for i in range(3))


def drjit_fixed_workload(o: torch.Tensor, d: torch.Tensor, steps: int, r: float, b: float):
    """The sphere∪box 64-step workload in Dr.Jit's LLVM backend, or None when not installed."""
    lib = _drjit()
    if lib is None:
        return None
    dr, Float, _, _ = lib
    try:
        sdf, _ = _drjit_scene(dr, r, b)
        (ox, oy, oz), (dx, dy, dz) = _drjit_rays(Float, o, d)

        def run():
            t = Float(0.0)
            for _ in range(steps):
                t = t + sdf(ox + t * dx, oy + t * dy, oz + t * dz)
            dr.eval(t)
            dr.sync_thread()  # the LLVM backend runs asynchronously: wait for it
            return t

        run()
        return run
    except Exception as exc:  # the LLVM backend needs libLLVM >= 15 (DRJIT_LIBLLVM_PATH)
        print(f"(Dr.Jit present but unusable: {exc})")
        return None


def drjit_early_exit(o: torch.Tensor, d: torch.Tensor, r: float, b: float, *, radius: float = 1.0, eps: float = 1e-5,
                     max_steps: int = 128, h: float = 1e-4, min_cos: float = 1e-4, march_only: bool = False):  # fmt: skip
    """The fused tracer's algorithm with the same outputs in Dr.Jit (LLVM backend), or None when not
    installed: unit directions, the bounding-sphere interval, a `dr.while_loop` march with early exit
    (`|f| < eps`, leaving the interval, `max_steps`) keeping the min-|f| point, the tetrahedral gradient
    there, one Newton step on the hits, points, unit normals on the hits (zero on misses; Dr.Jit's LLVM
    backend evaluates the stencil on every lane, as a `dr.select` asks, where our packet kernel skips
    packets without a hit. The Dr.Jit way to skip them, `dr.compress` of the hits' indices, gather,
    stencil, scatter back, measured 3.2x slower at 512^2, 1 thread: 23.8 vs 7.4 ms, for its extra
    kernels). `run()` returns (t, hit, points x/y/z,
    normals x/y/z, t_min, f_min, steps) as Dr.Jit arrays (structure of arrays: no `[N, 3]` packing,
    which favours Dr.Jit). Rays that miss the bound take one loop iteration at their closest point.
    `march_only`: evaluate the loop's results alone (the split of Dr.Jit's time)."""
    lib = _drjit()
    if lib is None:
        return None
    dr, Float, Bool, Int = lib
    sdf, vmax = _drjit_scene(dr, r, b)
    (ox, oy, oz), (dx, dy, dz) = _drjit_rays(Float, o, d)

    def run():
        inv = 1.0 / dr.sqrt(dx * dx + dy * dy + dz * dz)
        ux, uy, uz = dx * inv, dy * inv, dz * inv
        bb = ox * ux + oy * uy + oz * uz
        disc = bb * bb - (ox * ox + oy * oy + oz * oz - radius * radius)
        sq = dr.sqrt(vmax(disc, 0.0))
        t_close = vmax(-bb, 0.0)
        inside = (disc > 0) & (-bb + sq > 0)
        t = dr.select(inside, vmax(-bb - sq, 0.0), t_close)
        t_far = dr.select(inside, -bb + sq, t_close)

        def cond(t, best_f, best_t, hit, n, active):
            return active

        def body(t, best_f, best_t, hit, n, active):
            fv = sdf(ox + t * ux, oy + t * uy, oz + t * uz)
            n += 1
            better = dr.abs(fv) < dr.abs(best_f)
            best_f = dr.select(better, fv, best_f)
            best_t = dr.select(better, t, best_t)
            conv = inside & (dr.abs(fv) < eps)
            hit |= conv
            t = dr.select(conv, t, t + fv)
            active = inside & ~conv & (t <= t_far) & (t >= 0) & (n < max_steps)
            return t, best_f, best_t, hit, n, active

        state = (t, Float(1e30), t, Bool(False), Int(0), Bool(True))
        _, best_f, best_t, hit, n, _ = dr.while_loop(state, cond, body)
        if march_only:
            dr.eval(best_f, best_t, hit, n)
            dr.sync_thread()
            return best_f, best_t, hit, n
        x, y, z = ox + best_t * ux, oy + best_t * uy, oz + best_t * uz

        def stencil(x, y, z):
            fa, fb = sdf(x + h, y - h, z - h), sdf(x - h, y - h, z + h)
            fc, fe = sdf(x - h, y + h, z - h), sdf(x + h, y + h, z + h)
            s = 0.25 / h
            return (fa - fb - fc + fe) * s, (fc + fe - fa - fb) * s, (fb + fe - fa - fc) * s

        gx, gy, gz = stencil(x, y, z)
        cos = gx * ux + gy * uy + gz * uz
        cos = dr.select(dr.abs(cos) < min_cos, dr.select(cos > 0, min_cos, -min_cos), cos)
        t_res = dr.select(hit, best_t - best_f / cos, best_t)
        ig = dr.select(hit, 1.0 / vmax(dr.sqrt(gx * gx + gy * gy + gz * gz), 1e-12), 0.0)  # zero normals on misses
        out = (t_res, hit, ox + t_res * ux, oy + t_res * uy, oz + t_res * uz, gx * ig, gy * ig, gz * ig, best_t, best_f,
               dr.select(inside, n, 0))  # fmt: skip
        dr.eval(*out)
        dr.sync_thread()
        return out

    try:
        run()
        return run
    except Exception as exc:
        print(f"(Dr.Jit present but unusable: {exc})")
        return None


def timeit_interleaved(fns: dict, repeat: int, warmup: int = 1) -> dict:
    """Median seconds of each of `fns` (name -> callable), timed round-robin (`bench.common.interleaved`)."""
    return {k: med for k, (med, _) in interleaved(fns, repeat, warmup).items()}


def bench_drjit(sizes, device, quick: bool):
    """(d) and (e): per image size, one interleaved run; returns (rows of (d), rows of (e))."""
    rows = [_drjit_row(size, device, quick) for size in sizes]
    return [r[0] for r in rows], [r[1] for r in rows]


# Outputs the viewer draws (hit, t, points, normals): the call a frame loop makes with `out=` reuse.
VIEWER_OUTPUTS = ("points", "normals")


def _drjit_row(size: int, device, quick: bool, steps: int = 64):
    sb = make_scene("sphere_box", device=device)
    r, b = sb.params.tolist()
    o, d = camera_rays(size, (0.0, 0.0, 3.0), device)
    oi, di = o.view(size, size, 3), d.view(size, size, 3)  # row by row: the same memory as an image
    n = o.shape[0]
    t_out = o.new_empty(n)
    packet = lean_kernel(basic_trace_kernel(sb.sdf_xyz, "f32", 1, PACKET_LANES))  # launched as the library does
    twin_sdf = scene_twin(sb.name)
    with torch.no_grad():
        reused = [sphere_trace(sb, oi, di)]
        viewer = [sphere_trace(sb, oi, di, outputs=VIEWER_OUTPUTS)]
    o16, d16 = o[:16].contiguous(), d[:16].contiguous()
    kernels = _bare_kernels(sb, o, d, size)

    def fused():  # the camera's rays as the image they are
        with torch.no_grad():
            return sphere_trace(sb, oi, di)

    def fused_flat():  # the same rays as [N, 3], in any order for all the tracer knows
        with torch.no_grad():
            return sphere_trace(sb, o, d)

    def fused_out():  # the same call writing into the previous frame's buffers
        with torch.no_grad():
            reused[0] = sphere_trace(sb, oi, di, out=reused[0])

    def fused_viewer():
        with torch.no_grad():
            viewer[0] = sphere_trace(sb, oi, di, outputs=VIEWER_OUTPUTS, out=viewer[0])

    def call16():  # per-call cost: checks, allocation and the kernel launch on one packet
        with torch.no_grad():
            sphere_trace(sb, o16, d16)

    def torch_fixed():
        t = torch.zeros(n, device=device)
        for _ in range(steps):
            t = t + twin_sdf(o + t[:, None] * d, sb.params)
        return t

    fns = {"fused": fused, "fused_flat": fused_flat, "fused_out": fused_out, "fused_viewer": fused_viewer,
           "kernel": kernels["full"], "kernel_march": kernels["march"], "kernel_flat": kernels["full_flat"],
           "call16": call16,
           "fixed": lambda: packet(o, d, sb.params, t_out, steps)}  # fmt: skip
    if device.type == "cpu":
        for key, fn in (("dr_same", drjit_early_exit(o, d, r, b)), ("dr_march", drjit_early_exit(o, d, r, b, march_only=True)),
                        ("dr_fixed", drjit_fixed_workload(o, d, steps, r, b))):  # fmt: skip
            if fn is not None:
                fns[key] = fn
    if size <= 256:
        fns["torch_fixed"] = torch_fixed
    timed = interleaved(fns, repeat=3 if quick else 15)
    t = {k: med for k, (med, _) in timed.items()}
    ours = fused().reshape(-1)
    agree = ""
    if "dr_same" in fns:
        import numpy as np

        out = fns["dr_same"]()
        hit = torch.from_numpy(np.array(out[1])).to(device)
        dt = (torch.from_numpy(np.array(out[0])).to(device) - ours.t)[hit & ours.hit].abs().max()
        agree = f"hits agree {float((hit == ours.hit).float().mean()) * 100:.2f}%, max |dt| {float(dt):.1e}"

    def ms(key):
        return t[key] * 1e3 if key in t else "n/a"

    def ratio(key, base="fused"):  # key / base from the per-round ratios to "fused" (> 1: base is faster)
        if key not in t:
            return "not installed"
        per_round = timed[key][1] / timed[base][1]  # `interleaved` ratios are first-entry time / this one's
        return f"{1.0 / per_round:.2f}x"

    row_d = [f"{size}^2", ms("fused"), ms("fused_flat"), ms("fused_out"), ms("fused_viewer"), ms("dr_same"),
             ratio("dr_same"), ratio("dr_same", "fused_flat"), ratio("dr_same", "fused_out"),
             ratio("dr_same", "fused_viewer"), ms("dr_fixed"), ratio("dr_fixed"),
             ms("fixed"), ms("torch_fixed"), f"{float(ours.steps.float().mean()):.1f}", agree]  # fmt: skip
    row_e = [f"{size}^2", ms("kernel_march"), ms("kernel"), ms("kernel_flat"), ms("fused"), ms("fused_out"),
             ms("call16"), ms("dr_march"), ms("dr_same")]  # fmt: skip
    return row_d, row_e


def _bare_kernels(field, o, d, width: int = 0) -> dict:
    """The packet kernel launched on ready buffers (no checks, no allocation): "full" (the whole
    no-gradient trace) and "march" (marching alone, as the gradient path runs it) of rays `[N, 3]` that
    are an image `width` wide (packets of two image rows marched together, as `sphere_trace` does for
    `[H, W, 3]` rays; 0: rays in any order), and "full_flat" (the whole trace, rays in any order)."""
    from taichi_sdf.core.launch import lean_kernel
    from taichi_sdf.implicit.implicit_diff import MIN_COS
    from taichi_sdf.implicit.sphere_trace import OPTIONAL_OUTPUTS, _pair_rows, _TraceBuffers, march_group
    from taichi_sdf.kernels.implicit.sphere_trace import fused_trace_packet_kernel, packet_rows

    group = march_group(field.sdf_xyz)

    def row_packets(finish):  # as `sphere_trace` chooses for `[H, W, 3]` rays
        image = width > 0 and group > 1 and _pair_rows((o.shape[0] // width, width), PACKET_LANES, finish)
        return width // PACKET_LANES if image else 0

    fns = {}
    for key, finish, outputs, rows in (("full", "tetrahedral", OPTIONAL_OUTPUTS, row_packets("tetrahedral")),
                                       ("march", None, ("min_sdf",), row_packets(None)),
                                       ("full_flat", "tetrahedral", OPTIONAL_OUTPUTS, 0)):  # fmt: skip
        scalars = (float(field.bound_radius), 1e-5, 128, 1.0, 1e-4, MIN_COS, rows)
        buffers = _TraceBuffers(o.shape[0], PACKET_LANES, outputs, o)
        kernel = fused_trace_packet_kernel(field.sdf_xyz, "f32", 1, finish, PACKET_LANES, outputs, group)
        kernel = lean_kernel(kernel)  # launched as `sphere_trace` launches it
        rays = (o, d, packet_rows(o, PACKET_LANES), packet_rows(d, PACKET_LANES))
        fns[key] = lambda kernel=kernel, args=(*rays, field.params, *buffers.args, *scalars): kernel(*args)
    return fns


def bench_fused(size: int, device, quick: bool):
    rows = []
    o, d = camera_rays(size, (0.0, 0.0, 3.0), device)
    n = o.shape[0]
    csg = make_scene("csg", device=device)
    with torch.no_grad():
        t_ti = timeit(lambda: sphere_trace(csg, o, d), repeat=5)
        t_tw = timeit(lambda: fused_twin.sphere_trace(scene_twin(csg.name), csg.params, o, d), warmup=0 if quick else 1, repeat=1 if quick else 3)
        r = sphere_trace(csg, o, d)
    rows.append([f"(a) CSG scene {size}^2, fused tracer (early exit, all outputs, no grad)", t_ti * 1e3, n / t_ti / 1e6, f"twin {t_tw * 1e3:.0f} ms -> {t_tw / t_ti:.1f}x", f"{float(r.steps.float().mean()):.1f} steps/ray"])
    pg = csg.params.clone().requires_grad_()
    g_field = csg.with_params(pg)

    def with_grad():
        rr = sphere_trace(g_field, o, d)
        rr.t[rr.hit].sum().backward()

    def twin_with_grad():
        rr = fused_twin.sphere_trace(scene_twin(csg.name), pg, o, d)
        rr.t[rr.hit].sum().backward()

    t_g = timeit(with_grad, repeat=3)
    t_gt = timeit(twin_with_grad, warmup=0 if quick else 1, repeat=1 if quick else 3)
    rows.append([f"(a) CSG scene {size}^2, fused tracer + backward to params", t_g * 1e3, n / t_g / 1e6, f"twin {t_gt * 1e3:.0f} ms -> {t_gt / t_g:.1f}x", ""])

    return rows


class TimedField:
    """Wraps the MLP to measure the time spent inside it (c)."""

    def __init__(self, fn):
        self.fn, self.seconds, self.points = fn, 0.0, 0

    def __call__(self, x):
        sync()
        t0 = time.perf_counter()
        y = self.fn(x)
        sync()
        self.seconds += time.perf_counter() - t0
        self.points += x.shape[0]
        return y


def bench_wavefront(size: int, device, quick: bool):
    torch.manual_seed(0)
    net = SDFNetwork(hidden=256, n_layers=8, multires=6, skip_in=(4,), init_radius=0.6).to(device).eval()
    o, d = camera_rays(size, (0.0, 0.0, 3.0), device)
    n = o.shape[0]
    rows = []
    for name, marcher, img in [("IDR", IDRMarcher(), None), ("DIST", DISTMarcher(), (1, size, size))]:
        results = {}
        for impl in ("taichi", "twin"):
            timed = TimedField(net.sdf)

            def march(impl=impl, timed=timed, marcher=marcher, img=img):
                # the no-grad search alone: the marcher through the protocol vs the twin's algorithm
                with torch.no_grad():
                    ev = FieldEvaluator(timed, 65536, torch.float32)
                    if impl == "taichi":
                        r = marcher.march(ev, o, d, level=0.0, image_shape=img)
                        out = (r.hit, r.t, r.t_min)
                    else:
                        out = wavefront_twin.MARCHERS[marcher.name](ev, o, d, marcher, img)[:3]  # DIST's adds its t buffer
                return out, ev.count

            march()  # compile
            timed.seconds, timed.points = 0.0, 0
            reps = 1 if quick else 2
            t0 = time.perf_counter()
            for _ in range(reps):
                (hit, _, _), count = march()
            wall = (time.perf_counter() - t0) / reps
            results[impl] = (wall, count / n, timed.seconds / reps, hit)
        (tw, ew, mw, hw), (tt, et, mt, ht) = results["taichi"], results["twin"]
        agree = float((hw == ht).float().mean())
        rows.append([f"(b) {name} wavefront, 8x256 MLP, {size}^2 (marching)", tw * 1e3, ew, f"twin {tt * 1e3:.0f} ms, {et:.1f} evals/px -> {tt / tw:.2f}x, {et / ew:.2f}x fewer evals", f"hit masks agree {agree * 100:.2f}%"])
        rows.append([f"(c) {name} share of marching time outside the MLP", (tw - mw) * 1e3, "", f"{(tw - mw) / tw * 100:.1f}% (twin {(tt - mt) / tt * 100:.1f}%)", ""])
        full = timeit(lambda marcher=marcher, img=img: march_field(net.sdf, o, d, marcher=marcher, image_shape=img), warmup=1, repeat=1 if quick else 2)
        rows.append([f"(b) {name} full march_field (+ differentiable points, normals, min-SDF)", full * 1e3, "", "", ""])
    return rows


def _child_times(side: str, sizes, repeat: int = 25) -> dict:
    """In a process of its own (`--child`): median ms of `repeat` back-to-back calls (after 3) per size:
    "fused" (image rays and `[N, 3]` rays) or "drjit" (the same algorithm). Back to back, as a frame
    loop calls: no other system's Python or threads in between."""
    sb = make_scene("sphere_box", device=torch.device("cpu"))
    r, b = sb.params.tolist()
    out = {}
    for size in sizes:
        o, d = camera_rays(size, (0.0, 0.0, 3.0), torch.device("cpu"))
        if side == "fused":
            oi, di = o.view(size, size, 3), d.view(size, size, 3)
            calls = {"image": lambda oi=oi, di=di: sphere_trace(sb, oi, di), "flat": lambda o=o, d=d: sphere_trace(sb, o, d)}
        else:
            calls = {"drjit": drjit_early_exit(o, d, r, b)}
        for key, fn in calls.items():
            with torch.no_grad():
                out[f"{key} {size}"] = timeit(fn, warmup=3, repeat=repeat) * 1e3
    return out


def bench_separate(sizes, threads: int, rounds: int = 3) -> list:
    """(f): the fused call and Dr.Jit's same algorithm, each in its own process with `threads` threads
    (two thread pools in one process take each other's cores), `rounds` times, the two processes in
    alternating order (fused first, then Dr.Jit first, ...): this VM's speed drifts over minutes, which
    a single pair of runs took for a difference between the systems (2 threads, 1024^2: our call 6.0
    to 8.5 ms in runs a minute apart). Per size: the median of each side's per-round times, and the
    median and range of the per-round ratios."""
    import json
    import statistics
    import subprocess
    import sys

    def run(side):
        cmd = [sys.executable, "-m", "bench.sphere_trace", "--child", side, "--threads", str(threads), "--arch", "cpu"]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        return json.loads(proc.stdout.strip().splitlines()[-1])

    per_round = []
    for r in range(rounds):
        got = {}
        for side in ("fused", "drjit") if r % 2 == 0 else ("drjit", "fused"):
            got.update(run(side))
        per_round.append(got)

    def med(key):
        values = [g[key] for g in per_round if key in g]
        return statistics.median(values) if values else None

    def ratios(ours: str, size: int) -> str:  # Dr.Jit's time / ours, per round
        if any(f"drjit {size}" not in g for g in per_round):
            return "not installed"
        rs = [g[f"drjit {size}"] / g[f"{ours} {size}"] for g in per_round]
        return f"{statistics.median(rs):.2f}x ({min(rs):.2f}-{max(rs):.2f})"

    rows = []
    for size in sizes:
        dr = med(f"drjit {size}")
        rows.append([f"{size}^2", med(f"image {size}"), med(f"flat {size}"), dr if dr else "n/a",
                     ratios("image", size), ratios("flat", size)])  # fmt: skip
    return rows


def _taichi_threads():
    import taichi as ti

    return ti.lang.impl.current_cfg().cpu_max_num_threads


def _drjit_threads():
    lib = _drjit()
    return lib[0].thread_count() if lib is not None else "n/a"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller images and fewer repeats")
    p.add_argument("--arch", default="auto")
    p.add_argument("--only", choices=["fused", "drjit", "wavefront"], help="one section: (a), (d)+(e) or (b)+(c)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads of Taichi and Dr.Jit alike (0: all cores)")
    p.add_argument("--separate", action="store_true",
                   help="(f) instead: the fused call and Dr.Jit each in a process of its own (for --threads > 1)")
    p.add_argument("--rounds", type=int, default=3, help="(f): rounds of the two processes, in alternating order")
    p.add_argument("--child", choices=["fused", "drjit"], help=argparse.SUPPRESS)  # one side of --separate
    a = p.parse_args(argv)
    sizes = (256, 512) if a.quick else (256, 512, 1024)
    if a.child:
        import json

        if a.threads:
            taichi_sdf.core.runtime.set_taichi_cpu_threads(a.threads)
        taichi_sdf.init("cpu")
        lib = _drjit()
        if lib is not None:
            lib[0].set_thread_count(_taichi_threads())
        times = {} if a.child == "drjit" and lib is None else _child_times(a.child, sizes)
        print(json.dumps(times))
        return
    if a.separate:
        threads = a.threads or len(__import__("os").sched_getaffinity(0))
        print_table(f"(f) Fused sphere tracer vs Dr.Jit's same algorithm, each in its own process, {threads} threads, "
                    f"median ms of back-to-back calls (median of {a.rounds} alternating rounds), sphere∪box from "
                    f"distance 3 on cpu ({machine()})",
                    ["rays", "fused, image rays", "fused, [N, 3] rays", "Dr.Jit same algorithm",
                     "Dr.Jit / fused (median, range)", "Dr.Jit / fused [N, 3]"],
                    bench_separate(sizes, threads, a.rounds))  # fmt: skip
        return
    if a.threads:
        taichi_sdf.core.runtime.set_taichi_cpu_threads(a.threads)
    info = taichi_sdf.init(a.arch)
    lib = _drjit()
    if lib is not None:  # the same thread count on both sides
        lib[0].set_thread_count(_taichi_threads())
    taichi_sdf.core.runtime.set_torch_threads(0)
    device = info.device
    title = f"on {info.arch} ({machine()})"
    if a.only in (None, "drjit"):
        rows_d, rows_e = bench_drjit(sizes, device, a.quick)
        title_d = f"{title}; threads: Taichi {_taichi_threads()}, Dr.Jit {_drjit_threads()}"
        print_table(f"(d) Fused sphere tracer vs Dr.Jit, sphere∪box from distance 3, fov 40, median ms {title_d}",
                    ["rays", "fused sphere_trace (all outputs), image rays", "same, [N, 3] rays", "image, out= reuse",
                     "image, out=, points+normals only", "Dr.Jit same algorithm", "Dr.Jit / fused",
                     "Dr.Jit / fused [N, 3]", "Dr.Jit / fused out=", "Dr.Jit / out=, p+n",
                     "Dr.Jit 64 fixed steps", "Dr.Jit 64 fixed / fused", "our basic kernel 64 fixed, packets",
                     "eager torch 64 fixed", "steps/ray", "agreement"], rows_d)  # fmt: skip
        print_table(f"(e) Where the fused call's time goes (same run as (d)), median ms {title_d}",
                    ["rays", "kernel: march only", "kernel: whole trace", "kernel: whole trace, [N, 3] rays",
                     "whole call", "whole call, out=",
                     "call on 16 rays (per-call cost)", "Dr.Jit march only", "Dr.Jit same algorithm"], rows_e)  # fmt: skip
    rows = []
    if a.only in (None, "fused"):
        rows += bench_fused(256 if a.quick else 512, device, a.quick)
    if a.only in (None, "wavefront"):
        rows += bench_wavefront(64 if a.quick else 128, device, a.quick)
    if rows:
        print_table(f"Sphere tracing {title}", ["case", "ms", "Mrays/s or evals/px", "vs twin / peers", "notes"], rows)


if __name__ == "__main__":
    main()
