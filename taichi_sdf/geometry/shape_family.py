"""A built-in procedural shape class: parametric chairs, so that shape-space methods (DeepSDF, DIST)
run end to end with no download.

Each chair is a smooth union (CSG) of rounded boxes and capped cylinders, written as a pure torch
SDF: a seat, a back (solid panel, vertical slats or horizontal rails, tilted backwards), four legs
(square or round, optionally splayed, optionally joined by stretchers) or a five-spoke pedestal,
and optional arm rests. The proportions are drawn from `numpy.random.default_rng([seed, index])`,
so shape `index` is the same whatever the number of shapes generated and on every machine.

    params = chair_params(7, seed=0)          # JSON-serialisable dict of proportions
    sdf = chair_sdf(params)                   # callable: points [N, 3] -> sdf [N]
    mesh = make_shape(7, seed=0)              # trimesh.Trimesh, watertight, one component
    paths = write_family("data/chairs", 200)  # chair_0000.ply ... (resumable)

Frame: y up, the seat's front edge towards +z, the bounding box centred at the origin and scaled
so that its longest side is `EXTENT` (0.9): every chair fits in the unit cube [-0.5, 0.5]^3.
Meshes come from marching cubes of the SDF over that cube, so they are closed (watertight) and
consistently oriented (normals out); only the largest connected component is kept, which is the
whole chair since the parts overlap by construction.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import trimesh

__all__ = ["EXTENT", "chair_params", "chair_parts", "chair_sdf", "make_shape", "write_family"]

EXTENT = 0.9  # longest side of every chair's bounding box (the unit cube keeps a 0.05 margin)
_BOUND = ((-0.5, -0.5, -0.5), (0.5, 0.5, 0.5))
_BLEND = 0.008  # smooth-union radius (chair units, ~1 m tall): small fillets that weld the parts


# ------------------------------------------------------------------------------------ parameters


def chair_params(index: int, seed: int = 0) -> dict:
    """The proportions of chair `index` of family `seed` (lengths in chair units, ~metres).

    Deterministic: the generator is seeded with `[seed, index]`, so a shape does not depend on how
    many others are generated. Returns a JSON-serialisable dict.
    """
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
        raise ValueError(f"index: expected an int >= 0, got {index!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: expected an int >= 0, got {seed!r}")
    rng = np.random.default_rng([int(seed), int(index)])

    def u(lo: float, hi: float) -> float:
        return float(rng.uniform(lo, hi))

    seat_w = u(0.40, 0.58)
    p = {
        "index": int(index),
        "seed": int(seed),
        "seat_width": seat_w,  # x
        "seat_depth": u(0.38, 0.52),  # z
        "seat_thickness": u(0.03, 0.07),
        "seat_height": u(0.38, 0.52),  # floor to the top of the seat
        "rounding": u(0.002, 0.015),  # corner radius of boxes
        "base": "pedestal" if rng.uniform() < 0.15 else "legs",
        "leg_style": "round" if rng.uniform() < 0.4 else "square",
        "leg_width": u(0.03, 0.055),
        "leg_inset": u(0.0, 0.04),  # legs' distance from the seat's edges
        "leg_splay": u(0.0, 0.05) if rng.uniform() < 0.4 else 0.0,  # feet pushed outwards
        "stretchers": "none",
        "stretcher_height": u(0.08, 0.2),
        "back_style": str(rng.choice(["solid", "slats", "rails"], p=[0.45, 0.3, 0.25])),
        "back_height": u(0.3, 0.58),  # above the top of the seat
        "back_thickness": u(0.03, 0.055),
        "back_width": seat_w * u(0.8, 1.0),
        "back_tilt_deg": u(0.0, 18.0),
        "back_bars": int(rng.integers(2, 6)),  # slats or rails
        "arms": bool(rng.uniform() < 0.3),
        "arm_height": u(0.15, 0.25),  # above the top of the seat
        "arm_width": u(0.04, 0.07),
        "pedestal_radius": u(0.22, 0.3),
    }
    if p["base"] == "legs":
        p["stretchers"] = str(rng.choice(["none", "sides", "h"], p=[0.55, 0.25, 0.2]))
    return p


# ------------------------------------------------------------------------------------ primitives


def _frame(axis: np.ndarray) -> np.ndarray:
    """`[3, 3]` rotation whose columns are (x', axis, z'), x' as close to +x as possible."""
    y = axis / np.linalg.norm(axis)
    x = np.array([1.0, 0.0, 0.0]) - y[0] * y
    if np.linalg.norm(x) < 1e-6:
        x = np.array([0.0, 0.0, 1.0]) - y[2] * y
    x /= np.linalg.norm(x)
    return np.stack([x, y, np.cross(x, y)], 1)


