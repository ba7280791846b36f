"""Built-in scenes: `make_scene(name)` returns a `TaichiField` that needs no files. Each lies inside
the unit sphere. Their torch twins are `taichi_sdf.reference.implicit.scenes.<name>` (the library
never imports the reference; tests look the twin up by `field.name`)."""

from __future__ import annotations

import torch

from taichi_sdf.core import runtime
from taichi_sdf.implicit.fields import TaichiField
from taichi_sdf.kernels.implicit import scenes as ti_scenes

# name -> (default params, bound radius, description)
SCENES: dict[str, tuple[tuple[float, ...], float, str]] = {
    "sphere": ((0.0, 0.0, 0.0, 0.5), 1.0, "a sphere of radius 0.5"),
    "csg": ((0.45, 0.6, 0.25), 1.0, "rounded cube ∩ sphere minus three cylinders"),
    "sphere_box": ((0.35, 0.25), 1.0, "union of a sphere and a cube"),
    "blobs": ((0.45, 0.12, 0.4, 0.15, 0.1), 1.0, "torus, sphere and capsule, smoothly joined"),
}


def make_scene(name: str, params=None, dtype: torch.dtype = torch.float32, device=None) -> TaichiField:
    """A built-in scene as a `TaichiField` with its default (or given) parameters."""
    if name not in SCENES:
        raise ValueError(f"scene: expected one of {sorted(SCENES)}, got {name!r}")
    default, radius, _ = SCENES[name]
    device = runtime.device() if device is None else device
    p = torch.tensor(default if params is None else params, dtype=dtype, device=device)
    if p.shape != (len(default),):
        raise ValueError(f"params: scene {name!r} expects {len(default)} parameters, got shape {list(p.shape)}")
    return TaichiField(getattr(ti_scenes, name), p, radius, None, name, getattr(ti_scenes, name + "_xyz"))
