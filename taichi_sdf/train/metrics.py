"""Evaluation metrics: Chamfer / accuracy / completeness, normal consistency, F-score, PSNR, IoU.

Conventions (stated once, used everywhere; points in the same units, e.g. world units):

- "a" is the prediction, "b" the ground truth.
- accuracy     = mean over a of the Euclidean distance to the nearest b point (pred -> GT).
- completeness = mean over b of the Euclidean distance to the nearest a point (GT -> pred).
- chamfer_l1   = 0.5 * (accuracy + completeness). This is DVR/OccNet's "Chamfer-L1" (Euclidean,
  not squared, distances; OccNet/DVR papers multiply it by 10) and the "overall" of the DTU
  evaluation (DTUeval-python).
- chamfer_l2   = 0.5 * (mean squared distance a -> b + mean squared distance b -> a) (OccNet).
- `deepsdf_chamfer` = mean squared a -> b + mean squared b -> a (a sum, no 0.5; DeepSDF's
  `compute_trimesh_chamfer`, reported x1000 in its paper) = 2 * chamfer_l2.
- normal consistency = 0.5 * (mean |n_a . n_nn(b)| + mean |n_b . n_nn(a)|), orientation-free.
- F-score at threshold t: precision = fraction of a closer than t to b, recall = fraction of b
  closer than t to a (strict `<`, as OccNet), F = 2PR / (P + R), 0 when P = R = 0.
- PSNR follows IDR: MSE over the masked pixels only, PSNR = 10 log10(max_value^2 / MSE).

Nearest neighbours use `scipy.spatial.cKDTree` on float64 copies. Inputs may be numpy arrays or
torch tensors (any device; they are copied to the CPU).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import trimesh
from scipy.spatial import cKDTree

from taichi_sdf.data.image_io import sniff

__all__ = [
    "chamfer_distance",
    "deepsdf_chamfer",
    "normal_consistency",
    "fscore",
    "sample_surface",
    "evaluate_mesh",
    "psnr",
    "mask_iou",
    "mesh_contains",
    "evaluate_occnet",
    "write_eval_tables",
    "DVR_FSCORE_THRESHOLDS",
    "load_geometry",
    "load_transform",
    "frame_mismatch",
]


def _to_numpy(x: Any, name: str) -> np.ndarray:
    try:
        import torch

        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
    except ImportError:  # pragma: no cover - torch is a hard dependency of the package
        pass
    try:
        return np.asarray(x)
    except Exception as exc:  # noqa: BLE001 - report anything unconvertible uniformly
        raise ValueError(f"{name}: cannot convert {type(x).__name__} to an array") from exc


def _points(x: Any, name: str) -> np.ndarray:
    """Validate a point set `[N, 3]` (N >= 1, finite) and return it as float64."""
    arr = _to_numpy(x, name)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"{name}: expected points of shape [N, 3], got shape {list(arr.shape)}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name}: empty point set (shape [0, 3])")
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise ValueError(f"{name}: expected a real numeric array, got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: contains {int((~np.isfinite(arr)).any(axis=1).sum())} non-finite point(s)")
    return arr


def _normals(x: Any, name: str, n: int) -> np.ndarray:
    """Validate normals `[n, 3]` and return them normalised (zero vectors stay zero)."""
    arr = _points(x, name)
    if arr.shape[0] != n:
        raise ValueError(f"{name}: expected {n} normals (one per point), got {arr.shape[0]}")
    norm = np.linalg.norm(arr, axis=1, keepdims=True)
    return arr / np.maximum(norm, 1e-12)


def _nn(query: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance `[len(query)]` to and index of the nearest `ref` point for each query point."""
    dist, idx = cKDTree(ref).query(query, k=1, workers=-1)
    return dist, idx


def chamfer_distance(points_a: Any, points_b: Any) -> dict[str, float]:
    """Accuracy, completeness and Chamfer-L1/L2 between point sets.

    Args:
        points_a: `[N, 3]` predicted points.
        points_b: `[M, 3]` ground-truth points.

    Returns:
        dict with
        - "accuracy": mean over a of ||a - nn_b(a)|| (pred -> GT),
        - "completeness": mean over b of ||b - nn_a(b)|| (GT -> pred),
        - "chamfer_l1": 0.5 * (accuracy + completeness) (DVR/OccNet, Euclidean not squared),
        - "chamfer_l2": 0.5 * (mean ||a - nn_b(a)||^2 + mean ||b - nn_a(b)||^2).
        DeepSDF's "chamfer" is the sum of the two squared means (see `deepsdf_chamfer`).
    """
    a = _points(points_a, "points_a")
    b = _points(points_b, "points_b")
    d_ab, _ = _nn(a, b)
    d_ba, _ = _nn(b, a)
    acc = float(d_ab.mean())
    comp = float(d_ba.mean())
    return {
        "accuracy": acc,
        "completeness": comp,
        "chamfer_l1": 0.5 * (acc + comp),
        "chamfer_l2": 0.5 * (float(np.mean(d_ab**2)) + float(np.mean(d_ba**2))),
    }


