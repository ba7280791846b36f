"""Mesh extraction from implicit fields: chunked grid evaluation + marching cubes.

The field is any torch callable (an SDF network, an occupancy network, an analytic lambda):
points `[N, 3]` (float32, field coordinates) -> values `[N]` or `[N, C]` (column 0 is used).
The grid is evaluated chunk by chunk under `torch.no_grad()`; point coordinates are built per
chunk from flat indices, so the only full-size buffer is the float32 value grid
(res^3 * 4 bytes: 512 MiB at 512^3). That is the fix for the OOMs users hit when meshing
IDR/DeepSDF networks at 512^3 (lioryariv/idr #18).

Conventions: the grid spans `bound` with `resolution` samples per axis (corners included), so
the voxel size is `(hi - lo) / (resolution - 1)`. Vertices come back in field coordinates, or in
world units when `T_world_field` (4x4, field -> world) is given. Faces are always oriented with
normals pointing out of the object ("inside" is where the SDF is negative, or where an
occupancy value is above `level`).

Narrow band (`narrow_band=b`, for distance-like fields such as trained SDF networks): the field is
evaluated on a coarse lattice, then, level by level with half the spacing, only inside cells whose
corners come within b cell diagonals of `level`; the rest of the grid is filled by trilinear
interpolation from the coarser level. For a 1-Lipschitz field and b >= 1 a skipped cell cannot hold the
surface nor a sign change, so marching cubes gives the same mesh as the dense grid (tested), with
queries growing with the surface's area (R^2) instead of the volume (R^3). b = 2 leaves room for
networks whose gradient norm exceeds 1 (the eikonal term keeps IDR's near 1).

No Taichi needed; no side effects at import.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import torch
import trimesh

__all__ = ["extract_mesh", "grid_marching_cubes", "save_mesh"]

FieldFn = Callable[[torch.Tensor], torch.Tensor]


def _as_bound(bound) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(bound, torch.Tensor):
        bound = bound.detach().cpu().numpy()
    try:
        arr = np.asarray(bound, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"bound: expected ((xmin, ymin, zmin), (xmax, ymax, zmax)), got {bound!r}") from exc
    if arr.shape != (2, 3):
        raise ValueError(f"bound: expected shape [2, 3] ((min xyz), (max xyz)), got shape {list(arr.shape)}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"bound: values must be finite, got {arr.tolist()}")
    if not np.all(arr[1] > arr[0]):
        raise ValueError(f"bound: max must exceed min on every axis, got min={arr[0].tolist()} max={arr[1].tolist()}")
    return arr[0], arr[1]


def _as_transform(T) -> np.ndarray | None:
    if T is None:
        return None
    if isinstance(T, torch.Tensor):
        T = T.detach().cpu().numpy()
    arr = np.asarray(T, dtype=np.float64)
    if arr.shape != (4, 4):
        raise ValueError(f"T_world_field: expected a [4, 4] matrix, got shape {list(arr.shape)}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("T_world_field: contains non-finite values")
    if abs(np.linalg.det(arr[:3, :3])) < 1e-12:
        raise ValueError("T_world_field: the 3x3 linear part is singular")
    return arr


def _infer_device(field_fn: FieldFn, device) -> torch.device:
    if device is not None:
        return torch.device(device)
    # An nn.Module (or anything with .parameters()) tells us where it lives; else CPU.
    params = getattr(field_fn, "parameters", None)
    if callable(params):
        try:
            first = next(iter(params()))
            return first.device
        except (StopIteration, TypeError):
            pass
    return torch.device("cpu")


@torch.no_grad()
def _evaluate_grid(
    field_fn: FieldFn,
    res: int,
    lo: np.ndarray,
    step: np.ndarray,
    chunk_size: int,
    device: torch.device,
    progress: bool,
) -> tuple[np.ndarray, int, float, float]:
    """Fill a float32 `[res, res, res]` grid (C order, axes x, y, z) with column 0 of the field.

    Returns (values, number of non-finite values, min finite value, max finite value).
    """
    total = res**3
    values = np.empty(total, dtype=np.float32)
    lo_t = torch.as_tensor(lo, dtype=torch.float64, device=device)
    step_t = torch.as_tensor(step, dtype=torch.float64, device=device)
    n_bad = 0
    vmin, vmax = np.inf, -np.inf

    starts = range(0, total, chunk_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, total=(total + chunk_size - 1) // chunk_size, desc="meshing", unit="chunk")
    for start in starts:
        stop = min(start + chunk_size, total)
        flat = torch.arange(start, stop, device=device, dtype=torch.int64)
        ijk = torch.stack((flat // (res * res), (flat // res) % res, flat % res), dim=-1)
        # Coordinates in float64 then cast, so grid points are exact up to float32 rounding.
        pts = (lo_t + ijk.to(torch.float64) * step_t).to(torch.float32)
        out = column0(field_fn(pts), stop - start).detach().to(torch.float32)
        finite = torch.isfinite(out)
        n_bad += int((~finite).sum())
        if bool(finite.any()):
            fin = out[finite]
            vmin = min(vmin, float(fin.min()))
            vmax = max(vmax, float(fin.max()))
        values[start:stop] = out.cpu().numpy()
    return values.reshape(res, res, res), n_bad, vmin, vmax


def column0(out, n: int, name: str = "field_fn") -> torch.Tensor:
    """Column 0 of a field's output for `n` points, `[n]` (dtype kept); a wrong type or shape is a
    named error (`name`: the callable's argument name). Shared with `mise`."""
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"{name}: must return a torch.Tensor, got {type(out).__name__}")
    if out.dim() == 2:
        out = out[:, 0]
    elif out.dim() != 1:
        raise ValueError(f"{name}: must return [N] or [N, C] values, got shape {list(out.shape)}")
    if out.shape[0] != n:
        raise ValueError(f"{name}: returned {out.shape[0]} values for {n} points")
    return out


