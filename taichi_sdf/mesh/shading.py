"""Deferred shading of per-pixel normals: Lambert, Phong / Blinn-Phong and 9-coefficient
spherical-harmonics (SH) irradiance lighting, plus mesh face / vertex normals. The library's one
shading: `render_mesh` shades rasterized mesh pixels with it and `taichi_sdf.viz.lambert` / `phong`
shade sphere-traced SDF hits with it.

Everything here is plain torch on per-vertex or per-pixel buffers (loop-free per pixel), so it is
differentiable by autograd and is its own twin; the tests check it with float64 gradcheck. Shapes:
per-pixel quantities are `[B, ..., 3]` (usually `[B, H, W, 3]`); light and material parameters are a
float, `[3]` (shared by the batch) or `[B, 3]` (one per image), float or tensor (tensors that require
grad receive gradients).

Conventions:
- A directional light is given by its *direction of travel* (from the light into the scene, like
  `apps.make_dataset.SUN`); the unit vector towards the light is l = -direction / |direction|.
- Lambert: rgb = albedo * (ambient + color * max(n . l, 0)). The defaults of `DirectionalLight`
  (SUN, color 0.65, ambient 0.35) are the built-in datasets' view-independent sun + ambient light.
- Phong: Lambert + specular * color * max(r . v, 0)^shininess with r = 2 (n . l) n - l; Blinn-Phong
  uses max(n . h, 0)^shininess with h = (l + v) / |l + v|; v points from the surface to the camera.
  The highlight is off where n . l <= 0.
- SH (Ramamoorthi & Hanrahan 2001, "An efficient representation for irradiance environment maps"):
  real SH basis in the order k = l (l + 1) + m, i.e. [Y00, Y1-1, Y10, Y11, Y2-2, Y2-1, Y20, Y21, Y22]
  with Y1-1 ~ y, Y10 ~ z, Y11 ~ x; coefficients `[B|1, 9, 3]` of the incident radiance (RGB).
  Irradiance E(n) = sum_k A_l(k) L_k Y_k(n), A = (pi, 2 pi / 3, pi / 4) per band, which is RH's
  formula (their eq. 13 with c1..c5 = `RH_CONSTANTS`). SH shading is the Lambertian response
  rgb = albedo * E(n) / pi, so a constant environment of radiance R (L00 = R sqrt(4 pi)) gives
  albedo * R. `DirectionalLight.to_sh` projects a light onto the 9 coefficients.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

SUN = (-0.3, -1.0, -0.5)  # direction of travel, as in apps/make_dataset.py and ../shared/data/spot
# Real SH normalisation constants and the clamped-cosine convolution factors A_l per coefficient.
_Y0 = 0.5 * math.sqrt(1.0 / math.pi)
_Y1 = math.sqrt(3.0 / (4.0 * math.pi))
_Y2 = 0.5 * math.sqrt(15.0 / math.pi)
_Y20 = 0.25 * math.sqrt(5.0 / math.pi)
_Y22 = 0.25 * math.sqrt(15.0 / math.pi)
SH_BAND_FACTORS = (math.pi,) + (2.0 * math.pi / 3.0,) * 3 + (math.pi / 4.0,) * 5
# Ramamoorthi & Hanrahan's c1..c5, exact (the paper prints 0.429043, 0.511664, 0.743125, 0.886227,
# 0.247708; the exact c2 is 0.5116634).
RH_CONSTANTS = (
    math.pi / 4.0 * _Y22,
    2.0 * math.pi / 3.0 * _Y1 / 2.0,
    math.pi / 4.0 * _Y20 * 3.0,
    math.pi * _Y0,
    math.pi / 4.0 * _Y20,
)
_EPS = 1e-30  # squared length at or below which a vector has no direction (normalised to 0)


# ------------------------------------------------------------------------------------- parameters


@dataclass
class DirectionalLight:
    """A directional light plus ambient light (defaults: the built-in datasets' sun).

    direction: `[3]` or `[B, 3]` direction of travel in world coordinates (any non-zero length).
    color: float, `[3]` or `[B, 3]` intensity of the directional light.
    ambient: float, `[3]` or `[B, 3]` ambient intensity.
    """

    direction: Any = SUN
    color: Any = 0.65
    ambient: Any = 0.35

    def to_sh(self, dtype=torch.float32, device=None) -> torch.Tensor:
        """The light's SH coefficients `[B|1, 9, 3]` (radiance): the directional part as
        pi * color * Y_k(l) (its irradiance is pi * color * max(n . l, 0) up to the band-2
        truncation, at most 3/32 of pi * color off, at n . l = 0) and the ambient as a constant
        radiance (exact), so that SH shading approximates `lambert` with this light."""
        like = torch.zeros((), dtype=dtype, device=device)
        d = _light_direction(_vec("direction", self.direction, like))
        l_dir = -_normalize(d.reshape(-1, 3))  # [B|1, 3] towards the light
        l_dir, col, amb = torch.broadcast_tensors(l_dir, _rows("color", self.color, like),
                                                  _rows("ambient", self.ambient, like))
        coeffs = math.pi * sh_basis(l_dir)[:, :, None] * col[:, None, :]  # [B, 9, 3]
        const = torch.zeros(9, 1, dtype=dtype, device=like.device)
        const[0, 0] = 1.0 / _Y0  # constant radiance R -> L00 = R sqrt(4 pi)
        return coeffs + const * amb[:, None, :]


@dataclass
class Material:
    """Specular part of Phong / Blinn-Phong shading (the diffuse colour is the albedo).

    specular: float, `[3]` or `[B, 3]` specular colour. shininess: float or `[B]` exponent.
    """

    specular: Any = 0.25
    shininess: Any = 32.0


def _vec(name: str, x, like: torch.Tensor) -> torch.Tensor:
    """A float, `[3]` or `[B, 3]` parameter as a tensor of like's dtype and device (differentiable)."""
    t = torch.as_tensor(x, dtype=like.dtype, device=like.device)
    if t.dim() > 2 or (t.dim() >= 1 and t.shape[-1] not in (1, 3)):
        raise ValueError(f"{name}: expected a float, [3] or [B, 3], got shape {list(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"light {name}: expected finite values, got {int((~torch.isfinite(t)).sum())} NaN/inf")
    return t


def _light_direction(d: torch.Tensor) -> torch.Tensor:
    """Check a light's direction of travel `[3]` / `[B, 3]` (shape, non-zero length); return it."""
    if d.dim() < 1 or d.shape[-1] != 3:
        raise ValueError(f"direction: expected [3] or [B, 3], got shape {list(d.shape)}")
    if ((d * d).sum(-1) <= _EPS).any():  # would light nothing (normalised to 0) without a word
        raise ValueError(f"light direction: expected a non-zero vector, got {d.tolist()}")
    return d


def _rows(name: str, x, like: torch.Tensor) -> torch.Tensor:
    """A float, `[3]` or `[B, 3]` parameter as `[1 or B, 3]` rows."""
    t = _vec(name, x, like)
    return t.reshape(-1, t.shape[-1] if t.dim() else 1).expand(-1, 3)


def _per_image(name: str, x, like: torch.Tensor) -> torch.Tensor:
    """Parameter broadcastable against per-pixel tensors `like [B, ..., 3]`: `[B, 3]` -> `[B, 1.., 3]`."""
    t = _vec(name, x, like)
    if t.dim() == 2:
        if t.shape[0] not in (1, like.shape[0]):
            raise ValueError(f"{name}: expected a batch of 1 or {like.shape[0]}, got {t.shape[0]}")
        t = t.reshape(t.shape[0], *([1] * (like.dim() - 2)), t.shape[-1])
    return t


def _towards_light(light: DirectionalLight, like: torch.Tensor) -> torch.Tensor:
    """Unit vector towards the light, broadcastable against `like [B, ..., 3]`."""
    d = _light_direction(_per_image("direction", light.direction, like))
    return -_normalize(d)


def _normalize(x: torch.Tensor) -> torch.Tensor:
    """x / |x| along the last axis; 0 (with zero gradient) where |x|^2 <= _EPS (no NaN anywhere)."""
    r2 = (x * x).sum(-1, keepdim=True)
    ok = r2 > _EPS
    return torch.where(ok, x * torch.rsqrt(torch.where(ok, r2, torch.ones_like(r2))), torch.zeros_like(x))


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum(-1, keepdim=True)


# ---------------------------------------------------------------------------------------- normals


def _batched_vertices(vertices: torch.Tensor) -> tuple[torch.Tensor, bool]:
    return (vertices[None], True) if vertices.dim() == 2 else (vertices, False)


def face_normals(
    vertices: torch.Tensor,  # [B, V, 3] or [V, 3]
    faces: torch.Tensor,  # [F, 3]
) -> torch.Tensor:
    """Unit normals `[B, F, 3]` (or `[F, 3]`) of counter-clockwise faces, (v1 - v0) x (v2 - v0)
    normalised; 0 for degenerate faces. Differentiable w.r.t. the vertices."""
    v, squeeze = _batched_vertices(vertices)
    idx = faces.reshape(-1).long()
    fv = v.index_select(1, idx).view(v.shape[0], faces.shape[0], 3, 3)
    n = _normalize(torch.cross(fv[:, :, 1] - fv[:, :, 0], fv[:, :, 2] - fv[:, :, 0], dim=-1))
    return n[0] if squeeze else n


def vertex_normals(
    vertices: torch.Tensor,  # [B, V, 3] or [V, 3]
    faces: torch.Tensor,  # [F, 3]
) -> torch.Tensor:
    """Smooth unit vertex normals `[B, V, 3]` (or `[V, 3]`): the area-weighted sum of the normals of
    the faces around each vertex (sum of the faces' cross products), normalised; 0 for vertices that
    no face uses. Differentiable w.r.t. the vertices."""
    v, squeeze = _batched_vertices(vertices)
    B, V = v.shape[:2]
    idx = faces.reshape(-1).long()
    fv = v.index_select(1, idx).view(B, faces.shape[0], 3, 3)
    cross = torch.cross(fv[:, :, 1] - fv[:, :, 0], fv[:, :, 2] - fv[:, :, 0], dim=-1)  # 2 * area * n
    acc = v.new_zeros(B, V, 3).index_add(1, idx, cross.repeat_interleave(3, dim=1))
    n = _normalize(acc)
    return n[0] if squeeze else n


# ---------------------------------------------------------------------------------------- shading


def lambert(
    albedo: torch.Tensor,  # [B, ..., 3]
    normals: torch.Tensor,  # [B, ..., 3]
    light: DirectionalLight | None = None,
) -> torch.Tensor:
    """Lambertian shading `[B, ..., 3]`: albedo * (ambient + color * max(n . l, 0)), n unit normals."""
    light = light or DirectionalLight()
    l_dir = _towards_light(light, normals)
    diffuse = _dot(normals, l_dir).clamp_min(0.0)
    return albedo * (_per_image("ambient", light.ambient, normals) + _per_image("color", light.color, normals) * diffuse)


def phong(
    albedo: torch.Tensor,  # [B, ..., 3]
    normals: torch.Tensor,  # [B, ..., 3]
    view_dirs: torch.Tensor,  # [B, ..., 3]
    light: DirectionalLight | None = None,
    material: Material | None = None,
    blinn: bool = False,
) -> torch.Tensor:
    """Phong (or Blinn-Phong with `blinn=True`) shading `[B, ..., 3]`: `lambert` plus
    specular * color * max(r . v, 0)^shininess (Blinn: max(n . h, 0)^shininess), zero where
    n . l <= 0. `view_dirs` are unit vectors from the surface point towards the camera."""
    light = light or DirectionalLight()
    material = material or Material()
    l_dir = _towards_light(light, normals)
    color = _per_image("color", light.color, normals)
    n_l = _dot(normals, l_dir)
    base = albedo * (_per_image("ambient", light.ambient, normals) + color * n_l.clamp_min(0.0))
    if blinn:
        x = _dot(normals, _normalize(l_dir + view_dirs))
    else:
        x = _dot(2.0 * n_l * normals - l_dir, view_dirs)
    s = torch.as_tensor(material.shininess, dtype=normals.dtype, device=normals.device)
    if s.dim() > 1:
        raise ValueError(f"shininess: expected a float or [B], got shape {list(s.shape)}")
    if s.dim() == 1:
        s = s.reshape(-1, *([1] * (normals.dim() - 1)))
    on = (x > 0) & (n_l > 0)
    # pow of a safe base: x ** s at x = 0 would give NaN gradients w.r.t. s (log 0)
    spec = torch.where(on, x.clamp_min(1e-30) ** s, torch.zeros_like(x))
    return base + _per_image("specular", material.specular, normals) * color * spec


def sh_basis(dirs: torch.Tensor) -> torch.Tensor:  # [..., 3] -> [..., 9]
    """The 9 real SH basis functions (bands 0-2) at unit directions `[..., 3]` -> `[..., 9]`."""
    x, y, z = dirs.unbind(-1)
    return torch.stack([
        torch.full_like(x, _Y0),
        _Y1 * y, _Y1 * z, _Y1 * x,
        _Y2 * x * y, _Y2 * y * z, _Y20 * (3.0 * z * z - 1.0), _Y2 * x * z, _Y22 * (x * x - y * y),
    ], -1)  # fmt: skip


def _check_coeffs(coeffs: torch.Tensor, batch: int) -> torch.Tensor:
    if not isinstance(coeffs, torch.Tensor):
        raise TypeError(f"coeffs: expected a torch.Tensor, got {type(coeffs).__name__}")
    c = coeffs[None] if coeffs.dim() == 2 else coeffs
    if c.dim() != 3 or c.shape[1] != 9 or c.shape[0] not in (1, batch):
        raise ValueError(f"coeffs: expected shape [{batch} or 1, 9, C] or [9, C], got {list(coeffs.shape)}")
    return c


def sh_irradiance(
    normals: torch.Tensor,  # [B, ..., 3]
    coeffs: torch.Tensor,  # [B|1, 9, C] or [9, C]
) -> torch.Tensor:
    """Irradiance `[B, ..., C]` at unit normals from 9 SH radiance coefficients per channel
    (Ramamoorthi-Hanrahan): E(n) = sum_k A_l(k) L_k Y_k(n)."""
    c = _check_coeffs(coeffs, normals.shape[0]).to(normals.dtype)
    a = torch.tensor(SH_BAND_FACTORS, dtype=normals.dtype, device=normals.device)
    weighted = c * a[None, :, None]  # [B|1, 9, C]
    y = sh_basis(normals)  # [B, ..., 9]
    flat = y.reshape(y.shape[0], -1, 9)
    out = flat @ weighted if weighted.shape[0] == y.shape[0] else flat @ weighted.expand(y.shape[0], -1, -1)
    return out.reshape(*y.shape[:-1], c.shape[-1])


def sh_shading(
    albedo: torch.Tensor,  # [B, ..., 3]
    normals: torch.Tensor,  # [B, ..., 3]
    coeffs: torch.Tensor,  # [B|1, 9, 3] or [9, 3]
) -> torch.Tensor:
    """Lambertian surface under an SH environment: albedo * E(n) / pi, `[B, ..., 3]`."""
    return albedo * sh_irradiance(normals, coeffs) / math.pi