def deepsdf_chamfer(points_a: Any, points_b: Any) -> float:
    """DeepSDF's Chamfer: mean squared NN distance a -> b plus mean squared NN distance b -> a.

    `points_a` `[N, 3]`, `points_b` `[M, 3]`. Equals 2 * `chamfer_distance(...)["chamfer_l2"]`.
    DeepSDF samples 30k points on each side and reports this value x1000.
    """
    a = _points(points_a, "points_a")
    b = _points(points_b, "points_b")
    d_ab, _ = _nn(a, b)
    d_ba, _ = _nn(b, a)
    return float(np.mean(d_ab**2)) + float(np.mean(d_ba**2))


def normal_consistency(points_a: Any, normals_a: Any, points_b: Any, normals_b: Any) -> float:
    """0.5 * (mean |n_a . n_b(nn_b(a))| + mean |n_b . n_a(nn_a(b))|), normals normalised first.

    Args:
        points_a, normals_a: `[N, 3]` predicted points and normals.
        points_b, normals_b: `[M, 3]` ground-truth points and normals.

    The absolute value makes it independent of normal orientation (1 = parallel, 0 = perpendicular).
    """
    a = _points(points_a, "points_a")
    b = _points(points_b, "points_b")
    na = _normals(normals_a, "normals_a", a.shape[0])
    nb = _normals(normals_b, "normals_b", b.shape[0])
    _, i_ab = _nn(a, b)
    _, i_ba = _nn(b, a)
    nc_a = np.abs(np.sum(na * nb[i_ab], axis=1)).mean()
    nc_b = np.abs(np.sum(nb * na[i_ba], axis=1)).mean()
    return float(0.5 * (nc_a + nc_b))


def _check_thresholds(thresholds: Any) -> list[float]:
    if isinstance(thresholds, (int, float)) and not isinstance(thresholds, bool):
        thresholds = (thresholds,)
    try:
        ts = [float(t) for t in thresholds]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"thresholds: expected a sequence of positive floats, got {thresholds!r}") from exc
    if not ts or any(not np.isfinite(t) or t <= 0 for t in ts):
        raise ValueError(f"thresholds: expected a non-empty sequence of positive floats, got {thresholds!r}")
    return ts


def _prf(d_ab: np.ndarray, d_ba: np.ndarray, t: float) -> tuple[float, float, float]:
    p = float(np.mean(d_ab < t))
    r = float(np.mean(d_ba < t))
    f = 2.0 * p * r / (p + r) if p + r > 0 else 0.0
    return p, r, f


def fscore(
    points_a: Any, points_b: Any, thresholds: float | Sequence[float] = (0.01,)
) -> dict[float, tuple[float, float, float]]:
    """Precision, recall and F-score at each distance threshold.

    Args:
        points_a: `[N, 3]` predicted points.
        points_b: `[M, 3]` ground-truth points.
        thresholds: positive distances, same units as the points.

    Returns:
        {t: (precision, recall, fscore)}: precision = fraction of a with NN distance to b < t,
        recall = fraction of b with NN distance to a < t, F = 2PR/(P+R) (0 if both are 0).
    """
    ts = _check_thresholds(thresholds)
    a = _points(points_a, "points_a")
    b = _points(points_b, "points_b")
    d_ab, _ = _nn(a, b)
    d_ba, _ = _nn(b, a)
    return {t: _prf(d_ab, d_ba, t) for t in ts}


def sample_surface(mesh: trimesh.Trimesh, n: int, seed: int | None = 0) -> tuple[np.ndarray, np.ndarray]:
    """Sample `n` points uniformly by area on `mesh`, with the normals of their faces.

    Returns:
        points `[n, 3]` float64 and unit normals `[n, 3]` float64. Deterministic for a given seed.
    """
    if not isinstance(mesh, trimesh.Trimesh):
        raise TypeError(f"mesh: expected a trimesh.Trimesh, got {type(mesh).__name__}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n: expected an int >= 1, got {n!r}")
    if len(mesh.faces) == 0 or not mesh.area > 0:
        raise ValueError("mesh: has no faces (or zero surface area); nothing to sample")
    points, face_idx = trimesh.sample.sample_surface(mesh, int(n), seed=seed)
    normals = np.asarray(mesh.face_normals[face_idx], dtype=np.float64)
    return np.asarray(points, dtype=np.float64), normals


