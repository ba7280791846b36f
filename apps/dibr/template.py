"""The template mesh of the fit and its coarse-to-fine subdivision.

- `make_template`: DIB-R's template is `sphere_3.obj`, a level-3 subdivided icosahedron (642 vertices /
  1280 faces, `trimesh.creation.icosphere(3)` has the same counts); a user mesh is recentred on its
  bounding-box centre and scaled so that its bounding sphere has `radius` (DIB-R normalises its
  template the same way, to half-extent 0.35 / 0.45 * 0.5).
- `spherical_uv`: face-corner texture coordinates from the direction about the centre (u = longitude,
  v = latitude); corners of faces that straddle the u = 0 / 1 seam are unwrapped past 1, so no face
  spans the whole texture (sampled with address "repeat").
- `subdivide`: every face into four, carrying vertex data (colours) and face-corner uvs.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
import trimesh


class Template(NamedTuple):
    vertices: np.ndarray  # [V, 3] float64
    faces: np.ndarray  # [F, 3] int64
    uv: np.ndarray | None  # [Vuv, 2] face-corner uvs (OBJ convention: v up), None without a parametrisation
    uv_faces: np.ndarray | None  # [F, 3] indices into uv


def make_template(template: str, subdivisions: int = 3, radius: float = 0.5) -> Template:
    """The icosphere (`template="icosphere"`) of `radius`, or the mesh file `template` recentred and
    rescaled to a bounding sphere of `radius`; uvs from the file when it has them, else None."""
    if template == "icosphere":
        m = trimesh.creation.icosphere(subdivisions)
        return Template(np.asarray(m.vertices) * radius, np.asarray(m.faces, dtype=np.int64), None, None)
    path = Path(template)
    if not path.is_file():
        raise ValueError(f"model.template: expected 'icosphere' or a mesh file, got {template!r} (file not found)")
    m = trimesh.load(path, force="mesh", process=False)
    if not isinstance(m, trimesh.Trimesh) or len(m.faces) == 0:
        raise ValueError(f"model.template: {template} holds no triangle mesh")
    v = np.asarray(m.vertices, dtype=np.float64)
    centre = 0.5 * (v.min(0) + v.max(0))
    v = (v - centre) * (radius / max(np.linalg.norm(v - centre, axis=1).max(), 1e-12))
    faces = np.asarray(m.faces, dtype=np.int64)
    uv = getattr(m.visual, "uv", None)
    if uv is not None and len(uv) == len(v):
        return Template(v, faces, np.asarray(uv, dtype=np.float64), faces.copy())
    return Template(v, faces, None, None)


def spherical_uv(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Face-corner uvs `[3F, 2]` and uv_faces `[F, 3]` (= arange) from the vertices' directions about
    their centroid; u in [0, 1.5) after unwrapping the seam, v in [0, 1] (1 = +y pole)."""
    d = vertices - vertices.mean(0)
    d = d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
    u = (np.arctan2(d[:, 0], d[:, 2]) / (2 * math.pi)) % 1.0
    v = 0.5 + np.arcsin(np.clip(d[:, 1], -1, 1)) / math.pi
    cu, cv = u[faces], v[faces]  # [F, 3]
    wraps = cu.max(1) - cu.min(1) > 0.5
    cu = np.where(wraps[:, None] & (cu < 0.5), cu + 1.0, cu)
    uv = np.stack([cu, cv], -1).reshape(-1, 2)
    return uv, np.arange(3 * len(faces), dtype=np.int64).reshape(-1, 3)


def subdivide(vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray | None = None, uv: np.ndarray | None = None,
              uv_faces: np.ndarray | None = None, method: str = "midpoint"):  # fmt: skip
    """One 1-to-4 subdivision. Returns (vertices `[V', 3]`, faces `[4F, 3]`, colors `[V', C]` | None,
    uv `[Vuv', 2]` | None, uv_faces `[4F, 3]` | None). "midpoint" puts new vertices (and colours) at
    edge midpoints, so the surface is unchanged; "loop" is Loop's scheme, applied to the colours with the
    same weights (it is linear in the vertex data). The uv mesh is subdivided by midpoints on its own
    indices: trimesh emits each face's four children in face order, so the faces correspond."""
    if method not in ("midpoint", "loop"):
        raise ValueError(f"method: expected 'midpoint' or 'loop', got {method!r}")
    if method == "loop":
        if uv is not None:
            raise ValueError("uv: loop subdivision carries vertex data only; use method='midpoint' with uvs")
        new_v, new_f = trimesh.remesh.subdivide_loop(vertices, faces)
        new_c = None if colors is None else trimesh.remesh.subdivide_loop(_as_xyz(colors), faces)[0][:, : colors.shape[1]]
        return new_v, new_f, new_c, None, None
    attrs = None if colors is None else {"colors": colors}
    out = trimesh.remesh.subdivide(vertices, faces, vertex_attributes=attrs)
    new_v, new_f = out[0], out[1]
    new_c = out[2]["colors"] if colors is not None else None
    new_uv = new_uvf = None
    if uv is not None:
        uv3, new_uvf = trimesh.remesh.subdivide(np.concatenate([uv, np.zeros_like(uv[:, :1])], 1), uv_faces)
        new_uv = uv3[:, :2]
    return new_v, np.asarray(new_f, dtype=np.int64), new_c, new_uv, None if new_uvf is None else np.asarray(new_uvf, np.int64)


def _as_xyz(x: np.ndarray) -> np.ndarray:
    """Vertex data `[V, C]` (C <= 3) padded to `[V, 3]` for trimesh's position-only routines."""
    return np.concatenate([x, np.zeros((len(x), 3 - x.shape[1]))], 1) if x.shape[1] < 3 else x
