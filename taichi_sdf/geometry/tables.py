"""A procedural family of tables, in the style of the chairs (`shape_family`):

    p = table_params(7, seed=0)      # proportions drawn from default_rng([seed, index])
    sdf = table_sdf(p)               # points [N, 3] -> sdf [N], unit-cube frame
    mesh = make_shape(7, seed=0)     # watertight trimesh in [-0.5, 0.5]^3

Variants: rectangular or round tops; four legs (round or square, optionally splayed, with an apron,
stretchers or a lower shelf), a pedestal (column on a disc or a cross foot), trestles (two end
supports with feet and a beam) or two panel sides (desks). Frame: y up, front towards +z, the
bounding box centred and scaled to the longest side `EXTENT`, as every family.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import trimesh

from taichi_sdf.geometry.parts import check_index, mesh_of, union_sdf
from taichi_sdf.geometry.shape_family import _bar, _box, _cylinder

__all__ = ["table_params", "table_parts", "table_sdf", "make_shape"]

_BLEND = 0.01  # smooth-union radius (table units, ~metres)


def table_params(index: int, seed: int = 0) -> dict:
    """The proportions of table `index` of family `seed` (metres); JSON-serialisable, deterministic."""
    check_index(index, seed)
    rng = np.random.default_rng([int(seed), int(index)])

    def u(lo: float, hi: float) -> float:
        return float(rng.uniform(lo, hi))

    top = "round" if rng.uniform() < 0.3 else "rect"
    width = u(0.8, 1.6) if top == "rect" else u(0.7, 1.2)
    p = {
        "index": int(index),
        "seed": int(seed),
        "top": top,
        "width": width,  # x (the diameter of round tops)
        "depth": width * u(0.45, 0.9) if top == "rect" else width,  # z
        "height": u(0.42, 0.8),  # floor to the top surface
        "top_thickness": u(0.04, 0.07),
        "rounding": u(0.003, 0.015),
        "base": str(rng.choice(["legs", "pedestal", "trestle", "panels"], p=[0.55, 0.15, 0.15, 0.15])),
        "leg_style": "round" if rng.uniform() < 0.4 else "square",
        "leg_width": u(0.045, 0.08),
        "leg_inset": u(0.02, 0.1),
        "leg_splay": u(0.0, 0.05) if rng.uniform() < 0.3 else 0.0,
        "apron": bool(rng.uniform() < 0.5),
        "apron_height": u(0.06, 0.12),
        "stretchers": str(rng.choice(["none", "sides", "h"], p=[0.6, 0.2, 0.2])),
        "stretcher_height": u(0.08, 0.2),
        "shelf": bool(rng.uniform() < 0.25),
        "shelf_height": u(0.1, 0.22),
        "column_radius": u(0.04, 0.09),
        "foot": "disc" if rng.uniform() < 0.5 else "cross",
        "foot_radius": u(0.2, 0.35),
        "panel_thickness": u(0.035, 0.06),
    }
    if top == "round" and p["base"] in ("trestle", "panels"):
        p["base"] = "pedestal"
    if p["shelf"]:
        p["stretchers"] = "none"  # the shelf ties the legs together instead
    return p


def table_parts(params: dict) -> list[dict]:
    """The primitives of a table in table units (y up, floor at y = 0); parts overlap into one solid."""
    p = params
    w, d, h, tt, rnd = p["width"], p["depth"], p["height"], p["top_thickness"], p["rounding"]
    lw = p["leg_width"]
    under = h - tt  # underside of the top
    mid = h - 0.5 * tt  # supports end inside the top so that the union is welded
    if p["top"] == "round":
        parts = [_cylinder((0.0, under, 0.0), (0.0, h, 0.0), 0.5 * w)]
    else:
        parts = [_box((0.0, mid, 0.0), (0.5 * w, 0.5 * tt, 0.5 * d), rnd)]

    if p["base"] == "legs":
        if p["top"] == "round":
            r = 0.5 * w / math.sqrt(2) - p["leg_inset"] - 0.5 * lw
            lx = lz = r
        else:
            lx, lz = 0.5 * w - p["leg_inset"] - 0.5 * lw, 0.5 * d - p["leg_inset"] - 0.5 * lw
        feet = {}
        for sx in (-1.0, 1.0):
            for sz in (-1.0, 1.0):
                top = np.array([sx * lx, mid, sz * lz])
                foot = np.array([sx * (lx + p["leg_splay"]), 0.0, sz * (lz + p["leg_splay"])])
                feet[sx, sz] = (top, foot)
                parts.append(_bar(top, foot, lw, p["leg_style"], rnd))

        def on_leg(key, y):
            top, foot = feet[key]
            return foot + (top - foot) * (y / top[1])

        if p["apron"]:  # boards under the top between the legs
            ah = min(p["apron_height"], 0.5 * under)
            y = under - 0.5 * ah + 0.005
            t = 0.6 * lw
            parts.append(_box((0.0, y, -lz), (lx, 0.5 * ah, 0.5 * t), rnd))
            parts.append(_box((0.0, y, lz), (lx, 0.5 * ah, 0.5 * t), rnd))
            parts.append(_box((-lx, y, 0.0), (0.5 * t, 0.5 * ah, lz), rnd))
            parts.append(_box((lx, y, 0.0), (0.5 * t, 0.5 * ah, lz), rnd))
        sh = p["stretcher_height"]
        bar = max(0.6 * lw, 0.03)
        if p["stretchers"] in ("sides", "h"):
            for sx in (-1.0, 1.0):
                parts.append(_bar(on_leg((sx, -1.0), sh), on_leg((sx, 1.0), sh), bar, p["leg_style"], rnd))
        if p["stretchers"] == "h":
            a, b = (0.5 * (on_leg((sx, -1.0), sh) + on_leg((sx, 1.0), sh)) for sx in (-1.0, 1.0))
            parts.append(_bar(a, b, bar, p["leg_style"], rnd))
        if p["shelf"]:
            y = p["shelf_height"]
            corners = [on_leg(k, y) for k in feet]
            hx = max(abs(c[0]) for c in corners) + 0.3 * lw
            hz = max(abs(c[2]) for c in corners) + 0.3 * lw
            parts.append(_box((0.0, y, 0.0), (hx, 0.5 * max(0.6 * tt, 0.035), hz), rnd))
    elif p["base"] == "pedestal":
        cr = p["column_radius"]
        parts.append(_cylinder((0.0, 0.02, 0.0), (0.0, mid, 0.0), cr))
        fr = min(p["foot_radius"], 0.45 * min(w, d))
        if p["foot"] == "disc":
            parts.append(_cylinder((0.0, 0.0, 0.0), (0.0, 0.04, 0.0), fr))
        else:
            for k in range(4):
                phi = 0.5 * math.pi * k + 0.25 * math.pi
                end = (fr * math.cos(phi), 0.03, fr * math.sin(phi))
                parts.append(_bar((0.0, 0.04, 0.0), end, 0.9 * lw, "square", rnd))
                parts.append(_cylinder((end[0], 0.0, end[2]), (end[0], 0.05, end[2]), 0.5 * lw))
        parts.append(_cylinder((0.0, under - 0.03, 0.0), (0.0, mid, 0.0), min(2.5 * cr, 0.3 * min(w, d))))  # cap plate
    elif p["base"] == "trestle":
        x = 0.5 * w - p["leg_inset"] - 0.5 * lw - 0.05
        pd = 0.35 * d
        for sx in (-1.0, 1.0):
            parts.append(_box((sx * x, 0.5 * mid, 0.0), (0.5 * lw, 0.5 * mid, 0.25 * pd), rnd))  # upright
            parts.append(_box((sx * x, 0.03, 0.0), (0.6 * lw, 0.03, 0.5 * d - 0.03), rnd))  # foot
            parts.append(_box((sx * x, under - 0.025, 0.0), (0.6 * lw, 0.025, 0.5 * d - 0.05), rnd))  # cleat
        parts.append(_box((0.0, p["stretcher_height"] + 0.1, 0.0), (x, 0.035, 0.5 * lw), rnd))  # beam
    else:  # panels
        pt = p["panel_thickness"]
        x = 0.5 * w - pt * 0.5 - 0.01
        for sx in (-1.0, 1.0):
            parts.append(_box((sx * x, 0.5 * mid, 0.0), (0.5 * pt, 0.5 * mid, 0.5 * d - 0.02), rnd))
        parts.append(_box((0.0, 0.55 * under, -0.5 * d + 0.05), (x, 0.2 * under, 0.5 * pt), rnd))  # modesty panel
    return parts


def table_sdf(params: dict) -> Callable[[torch.Tensor], torch.Tensor]:
    """The table's SDF in the unit-cube frame: points `[N, 3]` -> sdf `[N]` (negative inside)."""
    return union_sdf(table_parts(params), _BLEND)


def make_shape(index: int, seed: int = 0, resolution: int = 128) -> trimesh.Trimesh:
    """Mesh of table `index` of family `seed` (see `shape_family.make_shape` for the meshing)."""
    return mesh_of(table_sdf(table_params(index, seed)), resolution, f"table_{index:04d}")
