"""Primitive parts and their union, shared by the procedural shape families (tables, airplanes).

A part is a dict: the chair module's "box" and "cylinder" (`shape_family`), plus

- "round_cone": a capsule whose radius goes linearly from r1 at `a` to r2 at `b` (Quilez's exact SDF);
- "prism": a convex polygon `[K, 2]` in the local (x, z) plane extruded by +-`half` along local y,
  placed by `center` and `R` (local -> world columns): wings, fins, table panels.

`union_sdf(parts, blend)` fits the parts' bounding box into the unit cube (longest side `EXTENT`,
centred, as the chairs) and returns the smooth union as a callable SDF; `mesh_of(sdf, resolution)`
meshes it like `shape_family.make_shape` (marching cubes over [-0.5, 0.5]^3, largest component).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import trimesh

from taichi_sdf.geometry.shape_family import _BOUND, EXTENT, _aabb, _sdf_box, _sdf_cylinder, _smooth_min

__all__ = ["round_cone", "prism", "part_aabb", "part_sdf", "union_sdf", "mesh_of", "rotation_x", "rotation_z", "check_index"]


def check_index(index, seed) -> None:
    for name, v in (("index", index), ("seed", seed)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"{name}: expected an int >= 0, got {v!r}")


def rotation_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def rotation_x(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def round_cone(a, b, r1: float, r2: float) -> dict:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if not np.linalg.norm(b - a) > abs(r1 - r2):
        raise ValueError("round_cone: the end spheres must not contain one another (|b - a| > |r1 - r2|)")
    return {"type": "round_cone", "a": a, "b": b, "r1": float(r1), "r2": float(r2)}


def prism(center, polygon, half: float, R=None) -> dict:
    """`polygon` `[K, 2]`: (x, z) corners of a convex polygon in the local frame, in order."""
    return {"type": "prism", "center": np.asarray(center, dtype=np.float64), "polygon": np.asarray(polygon, dtype=np.float64),
            "half": float(half), "R": np.eye(3) if R is None else np.asarray(R, dtype=np.float64)}  # fmt: skip


def part_aabb(part: dict) -> tuple[np.ndarray, np.ndarray]:
    if part["type"] == "round_cone":
        a, b, r1, r2 = part["a"], part["b"], part["r1"], part["r2"]
        return np.minimum(a - r1, b - r2), np.maximum(a + r1, b + r2)  # box of the two end spheres' hull
    if part["type"] == "prism":
        poly, h = part["polygon"], part["half"]
        corners = np.array([[x, y, z] for x, z in poly for y in (-h, h)])
        world = corners @ part["R"].T + part["center"]
        return world.min(0), world.max(0)
    return _aabb(part)


def _sdf_round_cone(p: torch.Tensor, part: dict) -> torch.Tensor:
    t = lambda v: torch.as_tensor(v, dtype=p.dtype, device=p.device)  # noqa: E731
    a, ba = t(part["a"]), t(part["b"] - part["a"])
    r1, r2 = part["r1"], part["r2"]
    l2 = float((part["b"] - part["a"]) @ (part["b"] - part["a"]))
    rr = r1 - r2
    a2 = l2 - rr * rr
    pa = p - a
    y = pa @ ba
    z = y - l2
    x2 = (pa * l2 - y[:, None] * ba).square().sum(-1)
    y2, z2 = y * y * l2, z * z * l2
    k = np.sign(rr) * rr * rr * x2
    far_b = torch.sqrt(x2 + z2) / l2 - r2
    far_a = torch.sqrt(x2 + y2) / l2 - r1
    side = (torch.sqrt(x2 * a2 / l2) + y * rr) / l2 - r1
    return torch.where(torch.sign(z) * a2 * z2 > k, far_b, torch.where(torch.sign(y) * a2 * y2 < k, far_a, side))


def _sdf_polygon(x: torch.Tensor, z: torch.Tensor, poly: np.ndarray) -> torch.Tensor:
    """Signed distance `[N]` to a closed polygon in 2D (Quilez), negative inside."""
    d = (x - poly[0, 0]).square() + (z - poly[0, 1]).square()
    sign = torch.ones_like(x)
    for i in range(len(poly)):
        vi, vj = poly[i], poly[i - 1]
        ex, ez = vj - vi
        wx, wz = x - vi[0], z - vi[1]
        h = ((wx * ex + wz * ez) / (ex * ex + ez * ez)).clamp(0.0, 1.0)
        d = torch.minimum(d, (wx - ex * h).square() + (wz - ez * h).square())
        c1, c2, c3 = z >= vi[1], z < vj[1], ex * wz > ez * wx
        sign = torch.where((c1 & c2 & c3) | (~c1 & ~c2 & ~c3), -sign, sign)
    return sign * torch.sqrt(d)


def _sdf_prism(p: torch.Tensor, part: dict) -> torch.Tensor:
    t = lambda v: torch.as_tensor(v, dtype=p.dtype, device=p.device)  # noqa: E731
    q = (p - t(part["center"])) @ t(part["R"])  # world -> local
    w = torch.stack([_sdf_polygon(q[:, 0], q[:, 2], part["polygon"]), q[:, 1].abs() - part["half"]], -1)
    return w.amax(-1).clamp_max(0) + w.clamp_min(0).norm(dim=-1)


def part_sdf(p: torch.Tensor, part: dict) -> torch.Tensor:  # p: [N, 3]
    fn = {"box": _sdf_box, "cylinder": _sdf_cylinder, "round_cone": _sdf_round_cone, "prism": _sdf_prism}[part["type"]]
    return fn(p, part)


def union_sdf(parts: list[dict], blend: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """The smooth union of `parts` in the unit-cube frame (bounding box centred, longest side
    `EXTENT`): a callable, points `[N, 3]` -> sdf `[N]` (negative inside; any float dtype/device)."""
    boxes = [part_aabb(q) for q in parts]
    lo, hi = np.min([b[0] for b in boxes], 0), np.max([b[1] for b in boxes], 0)
    centre, scale = 0.5 * (lo + hi), EXTENT / float((hi - lo).max())

    def sdf(points: torch.Tensor) -> torch.Tensor:  # points: [N, 3]
        if not isinstance(points, torch.Tensor) or points.dim() != 2 or points.shape[1] != 3:
            raise ValueError(f"points: expected a [N, 3] tensor, got {getattr(points, 'shape', type(points))}")
        x = points / scale + torch.as_tensor(centre, dtype=points.dtype, device=points.device)
        d = None
        for part in parts:
            di = part_sdf(x, part)
            d = di if d is None else _smooth_min(d, di, blend)
        return d * scale

    return sdf


def mesh_of(sdf: Callable, resolution: int, name: str) -> trimesh.Trimesh:
    """Marching cubes of `sdf` over [-0.5, 0.5]^3 at `resolution`^3 samples, largest component."""
    from taichi_sdf.geometry.meshing import extract_mesh

    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) or resolution < 32:
        raise ValueError(f"resolution: expected an int >= 32 (thin parts vanish below that), got {resolution!r}")
    mesh = extract_mesh(sdf, resolution=int(resolution), bound=_BOUND, largest_component=True)
    mesh.metadata["name"] = name
    return mesh
