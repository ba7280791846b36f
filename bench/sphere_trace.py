"""Sphere-tracing benchmark: one table, measured in one run.

    python -m bench.sphere_trace [--quick] [--arch cpu|cuda]

(a) fused Taichi tracer vs its torch twin on the CSG scene at 512x512, and the fixed workload used
    to compare with other systems (512x512 rays, 64 fixed steps, union of a sphere and a box):
    our basic kernel (scalar and SIMD packets), eager torch, Dr.Jit (LLVM) when installed, plus the
    real tracer (early exit, all outputs) on the same scene.
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
from bench.common import machine, print_table, sync, timeit
from taichi_sdf.cameras import camera as cameras
from taichi_sdf.implicit.marchers.base import FieldEvaluator
from taichi_sdf.implicit.marchers.dist import DISTMarcher
from taichi_sdf.implicit.marchers.idr import IDRMarcher
from taichi_sdf.implicit.scenes import make_scene
from taichi_sdf.implicit.sphere_trace import sphere_trace
from taichi_sdf.implicit.wavefront import march_field
from taichi_sdf.kernels.implicit.sphere_trace import basic_trace_kernel
from taichi_sdf.models.sdf_net import SDFNetwork
from taichi_sdf.reference.implicit import sphere_trace as fused_twin
from taichi_sdf.reference.implicit import wavefront as wavefront_twin
from taichi_sdf.reference.implicit.scenes import twin as scene_twin


def camera_rays(size, eye, device, fov=40.0):
    cam = cameras.look_at(torch.tensor([eye]), width=size, height=size, fov_x_deg=fov).to(device, torch.float32)
    o, d = cam.image_rays()
    return o.reshape(-1, 3).contiguous(), d.reshape(-1, 3).contiguous()


def drjit_fixed_workload(o: torch.Tensor, d: torch.Tensor, steps: int, r: float, b: float):
    """The sphere∪box 64-step workload in Dr.Jit's LLVM backend, or None when not installed."""
    try:
        import drjit as dr
        from drjit.llvm import Float
    except Exception:
        return None
    try:
        on, dn = o.cpu().numpy(), d.cpu().numpy()
        ox, oy, oz = (Float(on[:, i]) for i in range(3))
        dx, dy, dz = (Float(dn[:, i]) for i in range(3))

        def run():
            t = Float(0.0)
            for _ in range(steps):
                x, y, z = ox + t * dx, oy + t * dy, oz + t * dz
                s = dr.sqrt((x + 0.25) ** 2 + y * y + z * z) - r
                qx, qy, qz = dr.abs(x - 0.3125) - b, dr.abs(y) - b, dr.abs(z) - b
                outside = dr.sqrt(dr.maximum(qx, 0) ** 2 + dr.maximum(qy, 0) ** 2 + dr.maximum(qz, 0) ** 2)
                box = outside + dr.minimum(dr.maximum(qx, dr.maximum(qy, qz)), 0)
                t = t + dr.minimum(s, box)
            dr.eval(t)
            dr.sync_thread()  # the LLVM backend runs asynchronously: wait for it
            return t

        return run
    except Exception as exc:  # the LLVM backend needs libLLVM (DRJIT_LIBLLVM_PATH)
        print(f"(Dr.Jit present but unusable: {exc})")
        return None


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

    # The fixed workload: sphere ∪ box, 64 fixed steps, every ray.
    sb = make_scene("sphere_box", device=device)
    steps = 64
    t_out = o.new_empty(n)
    scalar = basic_trace_kernel(sb.sdf_xyz, "f32", 1, 1)
    packet = basic_trace_kernel(sb.sdf_xyz, "f32", 1, 16)
    t_sc = timeit(lambda: scalar(o, d, sb.params, t_out, steps), repeat=5)
    t_pk = timeit(lambda: packet(o, d, sb.params, t_out, steps), repeat=5)

    def torch_fixed():
        t = torch.zeros(n, device=device)
        for _ in range(steps):
            t = t + scene_twin(sb.name)(o + t[:, None] * d, sb.params)
        return t

    t_torch = timeit(torch_fixed, warmup=0 if quick else 1, repeat=1 if quick else 3)
    evals = n * steps
    rows.append([f"(a) sphere∪box {size}^2, 64 fixed steps: basic kernel, scalar", t_sc * 1e3, evals / t_sc / 1e6, "", "Mevals/s"])
    rows.append([f"(a) sphere∪box {size}^2, 64 fixed steps: basic kernel, 16-ray packets", t_pk * 1e3, evals / t_pk / 1e6, "", "Mevals/s"])
    rows.append([f"(a) sphere∪box {size}^2, 64 fixed steps: eager torch", t_torch * 1e3, evals / t_torch / 1e6, "", "Mevals/s"])
    run = drjit_fixed_workload(o, d, steps, 0.35, 0.25) if device.type == "cpu" else None
    if run is not None:
        t_dr = timeit(run, warmup=2, repeat=5)
        rows.append([f"(a) sphere∪box {size}^2, 64 fixed steps: Dr.Jit LLVM", t_dr * 1e3, evals / t_dr / 1e6, "", "Mevals/s"])
    else:
        rows.append([f"(a) sphere∪box {size}^2, 64 fixed steps: Dr.Jit LLVM", "n/a", "", "not installed", ""])
    with torch.no_grad():
        t_real = timeit(lambda: sphere_trace(sb, o, d), repeat=5)
        t_real_k = timeit(lambda: sphere_trace(sb, o, d), repeat=5)
        rr = sphere_trace(sb, o, d)
    rows.append([f"(a) sphere∪box {size}^2, fused tracer (early exit, all outputs)", min(t_real, t_real_k) * 1e3, n / min(t_real, t_real_k) / 1e6, "", f"{float(rr.steps.float().mean()):.1f} steps/ray, Mrays/s"])
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
                        out = wavefront_twin.MARCHERS[marcher.name](ev, o, d, marcher, img)
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


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller images and fewer repeats")
    p.add_argument("--arch", default="auto")
    a = p.parse_args(argv)
    info = taichi_sdf.init(a.arch)
    taichi_sdf.core.runtime.set_torch_threads(0)
    device = info.device
    rows = bench_fused(256 if a.quick else 512, device, a.quick) + bench_wavefront(64 if a.quick else 128, device, a.quick)
    print_table(f"Sphere tracing on {info.arch} ({machine()})", ["case", "ms", "Mrays/s or evals/px", "vs twin / peers", "notes"], rows)


if __name__ == "__main__":
    main()