def _query(field_fn: FieldFn, ijk: torch.Tensor, lo_t, step_t, chunk_size: int) -> torch.Tensor:
    """Column 0 of the field at integer grid points `ijk [M, 3]` -> float32 `[M]` (checked)."""
    out_all = []
    for start in range(0, ijk.shape[0], chunk_size):
        pts = (lo_t + ijk[start : start + chunk_size].to(torch.float64) * step_t).to(torch.float32)
        out_all.append(column0(field_fn(pts), pts.shape[0]).detach().to(torch.float32))
    return torch.cat(out_all) if out_all else torch.zeros(0)


def _evaluate_narrow_band(
    field_fn: FieldFn, res: int, lo: np.ndarray, step: np.ndarray, level: float, band: float,
    chunk_size: int, device: torch.device, progress: bool,
) -> tuple[np.ndarray, int, float, float, int]:  # fmt: skip
    """The `[res, res, res]` grid of `_evaluate_grid`, exact wherever a cell may hold the surface
    (module docstring). Returns (values, non-finite count, min, max, number of field queries)."""
    coarse = 1
    while (res - 1) / (coarse * 2) >= 16:  # the coarsest lattice keeps >= 16 cells per axis
        coarse *= 2
    n_cells = -(-(res - 1) // coarse)
    size = n_cells * coarse + 1  # padded so every level's cells are whole (a few samples past `hi`)
    lo_t = torch.as_tensor(lo, dtype=torch.float64, device=device)
    step_t = torch.as_tensor(step, dtype=torch.float64, device=device)
    cell_diag = float(np.linalg.norm(step))  # one fine cell's diagonal, field units
    axis = torch.arange(0, size, coarse, device=device)
    ijk = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    grid = _query(field_fn, ijk, lo_t, step_t, chunk_size).reshape(len(axis), len(axis), len(axis))
    queries, n_bad = grid.numel(), int((~torch.isfinite(grid)).sum())
    finite = grid[torch.isfinite(grid)]
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.numel() else (np.inf, -np.inf)
    stride = coarse
    levels = range(int(np.log2(coarse)))
    if progress:
        from tqdm.auto import tqdm

        levels = tqdm(levels, desc="meshing (narrow band)", unit="level")
    for _ in levels:
        # Cells of the current lattice that may hold the surface: a corner within `band` diagonals.
        near = (grid - level).abs() < band * stride * cell_diag
        near = ~torch.isfinite(grid) | near
        c = near.to(torch.float32)[None, None]
        active = torch.nn.functional.max_pool3d(c, 2, stride=1)[0, 0] > 0  # [n, n, n] cells
        # Refine: interpolate the lattice at half the spacing, then query the points of active cells.
        fine = torch.nn.functional.interpolate(grid[None, None], size=tuple(2 * n - 1 for n in grid.shape),
                                               mode="trilinear", align_corners=True)[0, 0]  # fmt: skip
        cells = torch.nonzero(active)  # [A, 3] lower corners on the current lattice
        offsets = torch.stack(torch.meshgrid(*(torch.arange(3, device=device),) * 3, indexing="ij"), -1).reshape(-1, 3)
        sub = (cells[:, None] * 2 + offsets[None]).reshape(-1, 3)  # fine-lattice points of active cells
        flat = sub[:, 0] * fine.shape[1] * fine.shape[2] + sub[:, 1] * fine.shape[2] + sub[:, 2]
        flat = torch.unique(flat)
        sub = torch.stack((flat // (fine.shape[1] * fine.shape[2]), (flat // fine.shape[2]) % fine.shape[1], flat % fine.shape[2]), -1)
        new = sub[(sub % 2).any(-1)]  # points not on the current lattice (those are known)
        stride //= 2
        vals = _query(field_fn, new * stride, lo_t, step_t, chunk_size)
        queries += vals.numel()
        bad = ~torch.isfinite(vals)
        n_bad += int(bad.sum())
        if bool((~bad).any()):
            vmin, vmax = min(vmin, float(vals[~bad].min())), max(vmax, float(vals[~bad].max()))
        fine[new[:, 0], new[:, 1], new[:, 2]] = vals
        grid = fine
    values = grid[:res, :res, :res].cpu().numpy().astype(np.float32, copy=False)
    return np.ascontiguousarray(values), n_bad, vmin, vmax, queries


def grid_marching_cubes(
    values: np.ndarray, level: float, lo: np.ndarray, step: np.ndarray, inside: Literal["negative", "positive"] = "negative"
) -> tuple[np.ndarray, np.ndarray]:
    """Marching cubes (skimage) of a `[X, Y, Z]` value grid sampled at `lo + ijk * step`.

    Returns vertices `[V, 3]` float64 in field coordinates and faces `[F, 3]` int64 wound so that
    face normals point out of the object (`inside` as in `extract_mesh`). The grid must cross `level`.
    """
    from skimage.measure import marching_cubes

    # skimage's winding with gradient_direction="descent" gives normals along +grad (checked
    # empirically on skimage 0.26): outward for an SDF, inward for occupancy, hence "ascent" there.
    direction = "descent" if inside == "negative" else "ascent"
    verts, faces, _, _ = marching_cubes(values, level=level, gradient_direction=direction)
    verts = lo + verts.astype(np.float64) * step  # voxel index -> field coordinates
    return verts, faces.astype(np.int64)


def extract_mesh(
    field_fn: FieldFn,
    resolution: int = 256,
    bound: Sequence[Sequence[float]] | np.ndarray | torch.Tensor = ((-1, -1, -1), (1, 1, 1)),
    level: float = 0.0,
    chunk_size: int = 2**18,
    device: torch.device | str | None = None,
    largest_component: bool = False,
    T_world_field: np.ndarray | torch.Tensor | None = None,
    inside: Literal["negative", "positive"] = "negative",
    progress: bool = False,
    narrow_band: float | None = None,
    stats: dict | None = None,
) -> trimesh.Trimesh:
    """Extract the `level` iso-surface of an implicit field with marching cubes.

    Args:
        field_fn: callable, points `[N, 3]` float32 (field coordinates, on `device`) -> values
            `[N]` or `[N, C]`; column 0 is meshed. Called under `torch.no_grad()`.
        resolution: samples per axis (>= 2); voxel size is `(hi - lo) / (resolution - 1)`.
            DeepSDF uses 256 over [-1, 1]^3; IDR's final meshes use 512.
        bound: `[2, 3]` box ((xmin, ymin, zmin), (xmax, ymax, zmax)) in field coordinates.
        level: iso-value (0 for SDFs and occupancy logits, 0.5 for probabilities).
        chunk_size: points per field evaluation (DeepSDF queries 2**18 at a time).
        device: where points are created; default: the device of `field_fn`'s parameters if it
            has any, else CPU.
        largest_component: keep only the connected component with the most faces (IDR eval).
        T_world_field: optional `[4, 4]` field -> world transform applied to the vertices
            (e.g. IDR's `scale_mat`, DVR's `scale_mat`, or DeepSDF's inverse normalisation).
        inside: "negative" for SDFs (inside where value < level), "positive" for occupancy
            logits or probabilities (inside where value > level).
        progress: show a tqdm bar over chunks.
        narrow_band: None evaluates every grid point; b > 0 evaluates only near the surface (cells
            whose corners are within b cell diagonals of `level`, refined from a coarse lattice; see
            the module docstring): the same mesh for distance-like fields (SDFs with gradient norm
            <= b), at a small share of the queries. Not for occupancy fields.
        stats: if a dict, receives {"queries": field evaluations made}.

    Returns:
        `trimesh.Trimesh` with vertices `[V, 3]` (world units if `T_world_field` is given) and
        faces `[F, 3]` wound so that face normals point outwards.

    Raises:
        ValueError: bad arguments (named), non-finite field values (counted), or a level that the
            field never crosses inside the grid (min/max reported).
    """
    if not callable(field_fn):
        raise TypeError(f"field_fn: expected a callable, got {type(field_fn).__name__}")
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) or resolution < 2:
        raise ValueError(f"resolution: expected an int >= 2, got {resolution!r}")
    resolution = int(resolution)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ValueError(f"chunk_size: expected an int >= 1, got {chunk_size!r}")
    if inside not in ("negative", "positive"):
        raise ValueError(f"inside: expected 'negative' (SDF) or 'positive' (occupancy), got {inside!r}")
    try:
        level = float(level)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"level: expected a float, got {level!r}") from exc
    if not np.isfinite(level):
        raise ValueError(f"level: must be finite, got {level}")
    lo, hi = _as_bound(bound)
    T = _as_transform(T_world_field)
    dev = _infer_device(field_fn, device)

    step = (hi - lo) / (resolution - 1)
    if narrow_band is not None:
        if isinstance(narrow_band, bool) or not isinstance(narrow_band, (int, float)) or not narrow_band > 0:
            raise ValueError(f"narrow_band: expected None (dense) or a number of cell diagonals > 0, got {narrow_band!r}")
        with torch.no_grad():
            values, n_bad, vmin, vmax, queries = _evaluate_narrow_band(field_fn, resolution, lo, step, level, float(narrow_band),
                                                                       int(chunk_size), dev, progress)  # fmt: skip
    else:
        values, n_bad, vmin, vmax = _evaluate_grid(field_fn, resolution, lo, step, int(chunk_size), dev, progress)
        queries = values.size
    if stats is not None:
        stats["queries"] = int(queries)
    if n_bad:
        raise ValueError(
            f"field_fn: returned {n_bad} non-finite value(s) (NaN/inf) out of {values.size} grid points; "
            "check the network or the bound"
        )
    if not (vmin < level < vmax):
        raise ValueError(
            f"level: the field never crosses level={level} inside the grid "
            f"(min value {vmin:.6g}, max value {vmax:.6g}); check level, bound and inside={inside!r}"
        )

    verts, faces = grid_marching_cubes(values, level, lo, step, inside)
    del values
    if T is not None:
        verts = verts @ T[:3, :3].T + T[:3, 3]
        if np.linalg.det(T[:3, :3]) < 0:
            faces = faces[:, ::-1].copy()  # a reflection flips the winding; restore outward normals

    mesh = trimesh.Trimesh(vertices=verts, faces=faces, process=False)
    if largest_component:
        parts = mesh.split(only_watertight=False)
        if len(parts) > 1:
            mesh = max(parts, key=lambda m: len(m.faces))
    return mesh


def save_mesh(mesh: trimesh.Trimesh, path: str | os.PathLike) -> str:
    """Write `mesh` to `path` (.ply binary or .obj) atomically; returns the path as str.

    The data goes to a temporary file in the same directory, is fsynced, then `os.replace`d over
    `path`, so readers never see a half-written mesh.
    """
    from taichi_sdf.train.checkpoint import atomic_write_bytes

    if not isinstance(mesh, trimesh.Trimesh):
        raise TypeError(f"mesh: expected a trimesh.Trimesh, got {type(mesh).__name__}")
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    if ext not in ("ply", "obj"):
        raise ValueError(f"path: expected a .ply or .obj file name, got {path!r}")
    data = mesh.export(file_type=ext)
    if isinstance(data, str):
        data = data.encode("utf-8")
    atomic_write_bytes(path, data)
    return path
