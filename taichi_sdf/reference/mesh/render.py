"""Torch twin of `taichi_sdf.mesh.render.render_mesh`: the deferred-shading pipeline restated from its
documentation on the torch twins of the rasterizer and of the texture sampler.

A leaf: torch, the `Camera` class and the sibling twins only. Unwelding, the attribute layout, the
division by the coverage weight, the view directions, the normals and the Lambert / Phong / SH
shading are written out again here, so agreement with `render_mesh` also checks the
implementation's own torch composition (not only its kernels). Lights and materials are read by
attribute (`direction`, `color`, `ambient`; `specular`, `shininess`; `to_sh` is not used), with
the documented defaults when None. No input validation (the op does it).

    pipeline per image: corners [w = 1, albedo source (rgb | uv, 0 | 1), normal] of every face
    -> rasterize as 7 channels (background 0) -> attr / w -> texture lookup -> shade
    -> rgb = w * shaded + (1 - w) * background
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from taichi_sdf.reference.mesh import raster as _raster
from taichi_sdf.reference.mesh import texture as _texture

SUN = (-0.3, -1.0, -0.5)  # default light: direction of travel, colour 0.65, ambient 0.35
LIGHT_DEFAULTS = dict(direction=SUN, color=0.65, ambient=0.35)
MATERIAL_DEFAULTS = dict(specular=0.25, shininess=32.0)
W_EPS = 1e-12  # coverage weights at or below this show the background only


class MeshRender(NamedTuple):
    """Same fields as `taichi_sdf.mesh.render.MeshRender`."""

    rgb: torch.Tensor
    alpha: torch.Tensor
    depth: torch.Tensor
    normals: torch.Tensor
    face_id: torch.Tensor


# ----------------------------------------------------------------------------------------- helpers


def _unit(x: torch.Tensor) -> torch.Tensor:
    """x / |x| along the last axis, 0 (zero gradient) where |x|^2 <= 1e-30."""
    r2 = (x * x).sum(-1, keepdim=True)
    ok = r2 > 1e-30
    return torch.where(ok, x / torch.where(ok, r2, torch.ones_like(r2)).sqrt(), torch.zeros_like(x))


def _dot(a, b):
    return (a * b).sum(-1, keepdim=True)


def _param(x, like: torch.Tensor) -> torch.Tensor:
    """A float, `[3]` or `[B, 3]` light / material parameter, broadcastable against `like [B, H, W, 3]`."""
    t = torch.as_tensor(x, dtype=like.dtype, device=like.device)
    if t.dim() == 2:
        t = t.reshape(t.shape[0], *([1] * (like.dim() - 2)), t.shape[-1])
    return t


def _get(obj, defaults: dict) -> dict:
    return dict(defaults) if obj is None else {k: getattr(obj, k) for k in defaults}


def _face_cross(v, faces):
    """`[B, F, 3]` (v1 - v0) x (v2 - v0) of every face: twice the area times the unit normal."""
    f = faces.long()
    v0, v1, v2 = v[:, f[:, 0]], v[:, f[:, 1]], v[:, f[:, 2]]
    return torch.cross(v1 - v0, v2 - v0, dim=-1)


def _vertex_normals(v, faces):
    """Area-weighted smooth normals `[B, V, 3]`: each vertex sums the cross products of its faces."""
    cross = _face_cross(v, faces)
    acc = torch.zeros_like(v)
    for k in range(3):
        acc = acc.index_add(1, faces[:, k].long(), cross)
    return _unit(acc)


def _view_dirs(cameras, dtype) -> torch.Tensor:
    """`[B, H, W, 3]` unit world directions from the surface towards the camera through each pixel
    centre: -normalize(R^T K^-1 (x + 0.5, y + 0.5, 1))."""
    K, R = cameras.K.to(dtype), cameras.T_cam_world[:, :3, :3].to(dtype)
    ys, xs = torch.meshgrid(torch.arange(cameras.height, dtype=dtype, device=K.device),
                            torch.arange(cameras.width, dtype=dtype, device=K.device), indexing="ij")  # fmt: skip
    pix = torch.stack([xs + 0.5, ys + 0.5, torch.ones_like(xs)], -1)  # [H, W, 3]
    cam_dirs = torch.einsum("bij,hwj->bhwi", torch.linalg.inv(K), pix)
    return -_unit(torch.einsum("bji,bhwj->bhwi", R, cam_dirs))


# ----------------------------------------------------------------------------------------- shading


def _lambert(albedo, n, light):
    to_light = -_unit(_param(light["direction"], n))
    return albedo * (_param(light["ambient"], n) + _param(light["color"], n) * _dot(n, to_light).clamp_min(0.0))


def _phong(albedo, n, view, light, material, blinn: bool):
    to_light = -_unit(_param(light["direction"], n))
    n_l = _dot(n, to_light)
    if blinn:
        x = _dot(n, _unit(to_light + view))
    else:
        x = _dot(2.0 * n_l * n - to_light, view)  # mirror direction . view
    s = torch.as_tensor(material["shininess"], dtype=n.dtype, device=n.device)
    if s.dim() == 1:
        s = s.reshape(-1, *([1] * (n.dim() - 1)))
    lit = (x > 0) & (n_l > 0)
    spec = torch.where(lit, x.clamp_min(1e-30) ** s, torch.zeros_like(x))
    return _lambert(albedo, n, light) + _param(material["specular"], n) * _param(light["color"], n) * spec


def _sh_basis(d):
    """Real SH, bands 0-2, order [Y00, Y1-1 (y), Y10 (z), Y11 (x), Y2-2, Y2-1, Y20, Y21, Y22]."""
    x, y, z = d.unbind(-1)
    c0, c1 = 0.5 / math.sqrt(math.pi), math.sqrt(3.0 / (4.0 * math.pi))
    c2, c20, c22 = 0.5 * math.sqrt(15.0 / math.pi), 0.25 * math.sqrt(5.0 / math.pi), 0.25 * math.sqrt(15.0 / math.pi)
    return torch.stack([torch.full_like(x, c0), c1 * y, c1 * z, c1 * x, c2 * x * y, c2 * y * z,
                        c20 * (3.0 * z * z - 1.0), c2 * x * z, c22 * (x * x - y * y)], -1)  # fmt: skip


def _sh_coeffs(light, like) -> torch.Tensor:
    """`[B|1, 9, 3]` radiance coefficients: given, or a directional light + ambient projected (the
    directional part pi * color * Y_k(l), the ambient a constant radiance: L00 = ambient sqrt(4 pi))."""
    if isinstance(light, torch.Tensor):
        return light[None] if light.dim() == 2 else light
    p = _get(light, LIGHT_DEFAULTS)
    to_light = -_unit(torch.as_tensor(p["direction"], dtype=like.dtype, device=like.device).reshape(-1, 3))
    col, amb = (torch.as_tensor(p[k], dtype=like.dtype, device=like.device) for k in ("color", "ambient"))
    col, amb = (x.reshape(-1, 1) if x.numel() == 1 else x.reshape(-1, 3) for x in (col, amb))  # [1|B, 1|3]
    to_light, col, amb = torch.broadcast_tensors(to_light, col, amb)  # [B|1, 3]
    coeffs = math.pi * _sh_basis(to_light)[:, :, None] * col[:, None, :]
    const = torch.zeros(9, 1, dtype=like.dtype, device=like.device)
    const[0, 0] = math.sqrt(4.0 * math.pi)
    return coeffs + const * amb[:, None, :]


def _sh_shading(albedo, n, coeffs):
    """albedo * E(n) / pi with E(n) = sum_k A_l(k) L_k Y_k(n), A = (pi, 2 pi / 3, pi / 4) per band."""
    a = torch.tensor([math.pi] + [2.0 * math.pi / 3.0] * 3 + [math.pi / 4.0] * 5, dtype=n.dtype, device=n.device)
    c = (coeffs.to(n.dtype) * a[None, :, None]).expand(n.shape[0], -1, -1)  # [B, 9, 3]
    irradiance = torch.einsum("b...k,bkc->b...c", _sh_basis(n), c)
    return albedo * irradiance / math.pi


# ------------------------------------------------------------------------------------------ public


def render_mesh(vertices, faces, cameras, *, colors=None, texture=None, normals="smooth", shading="lambert",
                light=None, material=None, mode="softras", settings=None, address="clamp",
                **overrides) -> MeshRender:  # fmt: skip
    """Twin of `taichi_sdf.mesh.render.render_mesh` (same arguments and outputs)."""
    s = _raster.settings_namespace(settings, **overrides)
    B = len(cameras)
    dtype, dev = vertices.dtype, vertices.device
    bgv = s.background
    bg = torch.as_tensor([float(bgv)] * 3 if isinstance(bgv, (int, float)) else [float(x) for x in bgv],
                         dtype=dtype, device=dev)  # fmt: skip
    v = vertices[None] if vertices.dim() == 2 else vertices  # [1|B, V, 3]
    F = faces.shape[0]
    corner = faces.reshape(-1).long()  # corner k of face f is attribute row 3 f + k

    # 1. unwelded corner attributes [B, 3F, 7]: w, albedo source, normal
    if isinstance(normals, torch.Tensor):
        nrm = (normals[None] if normals.dim() == 2 else normals)[:, corner]
    elif normals == "smooth":
        nrm = _vertex_normals(v, faces)[:, corner]
    else:
        nrm = _unit(_face_cross(v, faces)).repeat_interleave(3, dim=1)
    if texture is not None:
        tex, uv, uv_faces = texture
        uvb = uv[None] if uv.dim() == 2 else uv
        src = uvb[:, uv_faces.reshape(-1).long()]
        src = torch.cat([src, torch.zeros_like(src[..., :1])], -1)
    elif colors is not None:
        src = (colors[None] if colors.dim() == 2 else colors)[:, corner]
    else:
        src = torch.ones_like(v[:, corner])
    pos = v[:, corner]
    attr = torch.cat([t.expand(B, 3 * F, -1) for t in (torch.ones_like(pos[..., :1]), src, nrm)], -1)
    corner_faces = torch.arange(3 * F, dtype=faces.dtype, device=faces.device).reshape(F, 3)

    # 2. rasterize the attributes
    if mode == "hard":
        out = _raster.hard_rasterize(vertices, faces, cameras, near=s.near)
        covered = out.face_id >= 0
        tri = corner_faces.long()[out.face_id.long().clamp(min=0)]  # [B, H, W, 3] attribute rows
        rows = attr[torch.arange(B, device=dev)[:, None, None, None], tri]  # [B, H, W, 3, 7]
        pix = (out.bary.to(dtype)[..., None] * rows).sum(-2) * covered[..., None]
    else:
        s_attr = _raster.settings_namespace(s, background=0.0)
        out = _raster.soft_rasterize(pos.expand(B, -1, -1), corner_faces, cameras, attr, mode=mode, settings=s_attr)
        pix = out.rgb

    # 3. per pixel: divide by w, look up the albedo, shade, composite
    w = pix[..., :1]
    has = w > W_EPS
    inv_w = torch.where(has, 1.0 / torch.where(has, w, torch.ones_like(w)), torch.zeros_like(w))
    n = _unit(pix[..., 4:7])
    if texture is not None:
        albedo = _texture.sample_texture(tex, pix[..., 1:3] * inv_w, has[..., 0], address)
    else:
        albedo = pix[..., 1:4] * inv_w
    if shading == "none":
        shaded = albedo
    elif shading == "lambert":
        shaded = _lambert(albedo, n, _get(light, LIGHT_DEFAULTS))
    elif shading == "sh":
        shaded = _sh_shading(albedo, n, _sh_coeffs(light, vertices))
    else:
        shaded = _phong(albedo, n, _view_dirs(cameras, dtype), _get(light, LIGHT_DEFAULTS),
                        _get(material, MATERIAL_DEFAULTS), blinn=shading == "blinn")  # fmt: skip
    rgb = w * shaded + (1.0 - w) * bg
    return MeshRender(rgb, out.alpha, out.depth, n, out.face_id)
