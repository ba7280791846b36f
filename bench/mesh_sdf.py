"""Mesh -> SDF samples: taichi-sdf's MeshSDF vs the brute-force torch twin and installed peers.

    python -m bench.mesh_sdf [--samples 250000] [--quick]

250k query points per mesh, drawn with DeepSDF's recipe (mesh scaled into the unit sphere / 1.03;
47/50 near the surface: surface samples plus Gaussian noise of variance 0.005 or 0.0005, half
each; 3/50 uniform in [-1, 1]^3). For each method: build time, query time for all samples, and
accuracy on a random subsample against exact references (distance: our float64 closest points,
checked against the brute-force twin in tests/test_mesh_sdf.py; sign: the exact winding number,
i.e. the sum of all solid angles, of these watertight meshes). The brute-force twin is timed on a
small subsample and extrapolated linearly (marked "~"). pysdf and mesh_to_sdf are timed only when
installed (`pip install pysdf`; it builds from source and needs Eigen headers).

pysdf is a different algorithm: its distance is taken to the faces around the nearest *vertex*
(a KD-tree query), which is exact on meshes of small, even triangles but not on CAD-like meshes
with long thin faces (see the cylinder row); its sign is a parity vote of 2-3 ray casts.

The rows above time the SDF query alone on the same points. On the 20k- and 100k-face meshes, the
"sampler" rows time a whole DeepSDF sampler from the raw mesh to pos/neg arrays (normalisation,
area-weighted surface points, noise, uniform points, SDF, split by sign):
`taichi_sdf.geometry.sdf_sampling.sample_sdf` (BVH build included), the same recipe with pysdf as the SDF
(when installed), and mesh_to_sdf's `sample_sdf_near_surface` (its own recipe from rendered depth
maps; when installed). Their accuracy columns are taken on a random subsample of their own output.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
import trimesh

import taichi_sdf
from taichi_sdf.geometry.mesh_sdf import MeshSDF
from taichi_sdf.geometry.sdf_sampling import normalized_mesh, sample_query_points, sample_sdf
from taichi_sdf.reference.geometry import mesh_sdf as ref

from .common import machine, print_table, sync, timeit


def deepsdf_samples(mesh: trimesh.Trimesh, n: int, seed: int = 0) -> tuple[trimesh.Trimesh, np.ndarray]:
    """(the mesh normalised into the unit sphere / 1.03, n float32 query points)."""
    rng = np.random.default_rng(seed)
    v = mesh.vertices - 0.5 * (mesh.vertices.min(0) + mesh.vertices.max(0))
    v = v / np.linalg.norm(v, axis=1).max() / 1.03
    mesh = trimesh.Trimesh(v, mesh.faces, process=False)
    n_near = n * 47 // 50
    surf, _ = trimesh.sample.sample_surface(mesh, n_near, seed=seed)
    std = np.where(np.arange(n_near) % 2 == 0, np.sqrt(0.005), np.sqrt(0.0005))[:, None]
    near = surf + rng.normal(size=surf.shape) * std
    uniform = rng.uniform(-1.0, 1.0, (n - n_near, 3))
    pts = np.concatenate([near, uniform]).astype(np.float32)
    return mesh, pts[rng.permutation(n)]


def meshes(quick: bool) -> list[tuple[str, trimesh.Trimesh, bool]]:
    """(name, mesh, whether to time the full samplers too)."""
    out = [
        ("icosphere", trimesh.creation.icosphere(5), True),  # 20480 faces
        ("torus", trimesh.creation.torus(1.0, 0.4, major_sections=158, minor_sections=158), False),  # 49928
        ("torus", trimesh.creation.torus(1.0, 0.4, major_sections=250, minor_sections=200), True),  # 100000
        ("cylinder (CAD-like)", trimesh.creation.cylinder(radius=0.3, height=1.5, sections=64), False),  # 256
    ]
    return out[:1] + out[-1:] if quick else out


def bench_mesh(name: str, raw: trimesh.Trimesh, args, dev: torch.device, has_pysdf: bool, has_m2s: bool,
               samplers: bool) -> list[list]:  # fmt: skip
    """The table rows of one mesh."""
    rows: list[list] = []
    mesh, pts_np = deepsdf_samples(raw, args.samples)
    n_faces = len(mesh.faces)
    pts = torch.from_numpy(pts_np).to(dev)
    rng = np.random.default_rng(1)
    sub = torch.from_numpy(pts_np[rng.choice(len(pts_np), args.check, replace=False)]).to(dev)
    # Exact references on the subsample.
    exact = MeshSDF(mesh.vertices, mesh.faces, dtype=torch.float64)
    dist_ref = exact.unsigned_distance(sub.double())
    inside_ref = exact.winding_number(sub.double(), exact=True).abs() > 0.5

    def accuracy(sdf_sub: torch.Tensor) -> tuple[str, str]:
        sdf_sub = sdf_sub.double().to(dev)
        err = (sdf_sub.abs() - dist_ref).abs().max().item()
        clear = dist_ref > 1e-6
        sign = ((sdf_sub < 0) != inside_ref)[clear].float().mean().item() * 100
        return f"{err:.1e}", f"{sign:.3f}"

    def add(method: str, build: float | str, query: float | str, acc: tuple[str, str]) -> None:
        q = query if isinstance(query, str) else f"{query:.3f}"
        rate = "" if isinstance(query, str) else f"{args.samples / query / 1e6:.2f}"
        b = build if isinstance(build, str) else f"{build * 1e3:.1f}"
        rows.append([name, n_faces, method, b, q, rate, *acc])

    for mode in ("winding", "pseudonormal"):
        # Warm-up runs compile the kernels; the pseudo-normals are built lazily on first use.
        def build_once(mode=mode):
            MeshSDF(mesh.vertices, mesh.faces, sign_mode=mode).query(pts[:1])

        build = timeit(build_once, warmup=1, repeat=args.repeat)
        m = MeshSDF(mesh.vertices, mesh.faces, sign_mode=mode)
        query = timeit(lambda m=m: m.query(pts), warmup=1, repeat=args.repeat)
        add(f"taichi-sdf, sign={mode}", build, query, accuracy(m.query(sub).sdf))
    query = timeit(lambda: m.unsigned_distance(pts), warmup=1, repeat=args.repeat)
    add("taichi-sdf, unsigned only", "", query, (accuracy(m.unsigned_distance(sub))[0], "-"))

    # Brute-force twin: distance + exact winding number on a few points, extrapolated.
    n_twin = max(50, min(1000, 2 * 10**7 // n_faces))
    vt = torch.as_tensor(mesh.vertices, dtype=torch.float32, device=dev)
    ft = torch.as_tensor(mesh.faces, device=dev)
    t0 = time.perf_counter()
    ref.signed_distance(vt, ft, pts[:n_twin])
    sync()
    twin = (time.perf_counter() - t0) * args.samples / n_twin
    add(f"torch brute-force twin (timed on {n_twin})", "", f"~{twin:.0f}", ("exact", "0 (reference)"))

    if has_pysdf:
        from pysdf import SDF

        v32 = np.ascontiguousarray(mesh.vertices, dtype=np.float32)
        f32 = np.ascontiguousarray(mesh.faces, dtype=np.uint32)
        build = timeit(lambda: SDF(v32, f32), warmup=1, repeat=args.repeat)
        f = SDF(v32, f32)
        pts_c = np.ascontiguousarray(pts_np)
        query = timeit(lambda: f(pts_c), warmup=1, repeat=args.repeat)
        got = -torch.from_numpy(f(np.ascontiguousarray(sub.cpu().numpy()))).reshape(-1)  # pysdf: positive inside
        add(f"pysdf (C++, {os.cpu_count()} threads)", build, query, accuracy(got))
    if has_m2s:
        import mesh_to_sdf

        n_m2s = 5000
        t0 = time.perf_counter()
        mesh_to_sdf.mesh_to_sdf(mesh, pts_np[:n_m2s])
        query = (time.perf_counter() - t0) * args.samples / n_m2s
        got = torch.from_numpy(mesh_to_sdf.mesh_to_sdf(mesh, sub.cpu().numpy()))
        add(f"mesh_to_sdf (timed on {n_m2s})", "", f"~{query:.0f}", accuracy(got))
    if samplers:
        rows += bench_samplers(name, raw, args, dev, has_pysdf, has_m2s)
    return rows


def bench_samplers(name: str, raw: trimesh.Trimesh, args, dev: torch.device, has_pysdf: bool, has_m2s: bool) -> list[list]:
    """Rows of the full DeepSDF samplers: raw mesh -> (points, sdf), timed end to end."""
    rows: list[list] = []
    v, f, _, _ = normalized_mesh(raw)  # the frame every sampler below works in
    exact = MeshSDF(v, f, dtype=torch.float64)
    rng = np.random.default_rng(2)

    def accuracy(samples: np.ndarray) -> tuple[str, str]:
        """On a subsample of a sampler's own output `[N, 4]`: max distance error, % wrong signs."""
        sub = samples[rng.choice(len(samples), min(args.check, len(samples)), replace=False)].astype(np.float64)
        pts = torch.from_numpy(sub[:, :3]).to(dev)
        dist = exact.unsigned_distance(pts).cpu().numpy()
        inside = exact.winding_number(pts, exact=True).abs().cpu().numpy() > 0.5
        clear = dist > 1e-6
        sign = ((sub[:, 3] < 0) != inside)[clear].mean() * 100
        return f"{np.abs(np.abs(sub[:, 3]) - dist).max():.1e}", f"{sign:.3f}"

    def add(method: str, seconds: float, n: int, acc: tuple[str, str]) -> None:
        rows.append([name, len(raw.faces), method, "", f"{seconds:.3f}", f"{n / seconds / 1e6:.2f}", *acc])

    def ours():
        s = sample_sdf(raw, num_samples=args.samples, surface_samples=0)
        return np.concatenate([s.pos, s.neg])

    seconds = timeit(ours, warmup=1, repeat=args.repeat)
    add("sampler: taichi-sdf sample_sdf (all steps)", seconds, args.samples, accuracy(ours()))
    if has_pysdf:
        from pysdf import SDF

        def recipe_pysdf():
            vn, fn, _, _ = normalized_mesh(raw)
            pts, _ = sample_query_points(vn, fn, args.samples, 0.005, 0.0005, 47 / 50, np.random.default_rng(0))
            pts = np.ascontiguousarray(pts, dtype=np.float32)
            sdf = -SDF(np.ascontiguousarray(vn, dtype=np.float32), np.ascontiguousarray(fn, dtype=np.uint32))(pts)
            return np.concatenate([pts, sdf.reshape(-1, 1)], 1)

        seconds = timeit(recipe_pysdf, warmup=1, repeat=args.repeat)
        add(f"sampler: same recipe + pysdf ({os.cpu_count()} threads)", seconds, args.samples, accuracy(recipe_pysdf()))
    if has_m2s:
        import mesh_to_sdf

        t0 = time.perf_counter()
        pts, sdf = mesh_to_sdf.sample_sdf_near_surface(raw, number_of_points=args.samples)
        seconds = time.perf_counter() - t0
        # mesh_to_sdf works in the unit sphere without DeepSDF's 1.03 buffer (same centre): map to ours.
        ours_frame = np.concatenate([pts, sdf.reshape(-1, 1)], 1) / 1.03
        add("sampler: mesh_to_sdf sample_sdf_near_surface", seconds, len(pts), accuracy(ours_frame))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=250_000)
    parser.add_argument("--check", type=int, default=4000, help="subsample size for the accuracy columns")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="two small meshes, 20k samples")
    args = parser.parse_args()
    if args.quick:
        args.samples, args.check, args.repeat = 20_000, 1000, 1
    info = taichi_sdf.init("auto")
    dev = info.device
    try:
        import pysdf  # noqa: F401

        has_pysdf = True
    except ImportError:
        has_pysdf = False
    try:
        import mesh_to_sdf  # noqa: F401

        has_m2s = True
    except ImportError:
        has_m2s = False

    rows = []
    for name, raw, samplers in meshes(args.quick):
        rows += bench_mesh(name, raw, args, dev, has_pysdf, has_m2s, samplers)

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print_table(
        f"Mesh -> SDF, {args.samples} DeepSDF-style samples ({machine()}; taichi arch {info.arch}; "
        f"load average {load}). Accuracy on {args.check} random samples: max |distance error| vs exact "
        f"closest points, % of signs that disagree with the exact winding number.",
        ["mesh", "faces", "method", "build ms", "query s", "M samples/s", "max dist err", "sign err %"],
        rows,
    )
    if not has_pysdf:
        print("\npysdf not installed (pip install pysdf; needs Eigen headers, e.g. apt install libeigen3-dev)")


if __name__ == "__main__":
    main()