def _box(center, half, rounding=0.0, R=None) -> dict:
    R = np.eye(3) if R is None else np.asarray(R, dtype=np.float64)
    half = np.asarray(half, dtype=np.float64)
    return {"type": "box", "center": np.asarray(center, dtype=np.float64), "half": half, "R": R,
            "rounding": float(min(rounding, 0.45 * half.min()))}  # fmt: skip


def _cylinder(a, b, radius) -> dict:
    return {"type": "cylinder", "a": np.asarray(a, dtype=np.float64), "b": np.asarray(b, dtype=np.float64),
            "radius": float(radius)}  # fmt: skip


def _bar(a, b, width, style: str, rounding: float) -> dict:
    """A leg-like bar from `a` to `b`: a cylinder of diameter `width`, or a square box."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if style == "round":
        return _cylinder(a, b, 0.5 * width)
    length = float(np.linalg.norm(b - a))
    return _box(0.5 * (a + b), (0.5 * width, 0.5 * length, 0.5 * width), rounding, _frame(b - a))


def _aabb(part: dict) -> tuple[np.ndarray, np.ndarray]:
    if part["type"] == "box":
        extent = np.abs(part["R"]) @ part["half"]  # half-extent of a rotated box along each axis
        return part["center"] - extent, part["center"] + extent
    a, b, r = part["a"], part["b"], part["radius"]
    u = (b - a) / np.linalg.norm(b - a)
    extent = r * np.sqrt(np.clip(1.0 - u * u, 0.0, 1.0))  # disc caps: exact box of a capped cylinder
    return np.minimum(a, b) - extent, np.maximum(a, b) + extent


# ----------------------------------------------------------------------------------- the chair


def chair_parts(params: dict) -> list[dict]:
    """The primitives of a chair in chair units (y up, floor at y = 0, front towards +z): dicts
    {"type": "box", center [3], half [3], R [3, 3] (local -> world columns), rounding} or
    {"type": "cylinder", a [3], b [3], radius}. Parts overlap, so their union is one solid."""
    p = params
    sw, sd, st, sh = p["seat_width"], p["seat_depth"], p["seat_thickness"], p["seat_height"]
    rnd = p["rounding"]
    lw = p["leg_width"]
    parts = [_box((0.0, sh - 0.5 * st, 0.0), (0.5 * sw, 0.5 * st, 0.5 * sd), rnd)]
    seat_mid = sh - 0.5 * st  # legs and posts end inside the seat so that the union is welded

    # Base.
    if p["base"] == "legs":
        lx, lz = 0.5 * sw - p["leg_inset"] - 0.5 * lw, 0.5 * sd - p["leg_inset"] - 0.5 * lw
        feet = {}
        for sx in (-1.0, 1.0):
            for sz in (-1.0, 1.0):
                top = np.array([sx * lx, seat_mid, sz * lz])
                foot = np.array([sx * (lx + p["leg_splay"]), 0.0, sz * (lz + p["leg_splay"])])
                feet[sx, sz] = (top, foot)
                parts.append(_bar(top, foot, lw, p["leg_style"], rnd))

        def on_leg(key, y):  # the leg's axis at height y
            top, foot = feet[key]
            return foot + (top - foot) * (y / top[1])

        h = p["stretcher_height"]
        sw_bar = max(0.6 * lw, 0.025)
        if p["stretchers"] in ("sides", "h"):
            for sx in (-1.0, 1.0):
                parts.append(_bar(on_leg((sx, -1.0), h), on_leg((sx, 1.0), h), sw_bar, p["leg_style"], rnd))
        if p["stretchers"] == "h":  # cross bar between the two side stretchers
            mid = [0.5 * (on_leg((sx, -1.0), h) + on_leg((sx, 1.0), h)) for sx in (-1.0, 1.0)]
            parts.append(_bar(mid[0], mid[1], sw_bar, p["leg_style"], rnd))
    else:
        col_r = 0.6 * lw + 0.01
        hub_y = 0.07
        parts.append(_cylinder((0.0, hub_y - 0.02, 0.0), (0.0, seat_mid, 0.0), col_r))
        for k in range(5):
            phi = 2.0 * math.pi * k / 5 + 0.5 * math.pi
            end = np.array([p["pedestal_radius"] * math.cos(phi), 0.035, p["pedestal_radius"] * math.sin(phi)])
            parts.append(_bar((0.0, hub_y, 0.0), end, 0.8 * lw, "square", rnd))
            parts.append(_cylinder(end + (0.0, 0.01, 0.0), (end[0], 0.0, end[2]), 0.5 * lw))  # foot

    # Back, in a frame tilted backwards about the seat's rear top edge.
    tilt = math.radians(p["back_tilt_deg"])
    pivot = np.array([0.0, sh, -0.5 * sd])
    R = np.array([[1.0, 0.0, 0.0], [0.0, math.cos(tilt), math.sin(tilt)], [0.0, -math.sin(tilt), math.cos(tilt)]])

    def back_box(x0, x1, s0, s1, w0, w1) -> dict:  # bounds along (x, up the back, into the seat)
        c = np.array([0.5 * (x0 + x1), 0.5 * (s0 + s1), 0.5 * (w0 + w1)])
        return _box(pivot + R @ c, (0.5 * (x1 - x0), 0.5 * (s1 - s0), 0.5 * (w1 - w0)), rnd, R)

    bw, bh, bt = p["back_width"], p["back_height"], p["back_thickness"]
    s_low = -0.8 * st  # reaches into the seat
    if p["back_style"] == "solid":
        parts.append(back_box(-0.5 * bw, 0.5 * bw, s_low, bh, 0.0, bt))
    else:
        post = max(lw, bt)
        rail = 0.12 * bh + 0.02
        parts.append(back_box(-0.5 * bw, -0.5 * bw + post, s_low, bh, 0.0, post))
        parts.append(back_box(0.5 * bw - post, 0.5 * bw, s_low, bh, 0.0, post))
        parts.append(back_box(-0.5 * bw, 0.5 * bw, bh - rail, bh, 0.0, bt))
        n = p["back_bars"]
        if p["back_style"] == "slats":
            inner = bw - 2.0 * post
            width = min(0.06, 0.5 * inner / n)
            for k in range(n):
                x = -0.5 * inner + inner * (k + 0.5) / n
                parts.append(back_box(x - 0.5 * width, x + 0.5 * width, s_low, bh - 0.5 * rail, 0.1 * bt, 0.8 * bt))
        else:
            for k in range(1, n):
                s = (bh - rail) * k / n
                parts.append(back_box(-0.5 * bw + 0.5 * post, 0.5 * bw - 0.5 * post, s, s + 0.6 * rail, 0.1 * bt, 0.8 * bt))

    # Arm rests: a rail from the back to near the front edge, on a front post down into the seat.
    if p["arms"]:
        aw, ah = p["arm_width"], p["arm_height"]
        y = sh + ah
        z_back = -0.5 * sd + bt - math.tan(tilt) * ah  # meets the tilted back
        for sx in (-1.0, 1.0):
            x = sx * (0.5 * sw - 0.5 * aw)
            parts.append(_box((x, y, 0.5 * (z_back + 0.45 * sd)), (0.5 * aw, 0.018, 0.5 * (0.45 * sd - z_back)), rnd))
            parts.append(_bar((x, seat_mid, 0.38 * sd), (x, y, 0.38 * sd), 0.7 * aw, p["leg_style"], rnd))
    return parts


def _chair_transform(parts: list[dict]) -> tuple[np.ndarray, float]:
    """(centre [3], scale): unit-cube coordinates x = (x_chair - centre) * scale."""
    boxes = [_aabb(q) for q in parts]
    lo = np.min([b[0] for b in boxes], 0)
    hi = np.max([b[1] for b in boxes], 0)
    return 0.5 * (lo + hi), EXTENT / float((hi - lo).max())


def _sdf_box(p: torch.Tensor, part: dict) -> torch.Tensor:
    t = lambda a: torch.as_tensor(a, dtype=p.dtype, device=p.device)  # noqa: E731
    q = (p - t(part["center"])) @ t(part["R"])  # world -> box frame (R's columns are its axes)
    q = q.abs() - (t(part["half"]) - part["rounding"])
    return q.clamp_min(0).norm(dim=-1) + q.amax(-1).clamp_max(0) - part["rounding"]


def _sdf_cylinder(p: torch.Tensor, part: dict) -> torch.Tensor:
    a = torch.as_tensor(part["a"], dtype=p.dtype, device=p.device)
    axis = torch.as_tensor(part["b"] - part["a"], dtype=p.dtype, device=p.device)
    length = float(axis.norm())
    axis = axis / length
    pa = p - a
    along = pa @ axis
    radial = (pa - along[:, None] * axis).norm(dim=-1) - part["radius"]
    cap = (along - 0.5 * length).abs() - 0.5 * length
    d = torch.stack([radial, cap], -1)
    return d.clamp_min(0).norm(dim=-1) + d.amax(-1).clamp_max(0)


def _smooth_min(a: torch.Tensor, b: torch.Tensor, k: float) -> torch.Tensor:
    """Polynomial smooth minimum (Quilez): min(a, b) minus at most k / 4 where |a - b| < k."""
    h = (0.5 + 0.5 * (b - a) / k).clamp(0.0, 1.0)
    return b + (a - b) * h - k * h * (1.0 - h)


def chair_sdf(params: dict) -> Callable[[torch.Tensor], torch.Tensor]:
    """The chair's SDF in the unit-cube frame: a callable, points `[N, 3]` -> sdf `[N]` (negative
    inside; float32/float64, any device). Exact away from the blended joints, where the smooth
    union makes it a slight under-estimate, as usual for CSG."""
    parts = chair_parts(params)
    centre, scale = _chair_transform(parts)

    def sdf(points: torch.Tensor) -> torch.Tensor:  # points: [N, 3]
        if not isinstance(points, torch.Tensor) or points.dim() != 2 or points.shape[1] != 3:
            raise ValueError(f"points: expected a [N, 3] tensor, got {getattr(points, 'shape', type(points))}")
        x = points / scale + torch.as_tensor(centre, dtype=points.dtype, device=points.device)
        d = None
        for part in parts:
            di = _sdf_box(x, part) if part["type"] == "box" else _sdf_cylinder(x, part)
            d = di if d is None else _smooth_min(d, di, _BLEND)
        return d * scale

    return sdf


# --------------------------------------------------------------------------------------- meshes


def make_shape(index: int, seed: int = 0, resolution: int = 128) -> trimesh.Trimesh:
    """Mesh of chair `index` of family `seed`: marching cubes of `chair_sdf` over [-0.5, 0.5]^3 at
    `resolution`^3 samples (voxel 1/(resolution-1)); watertight, one component, normals out."""
    from taichi_sdf.geometry.meshing import extract_mesh

    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) or resolution < 32:
        raise ValueError(f"resolution: expected an int >= 32 (thin legs vanish below that), got {resolution!r}")
    mesh = extract_mesh(chair_sdf(chair_params(index, seed)), resolution=int(resolution), bound=_BOUND,
                        largest_component=True)  # fmt: skip
    mesh.metadata["name"] = f"chair_{index:04d}"
    return mesh


def write_family(
    out_dir: str | os.PathLike,
    count: int,
    seed: int = 0,
    resolution: int = 128,
    ext: str = "ply",
    progress: bool = True,
) -> list[Path]:
    """Write chairs 0..count-1 as `<out_dir>/chair_0000.<ext>` (ply or obj), skipping files that
    exist (each is written atomically, so an interrupted run resumes where it stopped).

    Returns the `count` paths, in index order.
    """
    from tqdm.auto import tqdm

    from taichi_sdf.geometry.meshing import save_mesh

    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
        raise ValueError(f"count: expected an int >= 1, got {count!r}")
    if ext not in ("ply", "obj"):
        raise ValueError(f"ext: expected 'ply' or 'obj', got {ext!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"chair_{i:04d}.{ext}" for i in range(count)]
    todo = [i for i, path in enumerate(paths) if not path.exists()]
    bar = tqdm(todo, desc="chairs", unit="shape", disable=not progress or not todo)
    for i in bar:
        mesh = make_shape(i, seed=seed, resolution=resolution)
        save_mesh(mesh, paths[i])
        bar.set_postfix(faces=len(mesh.faces))
    return paths
