"""Readers and writers of DeepSDF's data layout (Park et al. 2019, facebookresearch/DeepSDF).

    <data>/SdfSamples/<dataset>/<class>/<instance>.npz          arrays pos [P, 4], neg [N, 4] (x, y, z, sdf)
    <data>/SurfaceSamples/<dataset>/<class>/<instance>.ply      surface points in the mesh's own units
    <data>/NormalizationParameters/<dataset>/<class>/<instance>.npz   offset [3], scale (scalar)
    split JSON: {dataset: {class: [instance, ...]}}

Normalisation (as the original's PreprocessMesh): x_normalised = (x_mesh + offset) * scale, with
offset = -centre of the bounding box and scale = 1 / (1.03 * max distance to the centre), so the
shape fits in the unit sphere with a 3% buffer; `denormalize` maps back to the mesh's units.
All readers raise ValueError naming the file when an array is missing, mis-shaped or not finite.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np

from taichi_sdf.train.checkpoint import atomic_write

SDF_SAMPLES = "SdfSamples"
SURFACE_SAMPLES = "SurfaceSamples"
NORMALIZATION = "NormalizationParameters"


class Instance(NamedTuple):
    """One shape of a split: DeepSDF addresses files by (dataset, class, instance)."""

    dataset: str
    class_name: str
    instance: str

    def path(self, root: str | Path, kind: str, ext: str) -> Path:
        """`<root>/<kind>/<dataset>/<class>/<instance><ext>`."""
        return Path(root) / kind / self.dataset / self.class_name / f"{self.instance}{ext}"

    def sdf_samples(self, root: str | Path) -> Path:
        return self.path(root, SDF_SAMPLES, ".npz")

    def surface_samples(self, root: str | Path) -> Path:
        return self.path(root, SURFACE_SAMPLES, ".ply")

    def normalization(self, root: str | Path) -> Path:
        return self.path(root, NORMALIZATION, ".npz")


# -------------------------------------------------------------------------------------- samples


def _load_npz(path: Path, what: str):
    """np.load of an npz with errors that name the file (missing, or unreadable)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} file not found")
    try:
        return np.load(path)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same named error
        raise ValueError(f"{path}: not a readable npz file ({e})") from e


def _check_samples(name: str, array: np.ndarray, where: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(f"{where}: '{name}' must have shape [N, 4] (x, y, z, sdf), got {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{where}: '{name}' contains NaN or inf values")
    return array.astype(np.float32, copy=False)


def save_sdf_samples(path: str | Path, pos: np.ndarray, neg: np.ndarray) -> Path:
    """Write `pos [P, 4]` (sdf >= 0) and `neg [N, 4]` (sdf < 0) as DeepSDF's npz, atomically."""
    path = Path(path)
    pos = _check_samples("pos", pos, str(path))
    neg = _check_samples("neg", neg, str(path))
    atomic_write(path, lambda f: np.savez(f, pos=pos, neg=neg))
    return path


def load_sdf_samples(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(pos [P, 4], neg [N, 4]) float32 from a DeepSDF npz; NaN rows are dropped as the original's
    `remove_nans` does, but a file with no finite sample at all is an error."""
    path = Path(path)
    data = _load_npz(path, "SDF samples")
    out = []
    for name in ("pos", "neg"):
        if name not in data:
            raise ValueError(f"{path}: missing array '{name}' (expected DeepSDF's pos/neg npz)")
        a = np.asarray(data[name], dtype=np.float32)
        if a.ndim != 2 or a.shape[1] != 4:
            raise ValueError(f"{path}: '{name}' must have shape [N, 4], got {a.shape}")
        out.append(a[np.isfinite(a).all(1)])
    if len(out[0]) + len(out[1]) == 0:
        raise ValueError(f"{path}: no finite samples")
    return out[0], out[1]


# -------------------------------------------------------------------------------- normalisation


def normalization_parameters(vertices: np.ndarray, buffer: float = 1.03) -> tuple[np.ndarray, float]:
    """DeepSDF's (offset [3], scale): offset = -bounding-box centre, scale = 1 / (buffer * max
    distance of a vertex to that centre). Pass only the vertices used by faces."""
    v = np.asarray(vertices, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != 3 or len(v) == 0:
        raise ValueError(f"vertices: expected a non-empty [V, 3] array, got shape {v.shape}")
    centre = 0.5 * (v.min(0) + v.max(0))
    radius = float(np.linalg.norm(v - centre, axis=1).max())
    if not np.isfinite(radius) or radius <= 0:
        raise ValueError(f"vertices: degenerate extent (max distance to the centre {radius})")
    return -centre, 1.0 / (buffer * radius)


def normalize(points: np.ndarray, offset: np.ndarray, scale: float) -> np.ndarray:
    """Mesh units -> DeepSDF's unit sphere: `(points + offset) * scale` for `points [N, 3]`."""
    return (np.asarray(points) + offset) * scale


def denormalize(points: np.ndarray, offset: np.ndarray, scale: float) -> np.ndarray:
    """Unit sphere -> mesh units: `points / scale - offset` for `points [N, 3]`."""
    return np.asarray(points) / scale - offset


def save_normalization(path: str | Path, offset: np.ndarray, scale: float) -> Path:
    path = Path(path)
    offset = np.asarray(offset, dtype=np.float64).reshape(3)
    atomic_write(path, lambda f: np.savez(f, offset=offset, scale=np.float64(scale)))
    return path


def load_normalization(path: str | Path) -> tuple[np.ndarray, float]:
    """(offset [3], scale) of a NormalizationParameters npz."""
    path = Path(path)
    data = _load_npz(path, "normalisation parameters")
    if "offset" not in data or "scale" not in data:
        raise ValueError(f"{path}: expected arrays 'offset' and 'scale'")
    offset, scale = np.asarray(data["offset"], np.float64).reshape(-1), float(data["scale"])
    if offset.shape != (3,) or not np.isfinite(offset).all() or not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"{path}: 'offset' must be 3 finite numbers and 'scale' a positive number")
    return offset, scale


