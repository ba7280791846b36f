"""Writing reconstructed meshes: OBJ with a UV texture (OBJ + MTL + PNG) and PLY with vertex colours.

Every file is written atomically (`taichi_sdf.train.checkpoint.atomic_write_bytes`: a temp file in the
same folder, fsync, rename), the texture and material before the OBJ, so a reader never sees a
half-written file or an OBJ whose material is not there yet.

Texture convention (the project's, `taichi_sdf.mesh.texture`): uv has u to the right and v UP, and
row 0 of the texture image `[H, W, 3]` is the TOP of the image, at v = 1. That is also OBJ's (`vt` v
up) and PNG's (first row at the top), so the image and the uvs are written as they are, without a
flip. A texture stored bottom row first (v = 0 at row 0, e.g. some grid_sample-based pipelines) must
be flipped with `texture.flip(0)` before saving.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

__all__ = ["save_obj", "save_ply"]

MATERIAL_NAME = "material_0"


def _array(name: str, value, shape: tuple, kind: str = "float") -> np.ndarray:
    """A torch tensor or array-like as a numpy array of `shape` (None = any size); integer or float."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    try:
        arr = np.asarray(value)
    except Exception as exc:
        raise TypeError(f"{name}: expected a tensor or array, got {type(value).__name__} ({exc})") from None
    want = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
    if arr.ndim != len(shape) or any(s is not None and a != s for a, s in zip(arr.shape, shape)):
        raise ValueError(f"{name}: expected shape {want}, got {list(arr.shape)}")
    if kind == "int":
        if not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"{name}: expected integer indices, got dtype {arr.dtype}")
        return arr.astype(np.int64)
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{name}: expected real numbers, got dtype {arr.dtype}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: contains {int((~np.isfinite(arr)).sum())} non-finite value(s)")
    return arr if arr.dtype in (np.float32, np.float64) else arr.astype(np.float64)


def _check_indices(name: str, idx: np.ndarray, count: int, of: str) -> None:
    if idx.size and (idx.min() < 0 or idx.max() >= count):
        raise ValueError(f"{name}: indices must lie in [0, {count}) ({of}), got [{idx.min()}, {idx.max()}]")


def _lines(prefix: str, rows: np.ndarray) -> str:
    if len(rows) == 0:
        return ""
    fmt = "%.9g" if rows.dtype == np.float32 else "%.17g"  # enough digits to read back the same value
    buf = io.StringIO()
    np.savetxt(buf, rows, fmt=f"{prefix} " + " ".join([fmt] * rows.shape[1]))
    return buf.getvalue()


def _png_bytes(texture: np.ndarray) -> bytes:
    import imageio.v3 as iio

    from taichi_sdf.data.image_io import to_uint8

    return iio.imwrite("<bytes>", to_uint8(texture), extension=".png")


