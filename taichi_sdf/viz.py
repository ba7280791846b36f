"""Turn tracer outputs into pictures: normal maps, depth maps, and Lambert / Phong shaded images.

All functions take `[..., 3]` normals / `[...]` depths and a `[...]` hit mask and return float RGB
`[..., 3]` in [0, 1] (background = `background`), differentiable where the inputs are.

`lambert` and `phong` are the library's one deferred shading (`taichi_sdf.mesh.shading`, which
`render_mesh` uses for mesh pixels) applied to SDF hits, with a light given as a direction of travel
`light_dir` and an `ambient` share: `DirectionalLight(light_dir, color=1 - ambient, ambient)`, so a
pixel facing the light gets exactly its albedo. The result is clamped to [0, 1] and composited over
`background` where `hit` is False.
"""

from __future__ import annotations

import torch

from taichi_sdf.mesh import shading as _shading


def _bg(like: torch.Tensor, background) -> torch.Tensor:
    return torch.as_tensor(background, dtype=like.dtype, device=like.device).expand_as(like)


def _composite(rgb: torch.Tensor, hit: torch.Tensor, background) -> torch.Tensor:
    return torch.where(hit[..., None], rgb, _bg(rgb, background))


def normal_map(normals: torch.Tensor, hit: torch.Tensor, background=(0.0, 0.0, 0.0)) -> torch.Tensor:
    """World-space normals `[..., 3]` as colours 0.5 + 0.5 n."""
    return _composite(0.5 + 0.5 * normals, hit, background)


def depth_map(depth: torch.Tensor, hit: torch.Tensor, near: float | None = None, far: float | None = None,
              background=(0.0, 0.0, 0.0)) -> torch.Tensor:  # fmt: skip
    """Depth `[...]` as grey levels, near = white, far = dark (range from the hits unless given)."""
    d = depth.detach()
    if hit.any():
        near = float(d[hit].min()) if near is None else near
        far = float(d[hit].max()) if far is None else far
    else:
        near, far = 0.0, 1.0
    v = 1.0 - 0.8 * ((depth - near) / max(far - near, 1e-8)).clamp(0, 1)
    return _composite(v[..., None].expand(*v.shape, 3), hit, background)


def _light(light_dir, ambient: float) -> _shading.DirectionalLight:
    return _shading.DirectionalLight(direction=light_dir, color=1.0 - ambient, ambient=ambient)


def _albedo(albedo, normals: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(albedo, dtype=normals.dtype, device=normals.device)


def lambert(normals: torch.Tensor, hit: torch.Tensor, light_dir=(-0.3, -1.0, -0.5), albedo=(0.8, 0.8, 0.8),
            ambient: float = 0.2, background=(0.0, 0.0, 0.0)) -> torch.Tensor:  # fmt: skip
    """Diffuse shading under a directional light travelling along `light_dir` (world):
    albedo * (ambient + (1 - ambient) * max(n . l, 0)). `albedo` is a colour `[3]` or per-pixel `[..., 3]`."""
    rgb = _shading.lambert(_albedo(albedo, normals), normals, _light(light_dir, ambient))
    return _composite(rgb.clamp(0, 1), hit, background)


def phong(normals: torch.Tensor, directions: torch.Tensor, hit: torch.Tensor, light_dir=(-0.3, -1.0, -0.5),
          albedo=(0.8, 0.8, 0.8), ambient: float = 0.15, specular: float = 0.4, shininess: float = 32.0,
          background=(0.0, 0.0, 0.0)) -> torch.Tensor:  # fmt: skip
    """`lambert` plus a Phong highlight specular * (1 - ambient) * max(r . v, 0)^shininess for unit
    viewing rays `directions [..., 3]` (v = -direction; off where n . l <= 0)."""
    material = _shading.Material(specular=specular, shininess=shininess)
    rgb = _shading.phong(_albedo(albedo, normals), normals, -directions, _light(light_dir, ambient), material)
    return _composite(rgb.clamp(0, 1), hit, background)
