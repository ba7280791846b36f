"""MISE: multiresolution iso-surface extraction of implicit fields (OccNet/DVR), plus refinement.

Follows DVR's `im2mesh/utils/libmise/mise.pyx` and `im2mesh/dvr/generation.py` (Generator3D:
generate_from_latent, extract_mesh, refine_mesh, estimate_colors), re-stated in vectorised numpy.

The field contract: `fn(points [M, 3]) -> [M]` or `[M, 1 + F]` (column 0 is the field; float32
points in box coordinates, on `device`). Internally every field is turned into one "inside-ness"
value z = s * (f - level) (s = +1 for `inside="positive"`, -1 for "negative"), so z > 0 inside and
the surface is z = 0. For DVR occupancy logits `level = logit(threshold)` (0 for tau = 0.5).

MISE (mise.pyx): the grid has R = resolution_0 * 2**upsampling_steps cells per axis, R + 1 corner
points per axis spanning the box. The resolution_0^3 coarse voxels' corners are evaluated; every
leaf voxel with level < upsampling_steps whose closed box holds known points with z >= 0 and
z <= 0 is split into 8, and only the corners not known yet are queried; repeat until no point is
new. Unknown corners are then filled as mise.pyx's `to_dense` does (copy the previous value along
x, then y, then z). Marching cubes (skimage) runs on the grid padded with -1e6 (outside), so the
mesh is closed, with faces wound outwards. Memory: one float32 `[R+1]^3` grid (68 MiB at 256, 540
MiB at 512) plus per-level bool flags at up to R/2 cells per axis; field batches are bounded by
`batch_points`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import trimesh

from taichi_sdf.geometry.meshing import _infer_device, column0

__all__ = ["MiseResult", "mise_extract", "dense_extract", "refine_mesh", "vertex_colors"]

FieldFn = Callable[[torch.Tensor], torch.Tensor]

_PAD_VALUE = -1e6  # generation.py pads the grid with -1e6 ("outside") to close the mesh
_CORNERS = np.array([(i, j, k) for i in (0, 1) for j in (0, 1) for k in (0, 1)], dtype=np.int64)  # [8, 3]
_LATTICE3 = np.array([(i, j, k) for i in range(3) for j in range(3) for k in range(3)], dtype=np.int64)  # [27, 3]


@dataclass
class MiseResult:
    """A mesh extracted from a field, with what it cost.

    mesh: vertices `[V, 3]` in box coordinates, faces `[F, 3]` wound outwards; vertex colours
        `[V, 4]` uint8 RGBA when a `color_fn` was given. Empty (0 faces) when the field has no
        inside point in the box.
    num_queries: field evaluations spent on the grid (each point once; refinement and colours
        not counted).
    resolution: cells per axis of the final grid (grid points per axis = resolution + 1).
    rounds: batches of new points queried (1 for dense extraction).
    timings: seconds per phase: "eval", "marching_cubes", "refine", "color".
    """

    mesh: trimesh.Trimesh
    num_queries: int
    resolution: int
    rounds: int
    timings: dict[str, float] = field(default_factory=dict)


def _check_int(value, name: str, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise ValueError(f"{name}: expected an int >= {lo}, got {value!r}")
    return int(value)


def _check_float(value, name: str, lo: float | None = None, open_lo: bool = False) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name}: expected a float, got {type(value).__name__}") from exc
    if not math.isfinite(out) or (lo is not None and (out < lo or (open_lo and out == lo))):
        bound = "" if lo is None else f" {'>' if open_lo else '>='} {lo}"
        raise ValueError(f"{name}: expected a finite float{bound}, got {value!r}")
    return out


def _resolve_level(threshold: float, level: float | None, inside: str) -> tuple[float, float]:
    """(level, sign): the field value of the surface and +1/-1 so that s * (f - level) > 0 inside."""
    if inside not in ("positive", "negative"):
        raise ValueError(f"inside: expected 'positive' (occupancy) or 'negative' (SDF), got {inside!r}")
    sign = 1.0 if inside == "positive" else -1.0
    if level is not None:
        return _check_float(level, "level"), sign
    if inside == "negative":
        return 0.0, sign  # an SDF's zero level; `threshold` is a probability of occupancy fields only
    t = _check_float(threshold, "threshold")
    if not 0.0 < t < 1.0:
        raise ValueError(f"threshold: expected a probability in (0, 1), got {threshold!r}")
    return math.log(t) - math.log1p(-t), sign  # generation.py: np.log(t) - np.log(1 - t)


def _resolve_box(box, padding: float) -> tuple[np.ndarray, np.ndarray]:
    """`box` (lo, hi) scalars or `[2, 3]`; padding grows it about its centre (DVR: box_size = 1 + padding)."""
    arr = np.asarray(box.detach().cpu() if isinstance(box, torch.Tensor) else box, dtype=np.float64)
    if arr.shape == (2,):
        arr = np.repeat(arr[:, None], 3, axis=1)
    if arr.shape != (2, 3) or not np.all(np.isfinite(arr)) or not np.all(arr[1] > arr[0]):
        raise ValueError(f"box: expected (lo, hi) with hi > lo, or a finite [2, 3] array, got {box!r}")
    pad = _check_float(padding, "padding", lo=0.0)
    centre, half = 0.5 * (arr[0] + arr[1]), 0.5 * (arr[1] - arr[0]) * (1.0 + pad)
    return centre - half, centre + half


class _GridField:
    """Evaluates z = s * (f - level) at integer grid points `[K, 3]`, in batches, without gradient."""

    def __init__(self, fn, lo, step, level, sign, batch_points, device):
        self.fn, self.lo, self.step = fn, lo, step
        self.level, self.sign, self.batch, self.device = level, sign, batch_points, device
        self.count = 0

    @torch.no_grad()
    def __call__(self, ijk: np.ndarray) -> np.ndarray:  # ijk [K, 3] int64 -> z [K] float64
        out = np.empty(len(ijk), dtype=np.float64)
        for start in range(0, len(ijk), self.batch):
            chunk = ijk[start : start + self.batch]
            pts = torch.from_numpy((self.lo + chunk * self.step).astype(np.float32)).to(self.device)
            f = column0(self.fn(pts), len(chunk), "fn").detach().to("cpu", torch.float64).numpy()
            bad = ~np.isfinite(f)
            if bad.any():
                raise ValueError(f"fn: returned {int(bad.sum())} non-finite value(s) out of {len(chunk)} points")
            out[start : start + len(chunk)] = self.sign * (f - self.level)
        self.count += len(ijk)
        return out


def _dense_grid(evaluate: _GridField, n: int) -> np.ndarray:
    """`evaluate` at every point of the `[n, n, n]` integer grid -> float32 `[n, n, n]` (C order, x, y, z)."""
    grid = np.empty(n**3, dtype=np.float32)
    rows = max(1, evaluate.batch // (n * n))  # x-slabs per batch keep the index buffer bounded
    yz = np.stack(np.meshgrid(np.arange(n), np.arange(n), indexing="ij"), -1).reshape(-1, 2)
    for i0 in range(0, n, rows):
        xs = np.arange(i0, min(i0 + rows, n), dtype=np.int64)
        ijk = np.concatenate([np.repeat(xs, len(yz))[:, None], np.tile(yz, (len(xs), 1))], axis=1)
        grid[i0 * n * n : i0 * n * n + len(ijk)] = evaluate(ijk)
    return grid.reshape(n, n, n)


def _mark(flags_pos, flags_neg, ijk: np.ndarray, z: np.ndarray, depth: int, cells: int) -> None:
    """Flag every voxel (at each level < depth) whose closed box holds a point with z >= 0 / z <= 0.

    A point touches the fine cells ijk + {-1, 0}^3 (clipped to the grid: a clipped cell still
    holds the point); a level-l voxel holds the point iff it contains one of those cells (mise.pyx
    marks the leaf that get_voxel_idx finds for each of them).
    """
    for pts, flags in ((ijk[z >= 0], flags_pos), (ijk[z <= 0], flags_neg)):
        lo, hi = np.clip(pts - 1, 0, cells - 1), np.minimum(pts, cells - 1)  # [K, 3] each
        for level in range(depth):
            shift = depth - level
            a, b = lo >> shift, hi >> shift
            flat = flags[level].reshape(-1)
            n = flags[level].shape[0]
            for cx in (a[:, 0], b[:, 0]):
                for cy in (a[:, 1], b[:, 1]):
                    for cz in (a[:, 2], b[:, 2]):
                        flat[(cx * n + cy) * n + cz] = True


def _mise_grid(evaluate: _GridField, resolution_0: int, depth: int) -> tuple[np.ndarray, int]:
    """The z grid `[R+1]^3` float32 (R = resolution_0 * 2**depth) after MISE + to_dense; and rounds."""
    cells = resolution_0 << depth
    grid = np.full((cells + 1,) * 3, np.nan, dtype=np.float32)
    # leaf[l], pos[l], neg[l]: `[resolution_0 * 2**l]^3` flags of the level-l voxels (l < depth).
    leaf = [np.zeros((resolution_0 << lv,) * 3, dtype=bool) for lv in range(depth)]
    pos = [np.zeros_like(a) for a in leaf]
    neg = [np.zeros_like(a) for a in leaf]
    if depth:
        leaf[0][:] = True
    axis = np.arange(resolution_0 + 1, dtype=np.int64) << depth
    new = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)  # [K, 3]
    rounds = 0
    while len(new):
        z = evaluate(new)
        grid[tuple(new.T)] = z
        rounds += 1
        _mark(pos, neg, new, z, depth, cells)
        corners = []
        for lv in range(depth):
            split = leaf[lv] & pos[lv] & neg[lv]
            if not split.any():
                continue
            vox = np.argwhere(split)  # [S, 3] voxel indices at level lv
            leaf[lv][split] = False
            if lv + 1 < depth:
                child = (vox[:, None, :] * 2 + _CORNERS).reshape(-1, 3)
                leaf[lv + 1][tuple(child.T)] = True
            half = 1 << (depth - lv - 1)
            corners.append(((vox << (depth - lv))[:, None, :] + _LATTICE3 * half).reshape(-1, 3))
        if not corners:
            break
        flat = np.unique(np.ravel_multi_index(tuple(np.concatenate(corners).T), grid.shape))
        flat = flat[np.isnan(grid.ravel()[flat])]  # only corners never queried
        new = np.stack(np.unravel_index(flat, grid.shape), axis=1)
    _fill_unknown(grid)
    return grid, rounds


def _fill_unknown(grid: np.ndarray) -> None:
    """mise.pyx `to_dense`: each unknown value copies its predecessor along x, then y, then z."""
    for axis in range(3):
        for i in range(1, grid.shape[axis]):
            cur = grid[(slice(None),) * axis + (i,)]
            prev = grid[(slice(None),) * axis + (i - 1,)]
            holes = np.isnan(cur)
            cur[holes] = prev[holes]


def _marching_cubes(grid: np.ndarray, lo: np.ndarray, step: np.ndarray) -> trimesh.Trimesh:
    """Closed mesh of z = 0 (z > 0 inside) on the grid padded with -1e6; vertices in box units."""
    padded = np.pad(grid, 1, mode="constant", constant_values=_PAD_VALUE)
    if not padded.max() > 0.0:
        return trimesh.Trimesh(np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64), process=False)
    from skimage.measure import marching_cubes

    # "ascent": inside is where z grows, so faces wind outwards (see meshing.py).
    verts, faces, _, _ = marching_cubes(padded, level=0.0, gradient_direction="ascent")
    verts = lo + (verts.astype(np.float64) - 1.0) * step  # undo the padding, index -> box units
    return trimesh.Trimesh(verts, faces.astype(np.int64), process=False)


def refine_mesh(
    mesh: trimesh.Trimesh,
    fn: FieldFn,
    *,
    level: float = 0.0,
    inside: Literal["positive", "negative"] = "positive",
    steps: int = 30,
    lr: float = 1e-5,
    max_faces: int = 10_000,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> trimesh.Trimesh:
    """DVR's vertex refinement (generation.py `refine_mesh`); returns a new mesh, same faces.

    Each step draws a batch of at most `max_faces` faces (shuffled per pass), one point per face
    with Dirichlet(0.5, 0.5, 0.5) barycentrics, and takes one RMSprop step (lr 1e-5, DVR) on the
    vertices `[V, 3]` for
        (sigmoid(s f(p)) - sigmoid(s level))^2 + 0.01 * ||n_face - normalize(-grad sigmoid(s f(p)))||^2,
    i.e. DVR's (sigmoid(logit) - tau)^2 for occupancy logits (s = +1, level = logit(tau)); for an
    SDF (s = -1) the same with -f. `fn` must be differentiable w.r.t. points (twice, for the
    normal term). Deterministic for a given `seed` on the CPU.
    """
    if not isinstance(mesh, trimesh.Trimesh):
        raise TypeError(f"mesh: expected a trimesh.Trimesh, got {type(mesh).__name__}")
    steps = _check_int(steps, "steps", 0)
    max_faces = _check_int(max_faces, "max_faces", 1)
    lr = _check_float(lr, "lr", lo=0.0, open_lo=True)
    level, sign = _resolve_level(0.5, level, inside)
    if steps == 0 or len(mesh.faces) == 0:
        return mesh.copy()
    dev = _infer_device(fn, device)
    tau = 1.0 / (1.0 + math.exp(-sign * level))
    verts = torch.nn.Parameter(torch.tensor(np.asarray(mesh.vertices), dtype=torch.float32, device=dev))
    faces = torch.as_tensor(np.asarray(mesh.faces), dtype=torch.int64, device=dev)
    optimizer = torch.optim.RMSprop([verts], lr=lr)
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    done = 0
    while done < steps:
        for batch in torch.randperm(len(faces), generator=gen).to(dev).split(max_faces):
            corner = verts[faces[batch]]  # [B, 3, 3]
            bary = torch.from_numpy(rng.dirichlet((0.5, 0.5, 0.5), size=len(batch))).to(dev, torch.float32)
            points = (corner * bary[:, :, None]).sum(dim=1)  # [B, 3]
            normal = torch.linalg.cross(corner[:, 1] - corner[:, 0], corner[:, 2] - corner[:, 1], dim=-1)
            normal = normal / (normal.norm(dim=1, keepdim=True) + 1e-10)
            occ = torch.sigmoid(sign * column0(fn(points), len(batch), "fn").float())
            if not occ.requires_grad:
                raise ValueError("fn: its values carry no gradient w.r.t. points; use refinement_steps=0")
            grad = torch.autograd.grad(occ.sum(), points, create_graph=True)[0]
            target = -grad / (grad.norm(dim=1, keepdim=True) + 1e-10)  # outward normal of the field
            loss = (occ - tau).pow(2).mean() + 0.01 * (normal - target).pow(2).sum(dim=1).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            done += 1
            if done >= steps:
                break
    return trimesh.Trimesh(verts.detach().cpu().double().numpy(), np.asarray(mesh.faces), process=False)


@torch.no_grad()
def vertex_colors(color_fn: FieldFn, vertices: np.ndarray, batch_points: int = 100_000, device=None) -> np.ndarray:
    """RGBA uint8 `[V, 4]` from `color_fn(points [M, 3]) -> [M, 3]` in [0, 1] at `vertices` `[V, 3]`.

    The caller applies the texture head's sigmoid (DVR's `decode_color` does); values are clipped
    to [0, 1] and scaled by 255 with truncation, alpha 255 (generation.py `estimate_colors`).
    """
    if not callable(color_fn):
        raise TypeError(f"color_fn: expected a callable, got {type(color_fn).__name__}")
    dev = _infer_device(color_fn, device)
    pts = torch.as_tensor(np.asarray(vertices), dtype=torch.float32)
    rgb = []
    for chunk in pts.split(batch_points):
        out = color_fn(chunk.to(dev))
        if not isinstance(out, torch.Tensor) or out.shape != (len(chunk), 3):
            shape = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"color_fn: must return a [M, 3] tensor, got {shape} for {len(chunk)} points")
        rgb.append(out.detach().to("cpu", torch.float64).numpy())
    rgb = np.concatenate(rgb) if rgb else np.zeros((0, 3))
    rgb = (np.clip(np.nan_to_num(rgb), 0.0, 1.0) * 255).astype(np.uint8)
    return np.concatenate([rgb, np.full((len(rgb), 1), 255, dtype=np.uint8)], axis=1)


@dataclass(frozen=True)
class _Post:
    """What happens after the grid: the field and the refinement / colour options."""

    fn: FieldFn
    level: float
    inside: str
    refinement_steps: int
    refine_lr: float
    refine_max_faces: int
    color_fn: FieldFn | None
    seed: int
    batch_points: int
    device: torch.device


def _finish(grid: np.ndarray, lo, step, evaluate: _GridField, rounds: int, t_eval: float, post: _Post) -> MiseResult:
    timings = {"eval": t_eval}
    t0 = time.perf_counter()
    mesh = _marching_cubes(grid, lo, step)
    timings["marching_cubes"] = time.perf_counter() - t0
    if post.refinement_steps > 0 and len(mesh.faces):
        t0 = time.perf_counter()
        mesh = refine_mesh(
            mesh,
            post.fn,
            level=post.level,
            inside=post.inside,
            steps=post.refinement_steps,
            lr=post.refine_lr,
            max_faces=post.refine_max_faces,
            seed=post.seed,
            device=post.device,
        )
        timings["refine"] = time.perf_counter() - t0
    if post.color_fn is not None and len(mesh.vertices):
        t0 = time.perf_counter()
        colors = vertex_colors(post.color_fn, mesh.vertices, post.batch_points, post.device)
        mesh = trimesh.Trimesh(mesh.vertices, mesh.faces, vertex_colors=colors, process=False)
        timings["color"] = time.perf_counter() - t0
    return MiseResult(mesh, evaluate.count, grid.shape[0] - 1, rounds, timings)


def _setup(fn, opts: dict) -> tuple[_Post, float, np.ndarray, np.ndarray]:
    """Validate the options shared by `mise_extract` and `dense_extract`: (post, sign, lo, hi)."""
    if not callable(fn):
        raise TypeError(f"fn: expected a callable, got {type(fn).__name__}")
    color_fn = opts["color_fn"]
    if color_fn is not None and not callable(color_fn):
        raise TypeError(f"color_fn: expected a callable or None, got {type(color_fn).__name__}")
    level, sign = _resolve_level(opts["threshold"], opts["level"], opts["inside"])
    lo, hi = _resolve_box(opts["box"], opts["padding"])
    post = _Post(
        fn=fn,
        level=level,
        inside=opts["inside"],
        refinement_steps=_check_int(opts["refinement_steps"], "refinement_steps", 0),
        refine_lr=_check_float(opts["refine_lr"], "refine_lr", lo=0.0, open_lo=True),
        refine_max_faces=_check_int(opts["refine_max_faces"], "refine_max_faces", 1),
        color_fn=color_fn,
        seed=_check_int(opts["seed"], "seed", 0),
        batch_points=_check_int(opts["batch_points"], "batch_points", 1),
        device=_infer_device(fn, opts["device"]),
    )
    return post, sign, lo, hi


def mise_extract(
    fn: FieldFn,
    *,
    resolution_0: int = 32,
    upsampling_steps: int = 3,
    threshold: float = 0.5,
    level: float | None = None,
    inside: Literal["positive", "negative"] = "positive",
    box: Sequence[float] | np.ndarray = (-0.5, 0.5),
    padding: float = 0.0,
    batch_points: int = 100_000,
    refinement_steps: int = 30,
    refine_lr: float = 1e-5,
    refine_max_faces: int = 10_000,
    color_fn: FieldFn | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> MiseResult:
    """Extract the surface of an implicit field with MISE + marching cubes (+ refinement, colours).

    Args:
        fn: points `[M, 3]` float32 -> `[M]` or `[M, 1 + F]`; column 0 is the field (DVR: the
            occupancy logit, positive inside). Called under no_grad for the grid; refinement
            differentiates it w.r.t. the points.
        resolution_0: coarse cells per axis (DVR default.yaml `resolution_0: 32`).
        upsampling_steps: octree levels (default.yaml 3 -> 256 cells; DTU configs 4 -> 512).
            0 evaluates the dense (resolution_0 + 1)^3 grid (DVR's shortcut uses resolution_0
            points per axis instead).
        threshold: occupancy probability of the surface (test.threshold 0.5); the level is
            logit(threshold). Used only when `level` is None and `inside="positive"`.
        level: the surface's field value for generic fields (overrides `threshold`; an SDF's 0
            when None and `inside="negative"`).
        inside: "positive" (occupancy: inside where f > level) or "negative" (SDF).
        box: (lo, hi) per axis or a `[2, 3]` array; DVR's unit cube (-0.5, 0.5).
        padding: the box grows by this fraction about its centre (default.yaml `padding: 0.0`).
        batch_points: points per field call (generation.py `points_batch_size` 100000).
        refinement_steps, refine_lr, refine_max_faces: see `refine_mesh` (default.yaml:
            `refinement_step: 30`, `refine_max_faces: 10000`; generation.py RMSprop lr 1e-5).
        color_fn: optional texture field, points `[M, 3]` -> RGB `[M, 3]` in [0, 1] (sigmoid
            applied by the caller), sampled at the final vertices -> uint8 RGBA vertex colours.
        seed: seeds the refinement's face order and barycentric samples.
        device: where points are made; default: `fn`'s parameters' device, else CPU.

    Returns:
        `MiseResult` (mesh in box coordinates, num_queries = grid points evaluated, once each).
    """
    opts = dict(locals())  # every keyword argument, validated by _setup
    post, sign, lo, hi = _setup(fn, opts)
    resolution_0 = _check_int(resolution_0, "resolution_0", 1)
    depth = _check_int(upsampling_steps, "upsampling_steps", 0)
    if depth > 6:
        raise ValueError(f"upsampling_steps: expected at most 6 (a [resolution_0 * 64 + 1]^3 grid), got {depth}")
    step = (hi - lo) / (resolution_0 << depth)
    evaluate = _GridField(fn, lo, step, post.level, sign, post.batch_points, post.device)
    t0 = time.perf_counter()
    grid, rounds = _mise_grid(evaluate, resolution_0, depth)
    return _finish(grid, lo, step, evaluate, rounds, time.perf_counter() - t0, post)


def dense_extract(
    fn: FieldFn,
    resolution: int = 256,
    *,
    threshold: float = 0.5,
    level: float | None = None,
    inside: Literal["positive", "negative"] = "positive",
    box: Sequence[float] | np.ndarray = (-0.5, 0.5),
    padding: float = 0.0,
    batch_points: int = 100_000,
    refinement_steps: int = 0,
    refine_lr: float = 1e-5,
    refine_max_faces: int = 10_000,
    color_fn: FieldFn | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> MiseResult:
    """Marching cubes on the full `[resolution + 1]^3` grid, with MISE's conventions.

    The baseline MISE is measured against: `mise_extract(resolution_0=r0, upsampling_steps=k)`
    and `dense_extract(resolution=r0 * 2**k)` sample the same grid points, pad, mesh and place
    vertices identically; only MISE skips points away from the surface. Arguments as
    `mise_extract` (refinement off by default here).
    """
    opts = dict(locals())  # every keyword argument, validated by _setup
    post, sign, lo, hi = _setup(fn, opts)
    resolution = _check_int(resolution, "resolution", 1)
    step = (hi - lo) / resolution
    evaluate = _GridField(fn, lo, step, post.level, sign, post.batch_points, post.device)
    t0 = time.perf_counter()
    grid = _dense_grid(evaluate, resolution + 1)
    return _finish(grid, lo, step, evaluate, 1, time.perf_counter() - t0, post)