def save_obj(
    path: str | os.PathLike,
    vertices,  # [V, 3]
    faces,  # [F, 3] int
    *,
    uv=None,  # [T, 2]
    uv_faces=None,  # [F, 3] int
    texture=None,  # [H, W, 3]
    normals=None,  # [V, 3]
) -> str:
    """Write a triangle mesh as Wavefront OBJ; with a texture also `<stem>.mtl` and `<stem>.png`.

    Args:
        path: the `.obj` file; the material and image go beside it with the same stem.
        vertices: `[V, 3]` positions (torch tensor or numpy array, any device / float dtype).
        faces: `[F, 3]` 0-based vertex indices (written 1-based), counter-clockwise seen from outside.
        uv: optional texture coordinates `[T, 2]` (u right, v up, [0, 1]^2 spans the texture).
        uv_faces: optional `[F, 3]` indices into `uv` per face corner (uv seams); without it `uv` is
            per vertex (T = V) and shares the faces' indices.
        texture: optional `[H, W, 3]` float in [0, 1] (clipped) or uint8, row 0 = top = v 1 (the module
            docstring states the convention), written as `<stem>.png` and named by `map_Kd` in
            `<stem>.mtl`. Needs uv.
        normals: optional per-vertex normals `[V, 3]` (`vn`, indexed like the vertices).

    Returns:
        the OBJ path as str. Raises ValueError/TypeError naming the argument for bad input.
    """
    from taichi_sdf.train.checkpoint import atomic_write_bytes

    path = Path(path)
    if path.suffix.lower() != ".obj":
        raise ValueError(f"path: expected a .obj file name, got {str(path)!r}")
    v = _array("vertices", vertices, (None, 3))
    f = _array("faces", faces, (None, 3), "int")
    _check_indices("faces", f, len(v), "the vertices")
    vt = ft = None
    if uv is not None:
        vt = _array("uv", uv, (None, 2))
        if uv_faces is None:
            if len(vt) != len(v):
                raise ValueError(f"uv: expected one uv per vertex ([{len(v)}, 2]) without uv_faces, got {list(vt.shape)}")
            ft = f
        else:
            ft = _array("uv_faces", uv_faces, (len(f), 3), "int")
            _check_indices("uv_faces", ft, len(vt), "the uvs")
    elif uv_faces is not None:
        raise ValueError("uv_faces: given without uv")
    vn = None if normals is None else _array("normals", normals, (len(v), 3))
    tex = None
    if texture is not None:
        if vt is None:
            raise ValueError("texture: given without uv; a texture needs texture coordinates")
        if hasattr(texture, "detach"):
            texture = texture.detach().cpu().numpy()
        tex = np.asarray(texture)
        if tex.ndim != 3 or tex.shape[-1] != 3 or min(tex.shape[:2]) < 1:
            raise ValueError(f"texture: expected shape [H, W, 3], got {list(tex.shape)}")
        if tex.dtype != np.uint8 and not np.isfinite(tex).all():
            raise ValueError("texture: contains non-finite values")

    header = ["# taichi_sdf.mesh.export.save_obj", f"# {len(v)} vertices, {len(f)} faces"]
    if tex is not None:
        header += [f"mtllib {path.stem}.mtl", f"usemtl {MATERIAL_NAME}"]
    body = _lines("v", v)
    if vt is not None:
        body += _lines("vt", vt)
    if vn is not None:
        body += _lines("vn", vn)
    corners = [f + 1]  # OBJ indices are 1-based
    if vt is not None:
        corners.append(ft + 1)
    if vn is not None:
        corners.append(f + 1)
    sep = "/" if vt is not None or vn is None else "//"
    cols = np.stack(corners, axis=-1)  # [F, 3, k]
    if sep == "//":  # v//vn
        face_fmt = "f " + " ".join(["%d//%d"] * 3)
    else:
        face_fmt = "f " + " ".join(["/".join(["%d"] * cols.shape[-1])] * 3)
    buf = io.StringIO()
    np.savetxt(buf, cols.reshape(len(f), -1), fmt=face_fmt)
    obj = "\n".join(header) + "\n" + body + buf.getvalue()

    if tex is not None:
        atomic_write_bytes(path.with_suffix(".png"), _png_bytes(tex))
        mtl = f"newmtl {MATERIAL_NAME}\nKa 1 1 1\nKd 1 1 1\nKs 0 0 0\nillum 1\nmap_Kd {path.stem}.png\n"
        atomic_write_bytes(path.with_suffix(".mtl"), mtl.encode("utf-8"))
    return atomic_write_bytes(path, obj.encode("utf-8"))


def save_ply(
    path: str | os.PathLike,
    vertices,  # [V, 3]
    faces,  # [F, 3] int
    colors=None,  # [V, 3] in [0, 1]
) -> str:
    """Write a binary PLY (through trimesh, vertex order kept) with optional per-vertex colours.

    Args:
        path: the `.ply` file.
        vertices: `[V, 3]` positions; faces: `[F, 3]` 0-based vertex indices (tensors or arrays).
        colors: optional `[V, 3]` RGB floats in [0, 1] (clipped, rounded to 8 bits) or uint8, written
            as the vertices' red/green/blue (and alpha 255) properties.

    Returns:
        the path as str.
    """
    import trimesh

    from taichi_sdf.data.image_io import to_uint8
    from taichi_sdf.train.checkpoint import atomic_write_bytes

    path = Path(path)
    if path.suffix.lower() != ".ply":
        raise ValueError(f"path: expected a .ply file name, got {str(path)!r}")
    v = _array("vertices", vertices, (None, 3))
    f = _array("faces", faces, (None, 3), "int")
    _check_indices("faces", f, len(v), "the vertices")
    rgba = None
    if colors is not None:
        if hasattr(colors, "detach"):
            colors = colors.detach().cpu().numpy()
        c = np.asarray(colors)
        if c.shape != (len(v), 3):
            raise ValueError(f"colors: expected shape [{len(v)}, 3] (one RGB per vertex), got {list(c.shape)}")
        if c.dtype != np.uint8:
            c = _array("colors", c, (len(v), 3))
        rgba = np.concatenate([to_uint8(c), np.full((len(v), 1), 255, np.uint8)], axis=1)
    mesh = trimesh.Trimesh(vertices=v, faces=f, vertex_colors=rgba, process=False)
    return atomic_write_bytes(path, mesh.export(file_type="ply"))
