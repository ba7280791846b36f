"""A procedural family of airplanes, in the style of the chairs (`shape_family`):

    p = airplane_params(7, seed=0)   # proportions drawn from default_rng([seed, index])
    sdf = airplane_sdf(p)            # points [N, 3] -> sdf [N], unit-cube frame
    mesh = make_shape(7, seed=0)     # watertight trimesh in [-0.5, 0.5]^3

A fuselage (capsule with a rounded nose cone and an upswept tail cone), swept and tapered wings
(low, mid or high, with dihedral), a horizontal stabiliser (conventional or T-tail), a vertical fin
and 0, 2 or 4 engine nacelles under the wings. Frame: y up, nose towards +z, wings along x; the
bounding box centred and scaled to the longest side `EXTENT`, as every family.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import trimesh

from taichi_sdf.geometry.parts import check_index, mesh_of, prism, rotation_z, round_cone, union_sdf

__all__ = ["airplane_params", "airplane_parts", "airplane_sdf", "make_shape"]

_BLEND = 0.012  # smooth-union radius (fuselage length 1): fillets at the wing roots
_FIN_FRAME = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])  # local (x, y, z) -> world (z, x, y)


def airplane_params(index: int, seed: int = 0) -> dict:
    """The proportions of airplane `index` of family `seed` (fuselage length 1); deterministic."""
    check_index(index, seed)
    rng = np.random.default_rng([int(seed), int(index)])

    def u(lo: float, hi: float) -> float:
        return float(rng.uniform(lo, hi))

    return {
        "index": int(index),
        "seed": int(seed),
        "fuselage_radius": u(0.035, 0.065),
        "nose_length": u(0.08, 0.18),
        "tail_length": u(0.2, 0.3),
        "tail_upsweep": u(0.0, 0.6),  # x fuselage radius
        "tail_radius": u(0.25, 0.45),  # x fuselage radius
        "wing_span": u(0.75, 1.25),
        "wing_root_chord": u(0.16, 0.3),
        "wing_taper": u(0.25, 0.7),  # tip chord / root chord
        "wing_sweep_deg": u(0.0, 38.0),  # leading edge
        "wing_position": u(-0.08, 0.1),  # root chord centre along the fuselage
        "wing_mount": str(rng.choice(["low", "mid", "high"])),
        "wing_dihedral_deg": u(-4.0, 8.0),
        "wing_thickness": u(0.03, 0.045),
        "engines": int(rng.choice([0, 2, 4], p=[0.3, 0.5, 0.2])),
        "engine_radius": u(0.025, 0.04),
        "engine_length": u(0.12, 0.2),
        "tail": "t_tail" if rng.uniform() < 0.25 else "conventional",
        "stabilizer_span": u(0.28, 0.45),
        "stabilizer_chord": u(0.09, 0.14),
        "fin_height": u(0.12, 0.22),
        "fin_chord": u(0.12, 0.2),
        "fin_sweep_deg": u(25.0, 50.0),
        "tail_thickness": u(0.025, 0.035),
    }


def _half_wings(center, span, root_chord, taper, sweep_deg, dihedral_deg, thickness) -> list[dict]:
    """Two trapezoid slabs from the centre line outwards, tilted by the dihedral."""
    tip_le = 0.5 * root_chord - 0.5 * span * math.tan(math.radians(sweep_deg))
    parts = []
    for sx in (-1.0, 1.0):
        poly = [(0.0, 0.5 * root_chord), (sx * 0.5 * span, tip_le), (sx * 0.5 * span, tip_le - taper * root_chord),
                (0.0, -0.5 * root_chord)]  # fmt: skip
        parts.append(prism(center, poly, 0.5 * thickness, rotation_z(sx * math.radians(dihedral_deg))))
    return parts


def airplane_parts(params: dict) -> list[dict]:
    """The primitives of an airplane (nose +z, y up, fuselage from z = -0.5 to 0.5)."""
    p = params
    r = p["fuselage_radius"]
    z_nose, z_tail = 0.5 - p["nose_length"], -0.5 + p["tail_length"]
    r_nose, r_tail = 0.35 * r, p["tail_radius"] * r
    up = p["tail_upsweep"] * r
    parts = [
        round_cone((0.0, 0.0, z_tail), (0.0, 0.0, z_nose), r, r),
        round_cone((0.0, 0.0, z_nose), (0.0, -0.2 * r, 0.5 - r_nose), r, r_nose),
        round_cone((0.0, 0.0, z_tail), (0.0, up, -0.5 + r_tail), r, r_tail),
    ]

    def tail_axis_y(z: float) -> float:  # centre line of the tail cone
        return up * min(1.0, max(0.0, (z_tail - z) / (z_tail + 0.5 - r_tail)))

    # Wings.
    y_wing = {"low": -0.55 * r, "mid": 0.0, "high": 0.55 * r}[p["wing_mount"]]
    span, chord, taper = p["wing_span"], p["wing_root_chord"], p["wing_taper"]
    sweep, dihedral, t = p["wing_sweep_deg"], p["wing_dihedral_deg"], p["wing_thickness"]
    z_wing = p["wing_position"]
    parts += _half_wings((0.0, y_wing, z_wing), span, chord, taper, sweep, dihedral, t)

    # Engines hang under the wings, overlapping them so that the union stays one solid.
    stations = {0: [], 2: [0.35], 4: [0.3, 0.6]}[p["engines"]]
    re, le = p["engine_radius"], p["engine_length"]
    for frac in stations:
        x = frac * 0.5 * span
        local_chord = chord * (1 - frac * (1 - taper))
        z_le = z_wing + 0.5 * chord - x * math.tan(math.radians(sweep))
        for sx in (-1.0, 1.0):
            y = y_wing + x * math.tan(math.radians(dihedral)) - 0.5 * t - 0.75 * re
            front = z_le + 0.4 * le - 0.1 * local_chord
            parts.append(round_cone((sx * x, y, front - le), (sx * x, y, front), 0.85 * re, re))

    # Tail: fin at the end of the fuselage, stabiliser on it (T-tail) or on the tail cone.
    tt = p["tail_thickness"]
    fin_root_te = -0.5 + 0.4 * r_tail
    fc, fh = p["fin_chord"], p["fin_height"]
    fin_base = tail_axis_y(fin_root_te + 0.5 * fc) + 0.3 * r_tail
    tip_le = fin_root_te + fc - fh * math.tan(math.radians(p["fin_sweep_deg"]))
    fin_poly = [(fin_root_te, -0.8 * r_tail), (fin_root_te + fc, -0.8 * r_tail), (tip_le, fh), (tip_le - 0.55 * fc, fh)]
    parts.append(prism((0.0, fin_base, 0.0), fin_poly, 0.5 * tt, _FIN_FRAME))
    sc = p["stabilizer_chord"]
    if p["tail"] == "t_tail":
        z_st = tip_le - 0.3 * fc
        y_st = fin_base + fh - 0.5 * tt
    else:
        z_st = fin_root_te + 0.5 * sc + 0.01
        y_st = tail_axis_y(z_st)
    parts += _half_wings((0.0, y_st, z_st), p["stabilizer_span"], sc, 0.6, 30.0, 0.0, tt)
    return parts


def airplane_sdf(params: dict) -> Callable[[torch.Tensor], torch.Tensor]:
    """The airplane's SDF in the unit-cube frame: points `[N, 3]` -> sdf `[N]` (negative inside)."""
    return union_sdf(airplane_parts(params), _BLEND)


def make_shape(index: int, seed: int = 0, resolution: int = 128) -> trimesh.Trimesh:
    """Mesh of airplane `index` of family `seed` (see `shape_family.make_shape` for the meshing)."""
    return mesh_of(airplane_sdf(airplane_params(index, seed)), resolution, f"airplane_{index:04d}")
