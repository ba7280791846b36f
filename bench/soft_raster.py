"""Soft rasterization benchmark: Taichi kernels vs the torch twin, one markdown table.

    python -m bench.soft_raster            # full table (about 3 minutes on 2 cores, most of it the twin)
    python -m bench.soft_raster --quick    # about half a minute

Scene: trimesh icospheres (subdivisions 3, 4, 5: 1,280 / 5,120 / 20,480 faces) of radius 1 seen from
distance 3 (45 degree field of view; the sphere covers ~57% of the image), cameras on a Fibonacci
sphere. "sil" = SoftRas soft silhouette (sigma 1e-4 NDC^2, no colours, the setting of the PyTorch3D
reference numbers in issue 6), "rgb" = SoftRas with 3 vertex colours (sigma 1e-4, gamma 1e-4),
"dibr" = DIB-R with 3 vertex colours (Kaolin defaults); "tex-lambert" = `render_mesh` in SoftRas
mode (sigma 1e-4, gamma 1e-4) with a 256x256 RGB texture (spherical uvs, bilinear) and Lambert
shading, "tex-phong" = `render_mesh` in DIB-R mode with the texture and Phong shading (both rasterize
7 attribute channels, then texture and shade per pixel). float32. Forward = `soft_rasterize` /
`render_mesh` under no_grad; fwd+bwd = forward with grad and `backward()` of a sum over the outputs
(gradients w.r.t. the vertices, and the texture for the textured rows). Projection, binning and Python overhead are included. Medians of 7 runs after a
warm-up (compilation). The twin (every pixel against every face) runs once per cell, after all
Taichi cells, and only where its time, extrapolated from a smaller twin run by the number of
(pixel, face) pairs, stays under the budget (--twin-budget, default 60 s per cell, --twin-total,
default 300 s); other cells say "skip (est. N s)". Timings are wall clock on a shared machine: the
title reports the load average.

PyTorch3D (CPU rasterizer, soft silhouette, sigma 1e-4, 50 faces per pixel, batch 1) and Mitsuba 3
(llvm_ad_rgb, projective integrator, 4 spp) columns are the numbers quoted in issue 6 for this 2-core
machine; they are not re-measured here.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import torch

# forward / forward+backward seconds at batch 1, quoted in issue 6
PYTORCH3D = {(5120, 128): (0.32, 6.6), (5120, 256): (1.0, 26.0), (20480, 128): (1.0, 15.0), (20480, 256): (4.0, 65.0)}
PYTORCH3D_HARD = {(20480, 256): 3.6}
MITSUBA = {(20480, 128): (0.011, 0.166), (20480, 256): (0.034, 0.514)}
SUBDIV = {1280: 3, 5120: 4, 20480: 5}


def _scene(faces: int, size: int, batch: int, colors: bool | str):
    import trimesh

    from taichi_sdf.cameras.camera import fibonacci_sphere, look_at

    m = trimesh.creation.icosphere(subdivisions=SUBDIV[faces])
    v = torch.tensor(m.vertices, dtype=torch.float32)
    f = torch.tensor(m.faces, dtype=torch.int32)
    cam = look_at(fibonacci_sphere(batch, 3.0), width=size, height=size, fov_x_deg=45.0).to(dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    if colors == "texture":  # (texture [256, 256, 3], spherical uvs [V, 2], uv faces = faces)
        uv = torch.stack([0.5 + torch.atan2(v[:, 0], v[:, 2]) / (2 * math.pi), 0.5 + 0.5 * v[:, 1]], -1).contiguous()
        return v, f, cam, (torch.rand(256, 256, 3, generator=g), uv, f)
    col = torch.rand(v.shape[0], 3, generator=g) if colors else None
    return v, f, cam, col


MODES = {
    "sil": dict(mode="softras", sigma=1e-4, colors=False),
    "rgb": dict(mode="softras", sigma=1e-4, colors=True),
    "dibr": dict(mode="dibr", colors=True),
    "tex-lambert": dict(mode="softras", sigma=1e-4, colors="texture", shading="lambert"),
    "tex-phong": dict(mode="dibr", colors="texture", shading="phong"),
}


def _render_fn(impl):
    """`render_mesh` of the Taichi path or of the twin pipeline, matching the raster module `impl`."""
    from taichi_sdf.mesh import raster
    from taichi_sdf.mesh import render as mesh_render
    from taichi_sdf.reference.mesh import render as twin_render

    return mesh_render.render_mesh if impl is raster else twin_render.render_mesh


def _fns(impl, kind: str, faces: int, size: int, batch: int):
    """(forward, forward+backward) closures for one cell."""
    opts = dict(MODES[kind])
    colors = opts.pop("colors")
    v, f, cam, col = _scene(faces, size, batch, colors)
    vv = v.clone().requires_grad_()
    if colors == "texture":
        render = _render_fn(impl)
        tex, uv, uv_faces = col
        tt = tex.clone().requires_grad_()

        def fwd_tex():
            with torch.no_grad():
                return render(v, f, cam, texture=col, **opts)

        def fwd_bwd_tex():
            out = render(vv, f, cam, texture=(tt, uv, uv_faces), **opts)
            (out.rgb.sum() + out.alpha.sum()).backward()
            vv.grad = tt.grad = None

        return fwd_tex, fwd_bwd_tex

    def fwd():
        with torch.no_grad():
            return impl.soft_rasterize(v, f, cam, col, **opts)

    def fwd_bwd():
        out = impl.soft_rasterize(vv, f, cam, col, **opts)
        loss = out.alpha.sum() + (out.rgb.sum() if out.rgb is not None else 0.0)
        loss.backward()
        vv.grad = None

    return fwd, fwd_bwd


def _hard_fn(faces: int, size: int, batch: int):
    from taichi_sdf.mesh import raster

    v, f, cam, _ = _scene(faces, size, batch, False)
    return lambda: raster.hard_rasterize(v, f, cam)


class TwinClock:
    """Runs the twin once per cell when its extrapolated time fits the budget. Seconds per (pixel,
    face) pair come from the last run of the same kind and phase (forward / forward+backward),
    doubled because the twin's cost grows faster than its pair count (memory traffic, checkpointing);
    a kind not run yet borrows 3x the slowest known rate of the same phase, and with nothing known
    only cells of at most CALIBRATION pairs run. Cells run in order of size, so each estimate comes
    from the largest cell measured so far."""

    CALIBRATION = 2**23
    SAFETY = 2.0

    def __init__(self, budget: float, total: float):
        self.budget = budget
        self.left = total
        self.rate: dict[tuple[str, str], float] = {}

    def estimate(self, key: tuple[str, str], pairs: int) -> float | None:
        if key in self.rate:
            return self.SAFETY * self.rate[key] * pairs
        same_phase = [r for (_, phase), r in self.rate.items() if phase == key[1]]
        if same_phase:
            return 3.0 * max(same_phase) * pairs
        return None if pairs <= self.CALIBRATION else math.inf

    def run(self, key: tuple[str, str], pairs: int, fn) -> tuple[float | None, str]:
        est = self.estimate(key, pairs)
        if est is not None and (est > self.budget or est > self.left):
            return None, "skip" if math.isinf(est) else f"skip (est. {est:.0f} s)"
        t0 = time.perf_counter()
        fn()
        t = time.perf_counter() - t0
        self.left -= t
        self.rate[key] = t / pairs
        return t, f"{t:.3g} s"


def _ms(t: float | None) -> str:
    return "-" if t is None else f"{t * 1e3:.1f}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a one-minute subset")
    parser.add_argument("--twin-budget", type=float, default=60.0, help="max extrapolated seconds per twin cell")
    parser.add_argument("--twin-total", type=float, default=300.0, help="max seconds for all twin cells")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)

    import taichi_sdf
    from bench.common import machine, print_table, timeit
    from taichi_sdf.mesh import raster
    from taichi_sdf.reference.mesh import raster as twin

    info = taichi_sdf.init("auto")
    torch.manual_seed(0)
    load_start = os.getloadavg()[0]
    if args.quick:
        cells = [("sil", 1280, 64, 1), ("sil", 1280, 128, 1), ("sil", 20480, 256, 1), ("rgb", 20480, 256, 1),
                 ("dibr", 20480, 256, 1), ("tex-lambert", 1280, 64, 1), ("tex-phong", 1280, 64, 1),
                 ("tex-lambert", 20480, 256, 1), ("tex-phong", 20480, 256, 1)]  # fmt: skip
        clock = TwinClock(min(args.twin_budget, 10.0), 15.0)
        repeat = 3
    else:
        cells = [("sil", faces, size, batch) for batch in (1, 8) for faces in (1280, 5120, 20480) for size in (128, 256)]
        cells = [("sil", 1280, 64, 1)] + cells + [("rgb", 20480, 256, 1), ("dibr", 20480, 256, 1), ("rgb", 20480, 256, 8),
                                                 ("dibr", 20480, 256, 8)]  # fmt: skip
        cells += [(kind, faces, size, 1) for kind in ("tex-lambert", "tex-phong") for faces, size in
                  ((1280, 128), (20480, 256))]  # fmt: skip
        clock = TwinClock(args.twin_budget, args.twin_total)
        repeat = args.repeat
    for impl in (raster, twin):  # first-call costs (compilation, allocator warm-up) out of the way
        for kind in {c[0] for c in cells}:
            for fn in _fns(impl, kind, 1280, 32, 1):
                fn()
    start = time.perf_counter()
    # Taichi first (the twin's long runs would heat the machine between Taichi cells), then the twin,
    # smallest cells first.
    ours = {}
    for kind, faces, size, batch in cells:
        fwd, fwd_bwd = _fns(raster, kind, faces, size, batch)
        t_f = timeit(fwd, warmup=1, repeat=repeat)
        t_fb = timeit(fwd_bwd, warmup=1, repeat=repeat)
        t_h = timeit(_hard_fn(faces, size, batch), warmup=1, repeat=repeat) if kind == "sil" else None
        ours[(kind, faces, size, batch)] = (t_f, t_fb, t_h)
        print(f"  {kind} {faces} faces {size}^2 B={batch}: {_ms(t_f)} / {_ms(t_fb)} / hard {_ms(t_h)} ms",
              file=sys.stderr, flush=True)  # fmt: skip
    theirs = {}
    for cell in sorted(cells, key=lambda c: c[1] * c[2] * c[2] * c[3]):
        kind, faces, size, batch = cell
        pairs = faces * size * size * batch
        tw_f_fn, tw_fb_fn = _fns(twin, kind, faces, size, batch)
        theirs[cell] = clock.run((kind, "f"), pairs, tw_f_fn) + clock.run((kind, "fb"), pairs, tw_fb_fn)
        print(f"  twin {kind} {faces} faces {size}^2 B={batch}: {theirs[cell][1]} / {theirs[cell][3]}",
              file=sys.stderr, flush=True)  # fmt: skip
    rows = []
    for cell in cells:
        kind, faces, size, batch = cell
        t_f, t_fb, t_h = ours[cell]
        tw_f, tw_f_s, tw_fb, tw_fb_s = theirs[cell]
        speed = " / ".join("-" if tw is None else f"{tw / t:.0f}x" for tw, t in ((tw_f, t_f), (tw_fb, t_fb)))
        p3d = PYTORCH3D.get((faces, size)) if (kind == "sil" and batch == 1) else None
        p3d_s = "-" if p3d is None else f"{p3d[0]:.2g} / {p3d[1]:.2g} s ({p3d[0] / t_f:.0f}x / {p3d[1] / t_fb:.0f}x)"
        mit = MITSUBA.get((faces, size)) if batch == 1 and kind == "sil" else None
        mit_s = "-" if mit is None else f"{mit[0] * 1e3:.0f} / {mit[1] * 1e3:.0f}"
        hard_ref = PYTORCH3D_HARD.get((faces, size)) if batch == 1 and kind == "sil" else None
        hard_s = _ms(t_h) + ("" if hard_ref is None or t_h is None else f" ({hard_ref / t_h:.0f}x P3D)")
        rows.append([kind, f"{faces:,}", f"{size}^2", batch, _ms(t_f), _ms(t_fb), hard_s, tw_f_s, tw_fb_s, speed,
                     p3d_s, mit_s])  # fmt: skip
    elapsed = time.perf_counter() - start
    title = (
        f"Soft rasterization, float32, Taichi ({info.arch}) vs torch twin; {machine()}; "
        f"load avg {load_start:.1f} at start, {os.getloadavg()[0]:.1f} at end; total {elapsed:.0f} s; "
        f"medians of {repeat} runs"
    )
    print_table(
        title,
        ["mode", "faces", "pixels", "B", "fwd ms", "fwd+bwd ms", "hard ms", "twin fwd", "twin fwd+bwd",
         "speed-up vs twin", "PyTorch3D fwd / fwd+bwd (issue)", "Mitsuba 3 ms (issue)"],
        rows,
    )  # fmt: skip


if __name__ == "__main__":
    main()
