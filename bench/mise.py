"""MISE vs dense marching cubes at the same final resolution: field queries, time, agreement.

    python -m bench.mise [--resolution-0 32] [--steps 3] [--quick]

For each field (an analytic sphere logit and a small random MLP, DVR-shaped: 3 -> 128 x 3 ReLU ->
1, fitted for a few steps to a sphere's occupancy so its surface is non-trivial), both extractors
sample the same `[R+1]^3` grid (R = resolution_0 * 2**steps), mesh it the same way (padding, MC),
refinement off. Columns: queries, wall time (grid evaluation + marching cubes), faces, and the
Chamfer-L1 between the two meshes' vertices (0 when MISE found every surface cell).
`mise_rows(fn, resolution_0, upsampling_steps)` returns the rows for `bench.ray_march`.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from bench.common import machine, print_table
from taichi_sdf.geometry.mise import dense_extract, mise_extract
from taichi_sdf.train.metrics import chamfer_distance

HEADER = ["method", "final res", "queries", "queries / dense", "time s", "faces", "chamfer-L1 vs dense"]


def mise_rows(fn: Callable[[torch.Tensor], torch.Tensor], resolution_0: int, upsampling_steps: int) -> list[list]:
    """Two rows (`HEADER` columns): MISE and dense MC of `fn` (points `[M, 3]` -> logits `[M]`)."""
    res = resolution_0 << upsampling_steps
    t0 = time.perf_counter()
    mise = mise_extract(fn, resolution_0=resolution_0, upsampling_steps=upsampling_steps, refinement_steps=0)
    t_mise = time.perf_counter() - t0
    t0 = time.perf_counter()
    dense = dense_extract(fn, res)
    t_dense = time.perf_counter() - t0
    if len(mise.mesh.vertices) and len(dense.mesh.vertices):
        gap = chamfer_distance(mise.mesh.vertices, dense.mesh.vertices)["chamfer_l1"]
    else:
        gap = float("nan")
    return [
        ["MISE", res, mise.num_queries, mise.num_queries / dense.num_queries, t_mise, len(mise.mesh.faces), gap],
        ["dense MC", res, dense.num_queries, 1.0, t_dense, len(dense.mesh.faces), 0.0],
    ]


def sphere_logit(p: torch.Tensor) -> torch.Tensor:
    return 20.0 * (0.3 - p.norm(dim=-1))


def small_mlp(seed: int = 0, fit_steps: int = 300) -> torch.nn.Module:
    """A DVR-shaped occupancy MLP fitted briefly to a sphere of radius 0.3 (logit out)."""
    gen = torch.Generator().manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Linear(3, 128), torch.nn.ReLU(), torch.nn.Linear(128, 128), torch.nn.ReLU(), torch.nn.Linear(128, 1)
    )
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(fit_steps):
        p = torch.rand(4096, 3, generator=gen) - 0.5
        occ = (p.norm(dim=-1) < 0.3).float()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(p)[:, 0], occ)
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.requires_grad_(False)
    return net


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resolution-0", type=int, default=32)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="resolution_0 16, 2 steps (64^3)")
    args = ap.parse_args(argv)
    r0, steps = (16, 2) if args.quick else (args.resolution_0, args.steps)
    mlp = small_mlp()
    rows = []
    for name, fn in (("sphere", sphere_logit), ("MLP 3-128-128-1", lambda p: mlp(p)[:, 0])):
        rows += [[name, *row] for row in mise_rows(fn, r0, steps)]
    print_table(f"MISE vs dense marching cubes ({machine()})", ["field", *HEADER], rows)


if __name__ == "__main__":
    main()
