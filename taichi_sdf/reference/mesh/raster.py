"""Torch twins of `taichi_sdf.mesh.raster` (`soft_rasterize`, `soft_rasterize_screen`, `hard_rasterize`,
`hard_rasterize_screen`): every pixel against every face, vectorised over (pixel, face) pairs,
differentiable by autograd. Same signatures, same rules (validity, culling thresholds, tie-breaks),
so values and gradients agree with the Taichi kernels to rounding.

Pixels are processed in chunks of about `CHUNK_PAIRS` (pixel, face) pairs; with gradients on, each
chunk is checkpointed (recomputed in the backward pass) to bound memory.

A leaf: torch and the `Camera` class only. The projection, the settings' defaults and the
degeneracy thresholds are restated here from the documented conventions, so agreement with the
kernels also checks the implementation's shared torch code. The twin does not validate its inputs
(the op does).
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import NamedTuple

import torch
from torch.utils.checkpoint import checkpoint

from taichi_sdf.cameras.camera import Camera

CHUNK_PAIRS = 2**20
BIG = 2.0**100
# A face is degenerate when |doubled screen area| <= AREA_EPS + AREA_REL * max(|coordinate|, 1) *
# longest edge (pixels), and SoftRas floors the sum of clipped barycentrics at CLIP_EPS.
AREA_EPS = 1e-8
AREA_REL = {torch.float32: 32 * 2.0**-24, torch.float64: 32 * 2.0**-53}
CLIP_EPS = 1e-5
# `RasterSettings` defaults (SoftRas and Kaolin)
DEFAULTS = dict(sigma=1e-5, gamma=1e-4, dist_eps=1e-4, eps=1e-3, near=0.05, far=100.0, sigmainv=7000.0, boxlen=0.02,
                knum=30, background=0.0, tile_size=16)  # fmt: skip


class RasterOutput(NamedTuple):
    """Same fields as `taichi_sdf.mesh.raster.RasterOutput`."""

    rgb: torch.Tensor | None
    alpha: torch.Tensor
    depth: torch.Tensor
    face_id: torch.Tensor
    bary: torch.Tensor


def settings_namespace(settings=None, **overrides) -> SimpleNamespace:
    """The settings' fields (any object with `RasterSettings`' attributes, or the defaults), with
    keyword overrides."""
    base = dict(DEFAULTS) if settings is None else {k: getattr(settings, k) for k in DEFAULTS}
    return SimpleNamespace(**{**base, **overrides})


def project_vertices(vertices, cameras: Camera, near: float = DEFAULTS["near"]) -> torch.Tensor:
    """World vertices `[B, V, 3]` | `[V, 3]` -> `[B, V, 3]` (pixel x, pixel y, camera z): the camera
    point p = R x + t, pixel = (K p)_xy / p_z; a vertex at z <= near gets p_z := 1 in the division
    (a finite placeholder: every face using it is skipped)."""
    K = cameras.K.to(vertices.dtype)
    T = cameras.T_cam_world.to(vertices.dtype)
    if vertices.dim() == 2:
        vertices = vertices.expand(len(cameras), -1, -1)
    p = torch.einsum("bij,bvj->bvi", T[:, :3, :3], vertices) + T[:, None, :3, 3]
    z = p[..., 2]
    z_div = torch.where(z > near, z, torch.ones_like(z))
    kp = torch.einsum("bij,bvj->bvi", K, p)
    return torch.stack([kp[..., 0] / z_div, kp[..., 1] / z_div, z], -1)


def _cross(a, b):
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def _seg_dist2(p, a, b):
    """Squared distance from points p [P,1,2] to segments ab [1,F,2] -> [P,F]."""
    e = b - a
    l2 = (e * e).sum(-1)
    pos = l2 > 0
    t = torch.where(pos, ((p - a) * e).sum(-1) / torch.where(pos, l2, torch.ones_like(l2)), torch.zeros_like(l2))
    t = t.clamp(0.0, 1.0)
    r = p - (a + t[..., None] * e)
    return (r * r).sum(-1)


def _faces_geometry(fv, near):
    """Per-face quantities [B, F, ...]: corners xy, z, doubled area, validity, bbox."""
    xy, z = fv[..., :2], fv[..., 2]
    v0, v1, v2 = xy[..., 0, :], xy[..., 1, :], xy[..., 2, :]
    a2 = _cross(v1 - v0, v2 - v0)
    finite = (fv.abs() < BIG).flatten(-2).all(-1)
    mag = xy.abs().flatten(-2).amax(-1).clamp(min=1.0)
    l2 = torch.stack([((v1 - v0) ** 2).sum(-1), ((v2 - v1) ** 2).sum(-1), ((v0 - v2) ** 2).sum(-1)], -1).amax(-1)
    a_min = AREA_EPS + AREA_REL[fv.dtype] * mag * l2.sqrt()
    valid = finite & (z > near).all(-1) & (a2.abs() > a_min)
    return xy, z, a2, valid


def _chunk(p, xy, z, a2, valid, fc, bg, mode, s, s2, radius, thr):
    """Outputs for pixel centres p [P, 2] of one image: rgb [P,C] | None, alpha, depth, face_id, bary."""
    P = p.shape[0]
    p = p[:, None, :]
    v0, v1, v2 = xy[None, :, 0], xy[None, :, 1], xy[None, :, 2]
    one = torch.ones_like(a2)
    a2s = torch.where(valid, a2, one)
    zs = torch.where(valid[:, None], z, torch.ones_like(z))[None]  # [1, F, 3]
    e0 = _cross(v1 - p, v2 - p)
    e1 = _cross(v2 - p, v0 - p)
    e2 = _cross(v0 - p, v1 - p)
    w = torch.stack([e0, e1, e2], -1) / a2s[None, :, None]  # [P, F, 3]
    w = torch.where(valid[None, :, None], w, torch.full_like(w, 1.0 / 3.0))
    inside = (w >= 0).all(-1) & valid[None]
    d2 = torch.minimum(torch.minimum(_seg_dist2(p, v0, v1), _seg_dist2(p, v1, v2)), _seg_dist2(p, v2, v0))
    d2n = d2 * s2

    # z-buffer: the front-most covering face (first index on ties)
    q = w / zs
    zp = 1.0 / q.sum(-1)
    covered = inside.any(-1)
    front = torch.where(inside, zp, torch.full_like(zp, math.inf)).argmin(-1)  # [P]
    rows = torch.arange(P, device=p.device)
    depth = torch.where(covered, zp[rows, front], torch.zeros_like(zp[:, 0]))
    bary = torch.where(covered[:, None], (q / q.sum(-1, keepdim=True))[rows, front], torch.zeros_like(w[:, 0]))
    face_id = torch.where(covered, front, torch.full_like(front, -1)).to(torch.int32)

    rgb = None
    C = 0 if fc is None else fc.shape[-1]
    if mode == "softras":
        keep = valid[None] & (inside | (d2n < thr))
        x = torch.where(inside, d2n, -d2n) / s.sigma
        d = torch.sigmoid(x)
        alpha = 1.0 - torch.where(keep, torch.sigmoid(-x), torch.ones_like(x)).prod(-1)
        if C:
            u = w.clamp(0.0, 1.0)
            wc = u / u.sum(-1, keepdim=True).clamp(min=CLIP_EPS)
            qc = wc / zs
            zc = 1.0 / qc.sum(-1)
            bc = qc * zc[..., None]
            cv = keep & (zc <= s.far)
            zn = (s.far - zc) / (s.far - s.near)
            m = torch.where(cv, zn, torch.full_like(zn, -math.inf)).amax(-1).clamp(min=s.eps).detach()  # [P]
            zn_safe = torch.where(cv, zn, m[:, None])
            e = torch.where(cv, torch.exp((zn_safe - m[:, None]) / s.gamma), torch.zeros_like(zn))
            cj = (bc[..., None] * fc[None]).sum(-2)  # [P, F, C]
            ebg = torch.exp((s.eps - m) / s.gamma)  # [P]
            num = ((d * e)[..., None] * cj).sum(1) + ebg[:, None] * bg
            den = (d * e).sum(1) + ebg
            rgb = num / den[:, None]
    elif mode == "dibr":
        xs, ys = p[..., 0], p[..., 1]
        xmin, xmax = xy[None, :, :, 0].amin(-1) - radius, xy[None, :, :, 0].amax(-1) + radius
        ymin, ymax = xy[None, :, :, 1].amin(-1) - radius, xy[None, :, :, 1].amax(-1) + radius
        cand = valid[None] & (xs >= xmin) & (xs <= xmax) & (ys >= ymin) & (ys <= ymax)
        incl = cand & (torch.cumsum(cand.to(torch.int64), -1) <= s.knum)
        factor = 1.0 - torch.exp(-d2n * s.sigmainv)
        soft = 1.0 - torch.where(incl, factor, torch.ones_like(factor)).prod(-1)
        alpha = torch.where(covered, torch.ones_like(soft), soft)
        if C:
            interp = (bary[..., None] * fc[face_id.clamp(min=0).long()]).sum(-2)  # [P, C]
            rgb = torch.where(covered[:, None], interp, bg.expand(P, C))
    else:
        alpha = covered.to(p.dtype)
    return rgb, alpha, depth, face_id, bary


def _rasterize_screen(screen, faces, colors, width, height, mode, s: SimpleNamespace) -> RasterOutput:
    B = screen.shape[0]
    F = faces.shape[0]
    dev, dtype = screen.device, screen.dtype
    C = 0 if colors is None else colors.shape[-1]
    bgv = s.background
    bg = torch.tensor([float(bgv)] * max(C, 1) if isinstance(bgv, (int, float)) else [float(v) for v in bgv],
                      dtype=dtype, device=dev)[: max(C, 1)]  # fmt: skip
    if F == 0:
        zero = screen.sum() * 0.0
        rgb = None if not C else bg.expand(B, height, width, C) + colors.sum() * 0.0 + zero
        alpha = screen.new_zeros(B, height, width) + zero
        return RasterOutput(rgb, alpha, alpha.clone(), torch.full((B, height, width), -1, dtype=torch.int32,
                            device=dev), screen.new_zeros(B, height, width, 3))  # fmt: skip
    ndc_per_px = 2.0 / min(width, height)
    s2 = ndc_per_px**2
    radius = s.boxlen / ndc_per_px
    thr = s.sigma * math.log(1.0 / s.dist_eps - 1.0)
    idx = faces.reshape(-1).long()
    fv = screen.index_select(1, idx).view(B, F, 3, 3)
    fcs = None if colors is None else colors.expand(B, -1, -1).index_select(1, idx).view(B, F, 3, C)
    xy, z, a2, valid = _faces_geometry(fv, s.near)
    jj, ii = torch.meshgrid(torch.arange(height, device=dev), torch.arange(width, device=dev), indexing="ij")
    pix = torch.stack([ii, jj], -1).reshape(-1, 2).to(dtype) + 0.5  # [H*W, 2] (x, y)
    step = max(1, CHUNK_PAIRS // max(F, 1))
    grad_on = torch.is_grad_enabled() and (screen.requires_grad or (colors is not None and colors.requires_grad))
    outs = []
    for b in range(B):
        parts = []
        for start in range(0, pix.shape[0], step):
            args = (pix[start : start + step], xy[b], z[b], a2[b], valid[b], None if fcs is None else fcs[b], bg)
            fn = lambda *a: _chunk(*a, mode, s, s2, radius, thr)  # noqa: E731
            parts.append(checkpoint(fn, *args, use_reentrant=False) if grad_on else fn(*args))
        outs.append([None if parts[0][k] is None else torch.cat([pp[k] for pp in parts]) for k in range(5)])
    rgb = None if not C else torch.stack([o[0] for o in outs]).reshape(B, height, width, C)
    alpha = torch.stack([o[1] for o in outs]).reshape(B, height, width)
    depth = torch.stack([o[2] for o in outs]).reshape(B, height, width)
    face_id = torch.stack([o[3] for o in outs]).reshape(B, height, width)
    bary = torch.stack([o[4] for o in outs]).reshape(B, height, width, 3)
    if mode == "hard":
        alpha, depth = alpha.detach(), depth.detach()
    return RasterOutput(rgb, alpha, depth, face_id, bary.detach())


def _colors_batched(colors, B):
    if colors is None:
        return None
    return colors[None].expand(B, -1, -1) if colors.dim() == 2 else colors


def _settings(settings, overrides) -> SimpleNamespace:
    return settings_namespace(settings, **overrides)


def soft_rasterize(vertices, faces, cameras: Camera, colors=None, mode="softras", settings=None, **overrides):
    """Twin of `taichi_sdf.mesh.raster.soft_rasterize`."""
    s = _settings(settings, overrides)
    screen = project_vertices(vertices, cameras, s.near)
    return _rasterize_screen(screen, faces, _colors_batched(colors, len(cameras)), cameras.width, cameras.height,
                             mode, s)  # fmt: skip


def soft_rasterize_screen(screen_vertices, faces, width, height, colors=None, mode="softras", settings=None,
                          **overrides):  # fmt: skip
    """Twin of `taichi_sdf.mesh.raster.soft_rasterize_screen`."""
    s = _settings(settings, overrides)
    return _rasterize_screen(screen_vertices, faces, _colors_batched(colors, screen_vertices.shape[0]), width,
                             height, mode, s)  # fmt: skip


def hard_rasterize(vertices, faces, cameras: Camera, near=DEFAULTS["near"], tile_size=DEFAULTS["tile_size"]):
    """Twin of `taichi_sdf.mesh.raster.hard_rasterize`."""
    with torch.no_grad():
        screen = project_vertices(vertices, cameras, near)
        return _rasterize_screen(screen, faces, None, cameras.width, cameras.height, "hard",
                                 settings_namespace(near=near))  # fmt: skip


def hard_rasterize_screen(screen_vertices, faces, width, height, near=DEFAULTS["near"],
                          tile_size=DEFAULTS["tile_size"]):  # fmt: skip
    """Twin of `taichi_sdf.mesh.raster.hard_rasterize_screen`."""
    with torch.no_grad():
        return _rasterize_screen(screen_vertices, faces, None, width, height, "hard", settings_namespace(near=near))
