"""The procedural shape classes by name: chairs (`shape_family`), tables and airplanes.

    mesh = make_class_shape("table", 3, seed=0)        # watertight trimesh in [-0.5, 0.5]^3
    sdf = class_sdf("airplane", 3)                     # points [N, 3] -> sdf [N]

Every class follows the chairs' conventions: parameters from `default_rng([seed, index])`, y up, the
bounding box centred and scaled to the longest side `EXTENT` (0.9), meshes by marching cubes of the
SDF over the unit cube (closed, normals out, largest component).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import trimesh

from taichi_sdf.geometry import airplanes, shape_family, tables

__all__ = ["Family", "FAMILIES", "CLASSES", "family", "class_params", "class_sdf", "make_class_shape"]


class Family(NamedTuple):
    params: Callable[..., dict]  # (index, seed) -> parameters
    sdf: Callable[[dict], Callable[[torch.Tensor], torch.Tensor]]  # parameters -> sdf callable
    make_shape: Callable[..., trimesh.Trimesh]  # (index, seed, resolution) -> mesh


FAMILIES: dict[str, Family] = {
    "chair": Family(shape_family.chair_params, shape_family.chair_sdf, shape_family.make_shape),
    "table": Family(tables.table_params, tables.table_sdf, tables.make_shape),
    "airplane": Family(airplanes.airplane_params, airplanes.airplane_sdf, airplanes.make_shape),
}
CLASSES = tuple(FAMILIES)


def family(class_name: str) -> Family:
    if class_name not in FAMILIES:
        raise ValueError(f"class_name: expected one of {CLASSES}, got {class_name!r}")
    return FAMILIES[class_name]


def class_params(class_name: str, index: int, seed: int = 0) -> dict:
    return family(class_name).params(index, seed)


def class_sdf(class_name: str, index: int, seed: int = 0) -> Callable[[torch.Tensor], torch.Tensor]:
    """SDF of shape `index` of a class: points `[N, 3]` (unit-cube frame) -> sdf `[N]`, negative inside."""
    fam = family(class_name)
    return fam.sdf(fam.params(index, seed))


def make_class_shape(class_name: str, index: int, seed: int = 0, resolution: int = 128) -> trimesh.Trimesh:
    """Watertight mesh of shape `index` of a class (`resolution`^3 marching cubes over the unit cube)."""
    return family(class_name).make_shape(index, seed=seed, resolution=resolution)
