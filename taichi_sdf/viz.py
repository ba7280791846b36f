"""Turn tracer outputs into pictures: normal maps, depth maps, Lambert and Phong shading.

All functions take `[..., 3]` normals / `[...]` depths and a `[...]` hit mask and return float RGB
`[..., 3]` in [0, 1] (background = `background`), differentiable where the inputs are.
"""

from __future__ import annotations

import torch


def _bg(like: torch.Tensor, background) -> torch.Tensor:
    return torch.as_tensor(background, dtype=like.dtype, device=like.device).expand_as(like)


def normal_map(normals: torch.Tensor, hit: torch.Tensor, background=(0.0, 0.0, 0.0)) -> torch.Tensor:
    """World-space normals `[..., 3]` as colours 0.5 + 0.5 n."""
    rgb = 0.5 + 0.5 * normals
    return torch.where(hit[..., None], rgb, _bg(rgb, background))


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
    rgb = v[..., None].expand(*v.shape, 3)
    return torch.where(hit[..., None], rgb, _bg(rgb, background))


def lambert(normals: torch.Tensor, hit: torch.Tensor, light_dir=(-0.3, -1.0, -0.5), albedo=(0.8, 0.8, 0.8),
            ambient: float = 0.2, background=(0.0, 0.0, 0.0)) -> torch.Tensor:  # fmt: skip
    """Diffuse shading under a directional light travelling along `light_dir` (world), with ambient.

    `albedo` is a colour `[3]` or per-pixel `[..., 3]`.
    """
    L = -torch.as_tensor(light_dir, dtype=normals.dtype, device=normals.device)
    L = L / L.norm()
    albedo = torch.as_tensor(albedo, dtype=normals.dtype, device=normals.device)
    diffuse = (normals * L).sum(-1).clamp_min(0)[..., None]
    rgb = albedo * (ambient + (1 - ambient) * diffuse)
    return torch.where(hit[..., None], rgb.clamp(0, 1), _bg(rgb, background))


def phong(normals: torch.Tensor, directions: torch.Tensor, hit: torch.Tensor, light_dir=(-0.3, -1.0, -0.5),
          albedo=(0.8, 0.8, 0.8), ambient: float = 0.15, specular: float = 0.4, shininess: float = 32.0,
          background=(0.0, 0.0, 0.0)) -> torch.Tensor:  # fmt: skip
    """Lambert plus a Phong highlight for viewing rays `directions [..., 3]`."""
    base = lambert(normals, hit, light_dir, albedo, ambient, background)
    L = -torch.as_tensor(light_dir, dtype=normals.dtype, device=normals.device)
    L = L / L.norm()
    R = 2 * (normals * L).sum(-1, keepdim=True) * normals - L
    spec = specular * (R * -directions).sum(-1).clamp_min(0) ** shininess
    rgb = (base + spec[..., None]).clamp(0, 1)
    return torch.where(hit[..., None], rgb, _bg(rgb, background))