# ---------------------------------------------------------------------------- surface samples


def save_surface_samples(path: str | Path, points: np.ndarray) -> Path:
    """Write `points [N, 3]` as a binary little-endian PLY point cloud, atomically."""
    path = Path(path)
    pts = np.ascontiguousarray(np.asarray(points, dtype="<f4"))
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"{path}: points must have shape [N, 3], got {pts.shape}")
    header = (
        "ply\nformat binary_little_endian 1.0\n"
        f"element vertex {len(pts)}\nproperty float x\nproperty float y\nproperty float z\nend_header\n"
    ).encode()

    def write(f):
        f.write(header)
        f.write(pts.tobytes())

    atomic_write(path, write)
    return path


def load_surface_samples(path: str | Path) -> np.ndarray:
    """Points `[N, 3]` float64 of a SurfaceSamples PLY (or any mesh/point cloud trimesh reads)."""
    import trimesh

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: surface samples file not found")
    try:
        geom = trimesh.load(path, process=False)
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"{path}: not a readable point cloud ({e})") from e
    pts = np.asarray(getattr(geom, "vertices", np.zeros((0, 3))), dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3 or len(pts) == 0:
        raise ValueError(f"{path}: expected a non-empty point cloud, got {pts.shape} vertices")
    return pts


# -------------------------------------------------------------------------------------- splits


def save_split(path: str | Path, instances: list[Instance]) -> Path:
    """Write a split JSON {dataset: {class: [instance, ...]}} (order kept)."""
    split: dict[str, dict[str, list[str]]] = {}
    for it in instances:
        split.setdefault(it.dataset, {}).setdefault(it.class_name, []).append(it.instance)
    path = Path(path)
    atomic_write(path, lambda f: f.write((json.dumps(split, indent=2) + "\n").encode()))
    return path


def load_split(path: str | Path) -> list[Instance]:
    """Instances of a split JSON {dataset: {class: [instance, ...]}}, in file order."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: split file not found")
    try:
        split = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(split, dict):
        raise ValueError(f"{path}: expected {{dataset: {{class: [instances]}}}}, got {type(split).__name__}")
    out = []
    for dataset, classes in split.items():
        if not isinstance(classes, dict):
            raise ValueError(f"{path}: dataset '{dataset}' must map class names to instance lists")
        for class_name, names in classes.items():
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise ValueError(f"{path}: '{dataset}/{class_name}' must be a list of instance names")
            out.extend(Instance(dataset, class_name, n) for n in names)
    return out