def _as_samples(x: Any, name: str, n_points: int, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Mesh -> sampled (points, normals); (points, normals) tuple; PointCloud or `[N, 3]` -> (points, None)."""
    if isinstance(x, trimesh.Trimesh):
        if len(x.faces) == 0:
            raise ValueError(f"{name}: mesh has no faces")
        return sample_surface(x, n_points, seed=seed)
    if isinstance(x, trimesh.PointCloud):
        return _points(x.vertices, name), None
    if isinstance(x, (tuple, list)) and len(x) == 2 and _to_numpy(x[0], name).ndim == 2:
        pts = _points(x[0], f"{name}[0] (points)")
        return pts, _normals(x[1], f"{name}[1] (normals)", pts.shape[0])
    return _points(x, name), None


def evaluate_mesh(
    pred_mesh_or_points: Any,
    gt_mesh_or_points: Any,
    n_points: int = 100_000,
    thresholds: float | Sequence[float] = (0.01,),
    seed: int = 0,
) -> dict[str, float]:
    """All geometry metrics between a prediction and the ground truth (OccNet/DVR protocol).

    Each side may be a `trimesh.Trimesh` (then `n_points` points and face normals are sampled on
    it; DVR samples 100k), a `trimesh.PointCloud`, points `[N, 3]`, or a tuple
    (points `[N, 3]`, normals `[N, 3]`). Units are those of the inputs.

    Returns:
        flat dict (JSON-ready): accuracy, completeness, chamfer_l1, chamfer_l2, deepsdf_chamfer,
        normal_consistency (only when both sides have normals), and for each threshold t
        "precision@t", "recall@t", "fscore@t".
    """
    if isinstance(n_points, bool) or not isinstance(n_points, (int, np.integer)) or n_points < 1:
        raise ValueError(f"n_points: expected an int >= 1, got {n_points!r}")
    ts = _check_thresholds(thresholds)
    # Different seeds per side so that two identical meshes are not sampled at identical points.
    pa, na = _as_samples(pred_mesh_or_points, "pred_mesh_or_points", n_points, seed)
    pb, nb = _as_samples(gt_mesh_or_points, "gt_mesh_or_points", n_points, seed + 1)

    d_ab, i_ab = _nn(pa, pb)
    d_ba, i_ba = _nn(pb, pa)
    acc, comp = float(d_ab.mean()), float(d_ba.mean())
    sq_ab, sq_ba = float(np.mean(d_ab**2)), float(np.mean(d_ba**2))
    out: dict[str, float] = {
        "accuracy": acc,
        "completeness": comp,
        "chamfer_l1": 0.5 * (acc + comp),
        "chamfer_l2": 0.5 * (sq_ab + sq_ba),
        "deepsdf_chamfer": sq_ab + sq_ba,
    }
    if na is not None and nb is not None:
        nc_a = np.abs(np.sum(na * nb[i_ab], axis=1)).mean()
        nc_b = np.abs(np.sum(nb * na[i_ba], axis=1)).mean()
        out["normal_consistency"] = float(0.5 * (nc_a + nc_b))
    for t in ts:
        p, r, f = _prf(d_ab, d_ba, t)
        out[f"precision@{t:g}"] = p
        out[f"recall@{t:g}"] = r
        out[f"fscore@{t:g}"] = f
    return out


def psnr(pred: Any, target: Any, mask: Any = None, max_value: float = 1.0) -> float:
    """Masked PSNR in dB, following IDR's evaluation.

    Args:
        pred: `[..., C]` image(s), e.g. `[H, W, 3]` or `[B, H, W, 3]`, values in [0, max_value].
        target: same shape as `pred`.
        mask: `[...]` (pred.shape[:-1]) bool or 0/1; None = all pixels. The MSE is averaged over
            the masked pixels (and all channels) only.
        max_value: peak signal value (1.0 for images in [0, 1], 255 for uint8).

    Returns:
        10 * log10(max_value^2 / MSE); inf for identical images.

    Raises:
        ValueError: mismatched shapes or an empty mask (named).
    """
    p = _to_numpy(pred, "pred").astype(np.float64)
    t = _to_numpy(target, "target").astype(np.float64)
    if p.ndim < 1:
        raise ValueError("pred: expected shape [..., C], got a scalar")
    if p.shape != t.shape:
        raise ValueError(f"target: shape {list(t.shape)} does not match pred shape {list(p.shape)}")
    if not (isinstance(max_value, (int, float)) and not isinstance(max_value, bool) and max_value > 0):
        raise ValueError(f"max_value: expected a positive number, got {max_value!r}")
    sq = (p - t) ** 2
    if mask is None:
        sel = sq.reshape(-1)
    else:
        m = _to_numpy(mask, "mask")
        if m.shape != p.shape[:-1]:
            raise ValueError(f"mask: expected shape {list(p.shape[:-1])} (pred.shape[:-1]), got {list(m.shape)}")
        m = m.astype(bool)  # nonzero = inside
        if not m.any():
            raise ValueError("mask: is empty (no pixel selected); PSNR is undefined")
        sel = sq[m].reshape(-1)
    mse = float(sel.mean())
    if not np.isfinite(mse):
        raise ValueError("pred/target: contain non-finite values")
    if mse == 0.0:
        return float("inf")
    return float(10.0 * np.log10(max_value**2 / mse))


def mask_iou(pred_mask: Any, gt_mask: Any) -> float:
    """Intersection over union of two boolean masks of the same shape (nonzero = inside).

    Returns |pred & gt| / |pred | gt|; 1.0 when both masks are empty (they agree perfectly).
    """
    p = _to_numpy(pred_mask, "pred_mask")
    g = _to_numpy(gt_mask, "gt_mask")
    if p.shape != g.shape:
        raise ValueError(f"gt_mask: shape {list(g.shape)} does not match pred_mask shape {list(p.shape)}")
    p, g = p.astype(bool), g.astype(bool)
    union = int(np.logical_or(p, g).sum())
    if union == 0:
        return 1.0
    return float(np.logical_and(p, g).sum() / union)


def load_geometry(path: str | Path, transform: np.ndarray | None = None):
    """A trimesh mesh, or points `[N, 3]` (with normals `[N, 3]`: a tuple) for point clouds, read from
    `path` and optionally mapped by a 4x4 `transform` (see `load_transform`).

    Meshes are read without trimesh's processing (which drops NaN vertices and their faces silently)
    and then checked; a scene of several meshes (a .glb) is their union in the scene's frame. Raises
    ValueError naming the file for a missing, empty or mis-named file, a file trimesh cannot read,
    no geometry, non-finite coordinates or a face index past the vertex count.
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{p}: file not found")
    suffix = p.suffix.lower()
    kind = sniff(p)
    mesh_exts = sorted(f".{e}" for e in trimesh.available_formats() if e in ("ply", "obj", "off", "stl", "glb", "gltf"))
    expected = f"expected a mesh ({'/'.join(mesh_exts)}) or points (.npy [N, 3])"
    if kind == "empty (0 bytes)":
        raise ValueError(f"{p}: the file is empty (0 bytes); {expected}")
    if suffix == ".npy":
        return _load_points(p, kind, transform)
    if suffix[1:] not in trimesh.available_formats():
        raise ValueError(f"{p}: unknown extension {p.suffix!r}; {expected}")
    if kind.endswith("image") or kind.startswith(("numpy", "zip")):
        raise ValueError(f"{p}: the file holds a {kind}, not a {suffix} mesh; {expected}")
    try:
        geom = trimesh.load(p, process=False)
    except Exception as exc:  # trimesh raises anything from IndexError to a missing optional module
        first = str(exc).strip().splitlines()[0][:100] if str(exc).strip() else ""
        if isinstance(exc, IndexError):  # trimesh's OBJ reader indexes the vertex list with the faces
            raise ValueError(
                f"{p}: a face index is past the vertex count ({first}); expected indices of listed vertices"
            ) from None
        raise ValueError(f"{p}: cannot read as a {suffix} mesh ({type(exc).__name__}: {first}); {expected}") from None
    if isinstance(geom, trimesh.Scene):
        parts = list(geom.dump()) if geom.geometry else []
        meshes = [g for g in parts if isinstance(g, trimesh.Trimesh) and len(g.faces)]
        clouds = [g for g in parts if isinstance(g, trimesh.PointCloud)]
        if meshes:
            geom = trimesh.util.concatenate(meshes) if len(meshes) > 1 else meshes[0]
        elif clouds:
            geom = trimesh.PointCloud(np.concatenate([c.vertices for c in clouds]))
        else:
            raise ValueError(f"{p}: no geometry (no faces and no points); {expected}")
    if len(geom.vertices) == 0:
        raise ValueError(f"{p}: no vertices; {expected}")
    bad = ~np.isfinite(np.asarray(geom.vertices)).all(axis=1)
    if bad.any():
        raise ValueError(f"{p}: {int(bad.sum())} of {len(bad)} vertices are NaN or infinite; expected finite coordinates")
    if isinstance(geom, trimesh.Trimesh):
        faces = np.asarray(geom.faces)
        if len(faces) == 0:
            raise ValueError(f"{p}: a mesh with {len(geom.vertices)} vertices and no faces; {expected}")
        if faces.min() < 0 or faces.max() >= len(geom.vertices):
            raise ValueError(f"{p}: face index {int(faces.max())} past the {len(geom.vertices)} vertices (indices from 0)")
    if transform is not None:
        geom.apply_transform(transform)
    if isinstance(geom, trimesh.PointCloud):
        return np.asarray(geom.vertices)
    return geom


def _load_points(p: Path, kind: str, transform: np.ndarray | None):
    """`.npy` points `[N, 3]` (and `*normals*.npy` beside `*points*.npy`) for `load_geometry`."""
    if not kind.startswith("numpy"):
        raise ValueError(f"{p}: the file holds {kind} data, not a numpy .npy array of points [N, 3]")
    try:
        raw = np.load(p, allow_pickle=False)
    except Exception as exc:
        raise ValueError(f"{p}: cannot read ({type(exc).__name__}: {exc}); expected points [N, 3] of numbers") from None
    if raw.dtype.kind not in "biuf" or raw.ndim != 2 or raw.shape[1] != 3 or len(raw) == 0:
        raise ValueError(f"{p}: expected points [N, 3] of numbers with N > 0, got {raw.dtype} {list(raw.shape)}")
    pts = raw.astype(np.float64)
    if not np.isfinite(pts).all():
        raise ValueError(f"{p}: {int((~np.isfinite(pts).all(1)).sum())} points are NaN or infinite; expected finite coordinates")
    nf = p.with_name(p.name.replace("points", "normals"))
    nrm = np.load(nf).astype(np.float64) if nf != p and nf.is_file() else None
    if transform is not None:
        pts = pts @ transform[:3, :3].T + transform[:3, 3]
        if nrm is not None:
            nrm = nrm @ np.linalg.inv(transform[:3, :3])
            nrm /= np.linalg.norm(nrm, axis=1, keepdims=True)
    return (pts, nrm) if nrm is not None else pts


def load_transform(path: str | Path) -> np.ndarray:
    """A 4x4 affine transform `[4, 4]` float64 from a JSON file: a nested list `[[...] x 4]` (a
    `[3, 4]` gets the row [0, 0, 0, 1]), or an object with a "scale_mat" entry. ValueError naming the
    file for malformed JSON, another shape, non-finite values, a projective last row or a singular matrix."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{p}: transform file not found")
    try:
        raw = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{p}: malformed JSON ({exc}); expected a 4x4 matrix as nested lists") from None
    if isinstance(raw, dict) and "scale_mat" in raw:
        raw = raw["scale_mat"]
    try:
        T = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError):
        T = np.zeros(0)
    if T.shape == (3, 4):
        T = np.vstack([T, [0.0, 0.0, 0.0, 1.0]])
    if T.shape != (4, 4):
        raise ValueError(f"{p}: expected a 4x4 (or 3x4) matrix of numbers, got {json.dumps(raw)[:80]}")
    if not np.isfinite(T).all():
        raise ValueError(f"{p}: the matrix has NaN or infinite entries")
    if not np.allclose(T[3], [0.0, 0.0, 0.0, 1.0]):
        raise ValueError(f"{p}: last row {T[3].tolist()} is not [0, 0, 0, 1]; expected an affine transform")
    if not abs(np.linalg.det(T[:3, :3])) > 1e-12 * max(1.0, float(np.abs(T[:3, :3]).max()) ** 3):
        raise ValueError(f"{p}: the matrix is singular (its 3x3 block has no inverse)")
    return T


def frame_mismatch(a: Any, b: Any, factor: float = 1.5) -> str | None:
    """Why two geometries (meshes or points `[N, 3]`) look like they are in different frames, or
    None: their bounding-box diagonals differ by more than `factor`, or their centres lie further
    apart than half the larger diagonal (a reconstruction with a few floaters stays well inside both)."""
    boxes = []
    for x in (a, b):
        pts = np.asarray(x.vertices if hasattr(x, "vertices") else x[0] if isinstance(x, tuple) else x, dtype=np.float64)
        lo, hi = pts.min(0), pts.max(0)
        boxes.append(((lo + hi) / 2, float(np.linalg.norm(hi - lo))))
    (ca, da), (cb, db) = boxes
    big, small = max(da, db), min(da, db)
    offset = float(np.linalg.norm(ca - cb))
    if small <= 0 or big / small > factor or offset > 0.5 * big:
        return f"bounding-box diagonals {da:.3g} vs {db:.3g}, centres {offset:.3g} apart"
    return None


# ---------------------------------------------------------------------------------------------
# OccNet/DVR mesh evaluation (im2mesh/eval.py MeshEvaluator, eval_meshes.py).

# F-score thresholds of DVR's eval.py (`np.linspace(1./1000, 1, 1000)`); pass them as `thresholds`
# to get all 1000 (precision, recall, F) triples. The papers report F at 0.01 (1% of the unit cube).
DVR_FSCORE_THRESHOLDS = tuple(float(t) for t in np.linspace(1.0 / 1000, 1.0, 1000))

# eval.py EMPTY_PCL_DICT (+ _NORMALS): the fixed scores of an empty mesh, the worst values inside
# the unit cube [-0.5, 0.5]^3. chamfer_l2 = 6 is DVR's constant as written (not 0.5 * (3 + 3)).
_EMPTY_SCORES = {
    "completeness": math.sqrt(3.0),
    "accuracy": math.sqrt(3.0),
    "completeness2": 3.0,
    "accuracy2": 3.0,
    "chamfer_l2": 6.0,
    "normals_completeness": -1.0,
    "normals_accuracy": -1.0,
    "normal_consistency": -1.0,
}


def _cross2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """z of the cross product of the xy parts of `[K, 3]` vectors."""
    return a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]


def mesh_contains(mesh: trimesh.Trimesh, points: Any, max_pairs: int = 4_000_000) -> np.ndarray:
    """Which `points` `[M, 3]` lie inside `mesh`: bool `[M]`, by ray parity along +z and -z.

    OccNet's `check_mesh_contains` rule (im2mesh/utils/libmesh/inside_mesh.py): a point is inside
    when both the ray up and the ray down cross the mesh an odd number of times, so a mesh with a
    hole or a stray sheet errs toward "outside" instead of failing. Triangles are hashed on an xy
    grid; work is bounded to `max_pairs` point-triangle tests at a time. A ray through an edge or a
    vertex counts one crossing (the top-left rule of rasterisers), so grids of points work too.
    No rtree or embree needed (trimesh's `contains` needs one of them).
    """
    if not isinstance(mesh, trimesh.Trimesh):
        raise TypeError(f"mesh: expected a trimesh.Trimesh, got {type(mesh).__name__}")
    pts = _points(points, "points")
    inside = np.zeros(len(pts), dtype=bool)
    tri = np.asarray(mesh.vertices, dtype=np.float64)[np.asarray(mesh.faces, dtype=np.int64)]  # [F, 3, 3]
    if len(tri) == 0:
        return inside
    lo, hi = tri.reshape(-1, 3).min(0), tri.reshape(-1, 3).max(0)
    cand = np.flatnonzero(np.all((pts >= lo) & (pts <= hi), axis=1))
    if len(cand) == 0:
        return inside
    cells = int(np.clip(np.sqrt(len(tri)), 1, 512))  # ~1 triangle per xy cell
    size = np.maximum((hi - lo)[:2] / cells, 1e-12)

    def cell_of(xy):
        return np.clip(((xy - lo[:2]) / size).astype(np.int64), 0, cells - 1)

    pc = cell_of(pts[cand, :2])
    pid = pc[:, 0] * cells + pc[:, 1]
    order = np.argsort(pid, kind="stable")
    start = np.searchsorted(pid[order], np.arange(cells * cells + 1))  # points of cell c: order[start[c]:start[c+1]]
    c0, c1 = cell_of(tri[:, :, :2].min(1)), cell_of(tri[:, :, :2].max(1))
    n_cells = (c1 - c0 + 1).prod(1)
    # (triangle, cell) entries, then their (triangle, point) pairs, in bounded slices.
    tri_of = np.repeat(np.arange(len(tri)), n_cells)
    k = np.arange(len(tri_of)) - np.repeat(np.cumsum(n_cells) - n_cells, n_cells)
    span_y = (c1 - c0 + 1)[tri_of, 1]
    cell = (c0[tri_of, 0] + k // span_y) * cells + c0[tri_of, 1] + k % span_y
    count = start[cell + 1] - start[cell]
    up = np.zeros(len(cand), dtype=np.int64)
    down = np.zeros(len(cand), dtype=np.int64)
    bounds = np.searchsorted(np.cumsum(count), np.arange(0, count.sum(), max_pairs), side="right")
    for a, b in zip(bounds, list(bounds[1:]) + [len(count)]):
        cnt = count[a:b]
        t = np.repeat(tri_of[a:b], cnt)
        first = np.repeat(start[cell[a:b]] - (np.cumsum(cnt) - cnt), cnt)
        p = order[first + np.arange(len(t))]  # index into cand
        q = pts[cand[p]]
        A, B, C = tri[t, 0], tri[t, 1], tri[t, 2]
        cw = (_cross2(B - A, C - A) < 0)[:, None]
        B, C = np.where(cw, C, B), np.where(cw, B, C)  # counter-clockwise seen from +z
        hit = np.ones(len(t), dtype=bool)
        weights = []
        for P, Q in ((B, C), (C, A), (A, B)):  # the edge opposite A, B, C in turn
            w = _cross2(Q - P, q - P)  # > 0 on the inner side
            d = Q - P
            # An edge shared by two triangles runs both ways: take a point on it once (top-left rule).
            owns = (d[:, 1] > 0) | ((d[:, 1] == 0) & (d[:, 0] < 0))
            hit &= (w > 0) | ((w == 0) & owns)
            weights.append(w)
        area = weights[0] + weights[1] + weights[2]
        hit &= area > 0  # a triangle seen edge-on from z is never crossed
        z = (weights[0] * A[:, 2] + weights[1] * B[:, 2] + weights[2] * C[:, 2]) / np.where(area > 0, area, 1.0)
        up += np.bincount(p[hit & (z >= q[:, 2])], minlength=len(cand))
        down += np.bincount(p[hit & (z < q[:, 2])], minlength=len(cand))
    inside[cand] = (up % 2 == 1) & (down % 2 == 1)
    return inside


def evaluate_occnet(
    mesh: trimesh.Trimesh,
    gt_points: Any,
    gt_normals: Any | None,
    occ_points: Any | None = None,
    occ_gt: Any | None = None,
    n_points: int = 100_000,
    seed: int = 0,
    thresholds: float | Sequence[float] = (0.01,),
) -> dict[str, float]:
    """One mesh's scores by the OccNet/DVR protocol (im2mesh/eval.py `MeshEvaluator.eval_mesh`).

    `n_points` points are sampled by area on `mesh` with their face normals (DVR: 100k) and
    compared with the ground-truth cloud `gt_points` `[N, 3]` / `gt_normals` `[N, 3]` (or None).

    Args:
        mesh: the prediction, in the ground truth's units (OccNet/DVR: the unit cube).
        gt_points, gt_normals: `[N, 3]` ground-truth surface points and normals (`pointcloud.npz`).
        occ_points, occ_gt: `[M, 3]` points and `[M]` occupancies (`points.npz`; >= 0.5 is inside,
            OccNet's `compute_iou`) for the volumetric IoU; both or neither.
        thresholds: F-score distances (`DVR_FSCORE_THRESHOLDS` for all of DVR's).

    Returns:
        flat dict: completeness (GT -> pred mean distance), accuracy (pred -> GT), completeness2,
        accuracy2 (mean squared), chamfer_l1 = 0.5 (comp + acc), chamfer_l1_x10 (the papers'
        "Chamfer-L1", x10), chamfer_l2 = 0.5 (comp2 + acc2), normals_completeness,
        normals_accuracy, normal_consistency (mean |n . n'|; NaN without `gt_normals`),
        precision@t / recall@t / fscore@t (DVR: distance <= t; F = 0 when P = R = 0, where DVR
        gives NaN), and iou when occupancy points are given. Inside is decided by `mesh_contains`
        (OccNet's ray-parity rule, no watertightness needed).
        An empty mesh (no faces or no area) gets DVR's fixed scores (completeness = accuracy =
        sqrt(3), completeness2 = accuracy2 = 3, chamfer_l2 = 6, normals -1, iou 0) and, where DVR
        leaves keys out, chamfer_l1 = sqrt(3) (x10 likewise) and precision = recall = F = 0.
    """
    if not isinstance(mesh, trimesh.Trimesh):
        raise TypeError(f"mesh: expected a trimesh.Trimesh, got {type(mesh).__name__}")
    if isinstance(n_points, bool) or not isinstance(n_points, (int, np.integer)) or n_points < 1:
        raise ValueError(f"n_points: expected an int >= 1, got {n_points!r}")
    ts = _check_thresholds(thresholds)
    gt = _points(gt_points, "gt_points")
    gt_n = None if gt_normals is None else _normals(gt_normals, "gt_normals", len(gt))
    if (occ_points is None) != (occ_gt is None):
        raise ValueError("occ_points, occ_gt: give both (IoU points and their occupancies) or neither")
    occ_p = occ_t = None
    if occ_points is not None:
        occ_p = _points(occ_points, "occ_points")
        occ_t = _to_numpy(occ_gt, "occ_gt").astype(np.float64)
        if occ_t.shape != (len(occ_p),):
            raise ValueError(f"occ_gt: expected shape [{len(occ_p)}] (one per occ point), got {list(occ_t.shape)}")

    if len(mesh.faces) == 0 or not mesh.area > 0:
        out = dict(_EMPTY_SCORES)
        out["chamfer_l1"] = 0.5 * (out["completeness"] + out["accuracy"])
        out["chamfer_l1_x10"] = 10.0 * out["chamfer_l1"]
        if gt_n is None:
            out.update(normals_completeness=math.nan, normals_accuracy=math.nan, normal_consistency=math.nan)
        for t in ts:
            out.update({f"precision@{t:g}": 0.0, f"recall@{t:g}": 0.0, f"fscore@{t:g}": 0.0})
        if occ_p is not None:
            out["iou"] = 0.0
        return out

    pred, pred_n = sample_surface(mesh, int(n_points), seed=seed)
    d_comp, i_comp = _nn(gt, pred)  # GT -> pred
    d_acc, i_acc = _nn(pred, gt)  # pred -> GT
    comp, acc = float(d_comp.mean()), float(d_acc.mean())
    comp2, acc2 = float(np.mean(d_comp**2)), float(np.mean(d_acc**2))
    out = {
        "completeness": comp,
        "accuracy": acc,
        "completeness2": comp2,
        "accuracy2": acc2,
        "chamfer_l1": 0.5 * (comp + acc),
        "chamfer_l1_x10": 10.0 * 0.5 * (comp + acc),
        "chamfer_l2": 0.5 * (comp2 + acc2),
    }
    if gt_n is None:
        out.update(normals_completeness=math.nan, normals_accuracy=math.nan, normal_consistency=math.nan)
    else:
        nc = float(np.abs(np.sum(gt_n * pred_n[i_comp], axis=1)).mean())
        na = float(np.abs(np.sum(pred_n * gt_n[i_acc], axis=1)).mean())
        out.update(normals_completeness=nc, normals_accuracy=na, normal_consistency=0.5 * (nc + na))
    for t in ts:
        p, r = float(np.mean(d_acc <= t)), float(np.mean(d_comp <= t))
        out[f"precision@{t:g}"] = p
        out[f"recall@{t:g}"] = r
        out[f"fscore@{t:g}"] = 2.0 * p * r / (p + r) if p + r > 0 else 0.0
    if occ_p is not None:
        out["iou"] = mask_iou(mesh_contains(mesh, occ_p), occ_t >= 0.5)
    return out


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_))


def write_eval_tables(rows: Sequence[dict[str, Any]], out_dir: str | Path, name: str = "eval_meshes") -> dict[str, str]:
    """Write per-instance and per-class tables of evaluation rows, like DVR's eval_meshes.py.

    Args:
        rows: one dict per instance: any identifying columns (strings, e.g. "instance"), an
            optional "class" (default "n/a") and the metrics (numbers, e.g. `evaluate_occnet`'s).
        out_dir: folder (created if missing).
        name: file stem (DVR: `eval_meshes`).

    Writes (atomically) and returns the paths of:
        - `<name>_full.csv`: every row, every column (DVR: `eval_meshes_full.pkl`);
        - `<name>.csv`: per class (sorted): class, n, the mean of each metric over the class's rows
          (NaN ignored, as pandas' `groupby().mean()`), then a "mean" row: the mean of the class
          means (DVR prints `eval_df_class.mean()`), with n = all rows;
        - `<name>.json`: the same per-class rows as a list of objects (NaN written as null).
    """
    import csv
    import io
    import json

    from taichi_sdf.train.checkpoint import atomic_write_bytes

    if isinstance(rows, dict) or not all(isinstance(r, dict) for r in rows):
        raise TypeError("rows: expected a sequence of dicts (one per instance)")
    if not rows:
        raise ValueError("rows: is empty; nothing to write")
    if not isinstance(name, str) or not name or any(c in name for c in "/\\"):
        raise ValueError(f"name: expected a plain file stem, got {name!r}")
    columns = list(dict.fromkeys(k for r in rows for k in r))
    metrics = [c for c in columns if c != "class" and all(_is_number(r[c]) for r in rows if c in r and r[c] is not None)]
    classes: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        classes.setdefault(str(r.get("class", "n/a")), []).append(r)

    def mean(values: list[float]) -> float:
        finite = [float(v) for v in values if v is not None and not math.isnan(float(v))]
        return sum(finite) / len(finite) if finite else math.nan

    table = [
        {"class": c, "n": len(rs), **{m: mean([r.get(m) for r in rs]) for m in metrics}} for c, rs in sorted(classes.items())
    ]
    table.append({"class": "mean", "n": len(rows), **{m: mean([t[m] for t in table]) for m in metrics}})

    def to_csv(header: list[str], body: list[dict[str, Any]]) -> bytes:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=header, restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(body)
        return buf.getvalue().encode("utf-8")

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"full_csv": out / f"{name}_full.csv", "class_csv": out / f"{name}.csv", "class_json": out / f"{name}.json"}
    atomic_write_bytes(paths["full_csv"], to_csv(columns, list(rows)))
    atomic_write_bytes(paths["class_csv"], to_csv(["class", "n", *metrics], table))
    clean = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in t.items()} for t in table]
    atomic_write_bytes(paths["class_json"], json.dumps(clean, indent=2, allow_nan=False).encode("utf-8"))
    return {k: str(v) for k, v in paths.items()}
