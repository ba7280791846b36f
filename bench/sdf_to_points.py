"""DIST's fast SDF mesher vs dense marching cubes at the same final resolution: queries, time, agreement.

    python -m bench.sdf_to_points [--quick] [--threads 1]

Fields (SDFs over [-1, 1]^3, negative inside):
(a) analytic: a sphere of radius 0.6 (`|p| - 0.6`);
(b) DeepSDF: `models/deepsdf.py` `DeepSDFDecoder` at random init plus the same sphere,
    `|p| - 0.6 + gain * decoder(z, p)`, the gain scaling the decoder's spread to 0.05 so the zero
    set is a closed bumpy surface (a random decoder alone is nearly constant, |f| < 0.03). Full run:
    DeepSDF's 8 x 512, latent 256 (specs.json; meant for a GPU); `--quick`: the cpu preset's 4 x 128,
    latent 64. Its cost per query is the decoder's.
Methods, at final resolutions 256 and 128 (`--quick`: 128 and 64) with a coarse grid of half of it:
`fast` (`fast_extract` defaults: Catmull-Rom upsampling, band 1.5 coarse voxels), `fast DIST rules`
(`upsample="nearest", fill="constant"`: DIST's `create_mesh_speedup` exactly) and `dense MC`
(`meshing.extract_mesh`, the baseline). Columns: network queries, share of dense, wall time
(queries + upsampling + marching cubes), faces, Chamfer-L1 between the mesh's and the dense mesh's
vertices (0: the same mesh), and DIST's Chamfer x1000 (`deepsdf_chamfer`, sum of mean squared NN
distances) between 30k points sampled on each (same seed, so 0 for the same mesh). The line under the
table gives that metric between two samplings of the dense mesh: the noise floor of DIST's evaluation.

Measured (`--quick`, 2 shared cores at load ~3.4, 1 thread): the 4 x 128 decoder at 128^3, dense 2.10M
queries 17.0 s, fast 0.375M (17.9%) 3.0 s, the same mesh (vertex Chamfer-L1 1.6e-8: float32 ulps of
batch-dependent field values); at 64^3 23% of the queries, 1.9 s -> 0.29 s. The coarse grid alone is
1/8 of dense, so the share is 1/8 plus the band's shell (~3% at 256^3 for this shape).

Threads: 1 by default, as `bench.ray_march` (a shared 2-core machine makes multi-threaded timings
measure the load); `--threads N` on an idle machine.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import torch

from bench.common import machine, print_table, sync
from models.deepsdf import DeepSDFDecoder
from taichi_sdf.geometry.fast_mesh import fast_extract
from taichi_sdf.geometry.meshing import extract_mesh
from taichi_sdf.train.metrics import chamfer_distance, deepsdf_chamfer, sample_surface

RADIUS = 0.6
N_POINTS = 30_000  # DIST's latent_vec_to_points
HEADER = [
    "field",
    "method",
    "final res",
    "queries",
    "share of dense",
    "time s",
    "faces",
    "vertex chamfer-L1",
    "DIST chamfer x1e3",
]


def sphere(p: torch.Tensor) -> torch.Tensor:  # [M, 3] -> [M]
    return p.norm(dim=-1) - RADIUS


def deepsdf_field(latent_size: int, dims: tuple[int, ...], latent_in: tuple[int, ...], seed: int = 0):
    """A random-init DeepSDF decoder of one shape code, added to the sphere (see the module docstring)."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    decoder = DeepSDFDecoder(latent_size, dims, latent_in).eval().requires_grad_(False)
    code = torch.randn(latent_size, generator=gen) / latent_size**0.5  # CodeInitStdDev 1 / sqrt(latent_size)
    with torch.no_grad():
        spread = float(decoder(code, torch.rand(4096, 3, generator=gen) * 2 - 1).std())
    gain = 0.05 / max(spread, 1e-12)
    return lambda p: sphere(p) + gain * decoder(code, p)


def timed(call: Callable[[], object]) -> tuple[object, float]:
    sync()
    t0 = time.perf_counter()
    out = call()
    sync()
    return out, time.perf_counter() - t0


def rows_for(name: str, fn, res: int) -> tuple[list[list], float]:
    """Rows (`HEADER`) of the three methods at final resolution `res`, and the dense mesh's sampling floor."""
    dense, t_dense = timed(lambda: extract_mesh(fn, res))
    dense_points = sample_surface(dense, N_POINTS, seed=0)[0]
    floor = deepsdf_chamfer(dense_points, sample_surface(dense, N_POINTS, seed=1)[0])
    rows = []
    for method, options in (("fast", {}), ("fast DIST rules", {"upsample": "nearest", "fill": "constant"})):
        (mesh, stats), t = timed(lambda options=options: fast_extract(fn, res, res // 2, **options))
        gap = chamfer_distance(mesh.vertices, dense.vertices)["chamfer_l1"]
        dist = deepsdf_chamfer(sample_surface(mesh, N_POINTS, seed=0)[0], dense_points)
        rows.append([name, method, res, stats.num_queries, stats.query_share, t, len(mesh.faces), gap, 1e3 * dist])
    rows.append([name, "dense MC", res, res**3, 1.0, t_dense, len(dense.faces), 0.0, 0.0])
    return rows, floor


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="final resolutions 128 and 64, the cpu preset's 4 x 128 decoder")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (see the module docstring)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        resolutions, decoder = (128, 64), ("DeepSDF 4x128, latent 64", 64, (128,) * 4, (2,))
    else:
        resolutions, decoder = (256, 128), ("DeepSDF 8x512, latent 256", 256, (512,) * 8, (4,))
    fields = [("sphere", sphere), (decoder[0], deepsdf_field(*decoder[1:]))]
    load = os.getloadavg()[0]
    rows, floors = [], []
    for name, fn in fields:
        for res in resolutions:
            more, floor = rows_for(name, fn, res)
            rows += more
            floors.append(f"{name} {res}: {1e3 * floor:.4g}")
    title = f"Fast SDF meshing (DIST) vs dense marching cubes ({machine()}; torch threads {args.threads}; load {load:.2f})"
    print_table(title, HEADER, rows)
    print("\nDIST chamfer x1e3 between two 30k samplings of the dense mesh (noise floor): " + "; ".join(floors))


if __name__ == "__main__":
    main()
