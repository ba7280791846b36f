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

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import trimesh
from scipy.spatial import cKDTree

__all__ = [
    "chamfer_distance",
    "deepsdf_chamfer",
    "normal_consistency",
    "fscore",
    "sample_surface",
    "evaluate_mesh",
    "psnr",
    "mask_iou",
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
    """A trimesh mesh, or (points, normals-or-None) for point clouds, optionally transformed by 4x4."""
    import trimesh

    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{p}: file not found")
    if p.suffix == ".npy":
        pts = np.load(p).astype(np.float64)
        if pts.ndim != 2 or pts.shape[1] != 3:
            raise ValueError(f"{p}: expected points [N, 3], got {list(pts.shape)}")
        nf = p.with_name(p.name.replace("points", "normals"))
        nrm = np.load(nf).astype(np.float64) if nf != p and nf.is_file() else None
        if transform is not None:
            pts = pts @ transform[:3, :3].T + transform[:3, 3]
            if nrm is not None:
                nrm = nrm @ np.linalg.inv(transform[:3, :3])
                nrm /= np.linalg.norm(nrm, axis=1, keepdims=True)
        return (pts, nrm) if nrm is not None else pts
    geom = trimesh.load(p)
    if transform is not None:
        geom.apply_transform(transform)
    if isinstance(geom, trimesh.PointCloud):
        return np.asarray(geom.vertices)
    return geom
