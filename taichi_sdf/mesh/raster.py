"""Soft rasterization of triangle meshes: SoftRas, DIB-R and hard rasterization on Taichi kernels.

Three modes share one tiled pipeline (see `kernels/mesh/soft_raster.py`):

- ``"softras"`` (Liu et al. 2019): per face j and pixel p a coverage probability
  ``D_j = sigmoid(sign * d^2 / sigma)`` with d the distance from the pixel centre to the triangle
  (sign +1 inside, -1 outside); silhouette ``alpha = 1 - prod_j (1 - D_j)``; colour
  ``rgb = (sum_j D_j e_j C_j + e_bg * background) / (sum_j D_j e_j + e_bg)`` with
  ``e_j = exp(z_j / gamma)``, ``z_j = (far - zp_j) / (far - near)`` the normalised inverse depth of
  face j at p and ``e_bg = exp(eps / gamma)``. ``C_j`` and ``zp_j`` use perspective-correct
  barycentrics of the clipped screen barycentrics (clamped to [0, 1] and renormalised), as SoftRas.
  Faces with d^2 >= sigma * ln(1 / dist_eps - 1) outside the triangle are skipped (D < dist_eps).
- ``"dibr"`` (Chen et al. 2019, Kaolin defaults): covered pixels take the front face's
  perspective-correct barycentric interpolation of the vertex attributes (alpha 1, gradients through
  the barycentrics to the vertex positions and to the attributes); uncovered pixels get the soft
  silhouette ``alpha = 1 - prod_j (1 - exp(-d_j^2 / delta))``, ``delta = 1 / sigmainv``, over the
  first ``knum`` faces (in face order) whose bounding box grown by ``boxlen`` holds the pixel, and
  the background colour.
- ``"hard"`` (`hard_rasterize`): face id, barycentrics and depth of the front face, no gradient.

Units: distances d are measured in NDC, where the *shorter* image side spans [-1, 1] (one pixel is
2 / min(W, H)); for square images this is exactly SoftRas' and Kaolin's NDC, so ``sigma`` (NDC^2),
``sigmainv`` (1 / NDC^2) and ``boxlen`` (NDC) mean what they mean there.

Outputs of every mode also carry the z-buffer: ``depth`` is the camera z of the front-most face
covering the pixel (0 on background), differentiable in softras/dibr through the perspective-correct
barycentrics; ``face_id`` its index (-1 on background); ``bary`` its perspective-correct
barycentrics (no gradient).

Faces with a vertex at camera z <= near, zero-area faces (in screen space) and non-finite faces are
skipped (they draw nothing and get zero gradients); an empty mesh renders the background.

Gradients: hand-written backward kernels give gradients w.r.t. the screen-space vertices (pixel x,
y and camera z) and the per-vertex attributes; projection, the per-face gather and everything
upstream are torch, so gradients reach world vertices, K and T_cam_world by autograd.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from taichi_sdf.cameras.camera import Camera
from taichi_sdf.core import runtime
from taichi_sdf.core.bridge import KernelOp
from taichi_sdf.core.dtypes import dtype_name
from taichi_sdf.core.validation import FLOAT_DTYPES, check_finite, check_tensor
from taichi_sdf.kernels.mesh.soft_raster import PW, RECORD, RasterConfig, binning_kernels, raster_kernels

MODES = ("softras", "dibr", "hard")
# Tile lists are int32 (CSR); refuse more entries than this rather than overflow or exhaust memory.
MAX_TILE_ENTRIES = 2**25  # ~2.7 GB of float32 tile records (80 bytes per entry)
BIN_CHUNKS = 16  # face chunks of the parallel stable binning (threads of `count` / `fill`)
# A face is degenerate (skipped) when |doubled signed screen area| (pixels^2) is at most
# AREA_EPS + AREA_REL[dtype] * max(|coordinate|, 1) * longest edge: zero within rounding noise.
AREA_EPS = 1e-8
AREA_REL = {torch.float32: 32 * 2.0**-24, torch.float64: 32 * 2.0**-53}
CLIP_EPS = 1e-5  # SoftRas' floor on the sum of clipped barycentrics


class RasterOutput(NamedTuple):
    """Per-pixel outputs of `soft_rasterize` / `hard_rasterize` (B images of H x W pixels).

    rgb: `[B, H, W, C]` aggregated attributes (None when no colours were given).
    alpha: `[B, H, W]` soft silhouette (hard: 1 where covered).
    depth: `[B, H, W]` camera z of the front-most covering face, 0 on background.
    face_id: `[B, H, W]` int32 index of that face, -1 on background.
    bary: `[B, H, W, 3]` its perspective-correct barycentrics (0 on background; no gradient).
    """

    rgb: torch.Tensor | None
    alpha: torch.Tensor
    depth: torch.Tensor
    face_id: torch.Tensor
    bary: torch.Tensor


@dataclass(frozen=True)
class RasterSettings:
    """Settings shared by the public functions and `SoftRasterizer` (defaults: SoftRas and Kaolin).

    sigma: SoftRas sharpness in NDC^2 (1e-5). gamma: SoftRas depth-softmax temperature (1e-4).
    dist_eps: SoftRas skips faces whose D would be below this (1e-4). eps: background's normalised
    inverse depth in the softmax (1e-3). near, far: camera z clip (faces with a vertex at z <= near
    are skipped) and the depth normalisation of the softmax. sigmainv, boxlen, knum: DIB-R soft mask
    (7000 / NDC^2, 0.02 NDC, 30 faces). background: colour of uncovered pixels, a float or C floats.
    tile_size: screen tile side in pixels for face binning (a multiple of 4, the side of the pixel
    packets the forward kernels shade as SIMD vectors).
    """

    sigma: float = 1e-5
    gamma: float = 1e-4
    dist_eps: float = 1e-4
    eps: float = 1e-3
    near: float = 0.05
    far: float = 100.0
    sigmainv: float = 7000.0
    boxlen: float = 0.02
    knum: int = 30
    background: float | Sequence[float] = 0.0
    tile_size: int = 16

    @classmethod
    def resolve(cls, settings: RasterSettings | None, overrides: dict) -> RasterSettings:
        """`settings` (default: `RasterSettings()`) with single fields replaced by `overrides`
        (the keyword arguments of the public functions); not validated."""
        base = settings or cls()
        return base if not overrides else dataclasses.replace(base, **overrides)

    def background_color(self, channels: int, like: torch.Tensor) -> torch.Tensor:
        """`background` as a `[max(channels, 1)]` tensor of like's dtype and device; raises ValueError
        when it gives neither one float nor `channels` floats."""
        bg = self.background
        vals = [float(bg)] * max(channels, 1) if isinstance(bg, (int, float)) else [float(v) for v in bg]
        if channels and len(vals) != channels:
            raise ValueError(
                f"background: expected a float or {channels} floats (one per colour channel), got {bg!r}"
            )
        if not channels:
            vals = vals[:1] or [0.0]
        return torch.tensor(vals, dtype=like.dtype, device=like.device)

    def validate(self) -> None:
        for name in ("sigma", "gamma", "sigmainv", "boxlen"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name}: expected a positive finite float, got {v!r}")
        if not (0 < self.dist_eps < 0.5):
            raise ValueError(f"dist_eps: expected a float in (0, 0.5), got {self.dist_eps!r}")
        if not (0 <= self.eps < 1):
            raise ValueError(f"eps: expected a float in [0, 1), got {self.eps!r}")
        if not (math.isfinite(self.near) and self.near >= 0):
            raise ValueError(f"near: expected a finite float >= 0, got {self.near!r}")
        if not (math.isfinite(self.far) and self.far > self.near):
            raise ValueError(f"far: expected a finite float > near = {self.near}, got {self.far!r}")
        if not (isinstance(self.knum, int) and self.knum >= 1):
            raise ValueError(f"knum: expected an int >= 1, got {self.knum!r}")
        if not (isinstance(self.tile_size, int) and PW <= self.tile_size <= 1024 and self.tile_size % PW == 0):
            raise ValueError(f"tile_size: expected a multiple of {PW} in [{PW}, 1024], got {self.tile_size!r}")


# ---------------------------------------------------------------------------------------------- ops


@dataclass(frozen=True, eq=False)
class _Launch:
    """Per-call state handed to the forward/backward callables as the op's one `scalars` entry: the
    kernels' scalar arguments and the binning buffers (no gradient; the backward reuses them)."""

    tile: int
    ntx: int
    nty: int
    s2: float
    sigma: float
    thr: float
    gamma: float
    far: float
    near: float
    eps: float
    inv_delta: float
    knum: int
    bins: Bins
    background: torch.Tensor


def _softras_op(cfg: RasterConfig) -> KernelOp:
    fwd_kernel, bwd_kernel = raster_kernels(cfg)

    def allocate(fv, fc, height, width):
        B = fv.shape[0]
        C = cfg.channels
        new = fv.new_empty
        img_c = (B, height, width, C) if C else (1, 1, 1, 1)
        aux = (B, height, width) if C else (1, 1, 1)
        return (
            new(img_c), new(B, height, width), new(B, height, width),
            torch.empty(B, height, width, dtype=torch.int32, device=fv.device),
            new(B, height, width, 3), new(aux), new(aux),
        )  # fmt: skip

    def forward(fv, fc, rgb, alpha, depth, face_id, bary, m, w, L: _Launch):
        fwd_kernel(
            fc, L.bins.offsets, L.bins.tile_faces, L.bins.tile_records.view(-1), L.background,
            *(t.view(-1) for t in (rgb, alpha, depth, face_id, bary, m, w)), *alpha.shape,
            L.tile, L.ntx, L.nty, L.s2, L.sigma, L.thr, L.gamma, L.far, L.near, L.eps, CLIP_EPS,
        )  # fmt: skip

    def backward(fv, fc, rgb, alpha, depth, face_id, bary, m, w,
                 grad_rgb, grad_alpha, grad_depth, grad_bary, grad_m, grad_w, grad_fv, grad_fc, L: _Launch):  # fmt: skip
        B, H, W = alpha.shape
        grad_a = grad_alpha * (1.0 - alpha)  # d alpha / d x_j = (1 - alpha) D_j
        cols = [grad_a, grad_depth]
        need = (grad_a != 0) | ((grad_depth != 0) & (face_id >= 0))
        if cfg.channels:
            cols += [m, 1.0 / w, (grad_rgb * rgb).sum(-1), *grad_rgb.unbind(-1)]
            need |= (grad_rgb != 0).any(-1)
        pix = torch.stack(cols, -1).contiguous()
        bwd_kernel(
            fc, L.bins.records.view(-1), L.bins.face_pixels, face_id.view(-1), pix.view(-1), _packet_flags(need),
            grad_fv, grad_fc, H, W, L.s2, L.sigma, L.thr, L.gamma, L.far, L.near, CLIP_EPS,
        )  # fmt: skip

    return KernelOp(
        name="soft_rasterize[softras]", forward=forward, backward=backward, allocate=allocate,
        input_names=("face_vertices", "face_colors"),
    )  # fmt: skip


def _dibr_op(cfg: RasterConfig) -> KernelOp:
    fwd_kernel, bwd_kernel = raster_kernels(cfg)

    def allocate(fv, fc, height, width):
        B = fv.shape[0]
        C = cfg.channels
        new = fv.new_empty
        img_c = (B, height, width, C) if C else (1, 1, 1, 1)
        ints = lambda: torch.empty(B, height, width, dtype=torch.int32, device=fv.device)  # noqa: E731
        return (
            new(img_c), new(B, height, width), new(B, height, width), ints(),
            new(B, height, width, 3), new(B, height, width), ints(), ints(),
        )  # fmt: skip

    def forward(fv, fc, rgb, alpha, depth, face_id, bary, prod, nzero, last, L: _Launch):
        fwd_kernel(
            fc, L.bins.offsets, L.bins.tile_faces, L.bins.tile_records.view(-1), L.background,
            *(t.view(-1) for t in (rgb, alpha, depth, face_id, bary, prod, nzero, last)), *alpha.shape,
            L.tile, L.ntx, L.nty, L.s2, L.inv_delta, L.knum,
        )  # fmt: skip

    def backward(fv, fc, rgb, alpha, depth, face_id, bary, prod, nzero, last,
                 grad_rgb, grad_alpha, grad_depth, grad_bary, grad_prod, grad_fv, grad_fc, L: _Launch):  # fmt: skip
        B, H, W = alpha.shape
        cols = [grad_alpha, grad_depth, prod]
        fg_grad = grad_depth != 0
        if cfg.channels:
            cols += list(grad_rgb.unbind(-1))
            fg_grad |= (grad_rgb != 0).any(-1)
        need = ((grad_alpha != 0) & (face_id < 0)) | ((face_id >= 0) & fg_grad)
        pix = torch.stack(cols, -1).contiguous()
        bwd_kernel(
            fc, L.bins.records.view(-1), L.bins.face_pixels, face_id.view(-1), nzero.view(-1), last.view(-1),
            pix.view(-1), _packet_flags(need), grad_fv, grad_fc, H, W, L.s2, L.inv_delta,
        )  # fmt: skip

    return KernelOp(
        name="soft_rasterize[dibr]", forward=forward, backward=backward, allocate=allocate,
        input_names=("face_vertices", "face_colors"),
    )  # fmt: skip


def _packet_flags(need: torch.Tensor) -> torch.Tensor:
    """`[B, H, W]` bool -> `[B, ceil(H/PW), ceil(W/PW)]` int32: whether any pixel of each PW x PW
    packet needs a backward pass (the backward kernels skip the others at once)."""
    B, H, W = need.shape
    padded = torch.nn.functional.pad(need, (0, (-W) % PW, 0, (-H) % PW))
    blocks = padded.view(B, padded.shape[1] // PW, PW, padded.shape[2] // PW, PW)
    return blocks.any(4).any(2).to(torch.int32).contiguous()


@functools.cache
def _op(cfg: RasterConfig) -> KernelOp:
    return _softras_op(cfg) if cfg.mode == "softras" else _dibr_op(cfg)


# ----------------------------------------------------------------------------------------- helpers


def project_vertices(
    vertices: torch.Tensor,  # [B, V, 3] or [V, 3]
    cameras: Camera,
    near: float = RasterSettings.near,
) -> torch.Tensor:
    """World vertices -> screen vertices `[B, V, 3]`: (x, y) in pixels (centres at +0.5) and camera z.

    Differentiable w.r.t. the vertices, `K` and `T_cam_world`. Vertices at z <= near get finite
    placeholder pixel coordinates (the rasterizer skips every face that uses them).
    """
    K = cameras.K.to(vertices.dtype)
    T = cameras.T_cam_world.to(vertices.dtype)
    if vertices.dim() == 2:
        vertices = vertices[None].expand(len(cameras), -1, -1)
    p_cam = vertices @ T[:, :3, :3].transpose(1, 2) + T[:, None, :3, 3]
    z = p_cam[..., 2]
    z_div = torch.where(z > near, z, torch.ones_like(z))
    uv = (p_cam @ K.transpose(1, 2))[..., :2] / z_div[..., None]
    return torch.cat([uv, z[..., None]], dim=-1)


def _check_mesh(vertices, faces, colors, batch: int | None, dims: dict):
    check_tensor("faces", faces, shape=(None, 3), dtype=(torch.int32, torch.int64))
    V = vertices.shape[-2]
    if faces.numel():
        lo, hi = (int(x) for x in torch.aminmax(faces))
        if lo < 0 or hi >= V:
            raise ValueError(f"faces: expected vertex indices in [0, {V}), got values in [{lo}, {hi}]")
    if colors is not None:
        if colors.dim() == 2:
            check_tensor("colors", colors, shape=("V", None), dims=dims, dtype=vertices.dtype)
        else:
            check_tensor("colors", colors, shape=("B", "V", None), dims=dims, dtype=vertices.dtype)
        if colors.shape[-1] < 1 or colors.shape[-1] > 64:
            raise ValueError(f"colors: expected 1 to 64 channels, got {colors.shape[-1]}")


def _radius_px(mode: str, s: RasterSettings, ndc_per_px: float) -> float:
    """How far (pixels) a face's influence reaches beyond its triangle; bbox growth for binning."""
    if mode == "softras":
        r = math.sqrt(s.sigma * math.log(1.0 / s.dist_eps - 1.0)) / ndc_per_px
        return r * (1.0 + 1e-4) + 1e-3  # margin: the exact test is d^2 >= threshold, per pixel
    if mode == "dibr":
        return s.boxlen / ndc_per_px  # exact: the grown bbox *is* DIB-R's candidate test
    return 1e-3  # hard: margin against rounding in the inside test


class Bins(NamedTuple):
    """Screen-tile binning of B images' faces (no gradient).

    records: `[B, F, RECORD]` per-face record (grown bbox, corners, z, 1 / A2, ...; see kernels).
    face_pixels: `[B, F, 4]` int32 inclusive pixel rectangle (i_lo, i_hi, j_lo, j_hi), empty
        (i_lo > i_hi) for skipped faces.
    offsets: `[B * nty * ntx + 1]` int32 CSR offsets of the tile lists.
    tile_faces: `[N]` int32 face ids, each tile's sorted.
    tile_records: `[N, RECORD]` the faces' records in list order.
    ntx, nty: tiles per row and column.
    """

    records: torch.Tensor
    face_pixels: torch.Tensor
    offsets: torch.Tensor
    tile_faces: torch.Tensor
    tile_records: torch.Tensor
    ntx: int
    nty: int


def bin_faces(
    face_vertices: torch.Tensor,  # [B, F, 3, 3]
    width: int,
    height: int,
    radius: float,
    near: float,
    tile_size: int,
) -> Bins:
    """Bin screen-space faces (pixel x, y and camera z per corner) into tile_size x tile_size tiles;
    each face's bounding box is grown by `radius` pixels. Raises ValueError when the lists would hold
    more than MAX_TILE_ENTRIES entries."""
    setup, count, fill = binning_kernels(dtype_name(face_vertices.dtype))
    B, F = face_vertices.shape[:2]
    dev = face_vertices.device
    ntx = -(-width // tile_size)
    nty = -(-height // tile_size)
    records = face_vertices.new_empty(B, F, RECORD)
    fpx = torch.empty(B, F, 4, dtype=torch.int32, device=dev)
    setup(face_vertices, records.view(-1), fpx, float(radius), float(near), AREA_EPS, AREA_REL[face_vertices.dtype],
          width, height)  # fmt: skip
    nchunk = max(1, min(BIN_CHUNKS, F))
    hist = torch.zeros(B, nty * ntx, nchunk, dtype=torch.int32, device=dev)
    count(fpx, hist, tile_size, ntx)
    csum = torch.cumsum(hist.reshape(-1).to(torch.int64), 0)
    total = int(csum[-1]) if csum.numel() else 0
    if total > MAX_TILE_ENTRIES:
        raise ValueError(
            f"faces: the mesh needs {total:,} (tile, face) entries, more than the limit of "
            f"{MAX_TILE_ENTRIES:,}; render fewer images per call, use smaller images, a smaller "
            f"influence radius (sigma / boxlen) or a larger tile_size"
        )
    chunk_offsets = torch.zeros(csum.numel() + 1, dtype=torch.int32, device=dev)
    chunk_offsets[1:] = csum.to(torch.int32)
    tile_faces = torch.empty(max(total, 1), dtype=torch.int32, device=dev)
    tile_records = face_vertices.new_empty(max(total, 1), RECORD)
    cursor = torch.zeros_like(hist)
    fill(fpx, records.view(-1), chunk_offsets, cursor, tile_faces, tile_records.view(-1), tile_size, ntx)
    offsets = chunk_offsets[::nchunk].contiguous()  # [B * nty * ntx + 1]: each tile's first chunk
    return Bins(records, fpx, offsets, tile_faces, tile_records, ntx, nty)


def _empty_output(screen, colors, height, width, settings, with_grad: bool) -> RasterOutput:
    B = screen.shape[0]
    zero = screen.sum() * 0.0 if with_grad else screen.new_zeros(())
    rgb = None
    if colors is not None:
        C = colors.shape[-1]
        bg = settings.background_color(C, screen)
        rgb = bg.expand(B, height, width, C) + colors.sum() * 0.0 + zero
    alpha = screen.new_zeros(B, height, width) + zero
    depth = screen.new_zeros(B, height, width) + zero
    face_id = torch.full((B, height, width), -1, dtype=torch.int32, device=screen.device)
    bary = screen.new_zeros(B, height, width, 3)
    return RasterOutput(rgb, alpha, depth, face_id, bary)


def _rasterize_screen(screen, faces, colors, width: int, height: int, mode: str, settings: RasterSettings):
    """Core: validated screen vertices `[B, V, 3]`, faces `[F, 3]`, colors `[B, V, C]` or None."""
    settings.validate()
    runtime.ensure_initialized()
    B = screen.shape[0]
    F = faces.shape[0]
    if F == 0:
        return _empty_output(screen, colors, height, width, settings, with_grad=mode != "hard")
    C = 0 if colors is None else colors.shape[-1]
    cfg = RasterConfig(dtype_name(screen.dtype), mode, C)
    idx = faces.reshape(-1)
    # [B, F, 3, 3]; autograd scatters face gradients back to the vertices (index_select is ~100x
    # faster than advanced indexing `screen[:, faces]` on the CPU)
    fv = screen.index_select(1, idx).view(B, F, 3, 3)
    if colors is not None:
        fc = colors.expand(B, -1, -1).index_select(1, idx).view(B, F, 3, C)  # [B, F, 3, C]
    else:
        fc = screen.new_zeros(1, 1, 3, 1)
    ndc_per_px = 2.0 / min(width, height)
    s = settings
    bins = bin_faces(fv.detach(), width, height, _radius_px(mode, s, ndc_per_px), s.near, s.tile_size)
    bg = s.background_color(C, screen)
    L = _Launch(
        tile=s.tile_size, ntx=bins.ntx, nty=bins.nty, s2=ndc_per_px**2, sigma=s.sigma,
        thr=s.sigma * math.log(1.0 / s.dist_eps - 1.0), gamma=s.gamma, far=s.far, near=s.near, eps=s.eps,
        inv_delta=s.sigmainv, knum=s.knum, bins=bins, background=bg,
    )  # fmt: skip
    if mode == "hard":
        fwd_kernel, _ = raster_kernels(cfg)
        with torch.no_grad():
            new = screen.new_empty
            alpha, depth, prod = new(B, height, width), new(B, height, width), new(1, 1, 1)
            face_id = torch.empty(B, height, width, dtype=torch.int32, device=screen.device)
            ints = torch.empty(1, 1, 1, dtype=torch.int32, device=screen.device)
            bary = new(B, height, width, 3)
            fwd_kernel(
                fc.detach(), bins.offsets, bins.tile_faces, bins.tile_records.view(-1), bg,
                *(t.view(-1) for t in (new(1), alpha, depth, face_id, bary, prod, ints, ints)), *alpha.shape,
                L.tile, L.ntx, L.nty, L.s2, L.inv_delta, L.knum,
            )  # fmt: skip
        return RasterOutput(None, alpha, depth, face_id, bary)
    outs = _op(cfg)(fv.contiguous(), fc.contiguous(), scalars=(L,), alloc_args=(height, width))
    rgb, alpha, depth, face_id, bary = outs[:5]
    return RasterOutput(rgb if C else None, alpha, depth, face_id, bary.detach())


def check_mesh_inputs(
    vertices: torch.Tensor,  # [B, V, 3] or [V, 3]
    faces: torch.Tensor,  # [F, 3]
    colors: torch.Tensor | None,  # [B, V, C] or [V, C]
    batch: int | None,
) -> None:
    """Validate a mesh as `soft_rasterize` takes it (float vertices, int faces indexing them, optional
    per-vertex colours of the vertices' dtype, batch sizes equal to `batch` where given, all finite);
    raises ValueError/TypeError naming the argument. Shared by the renderers built on the rasterizer."""
    check_tensor("vertices", vertices, dtype=FLOAT_DTYPES)
    dims: dict[str, int] = {}
    if vertices.dim() == 2:
        check_tensor("vertices", vertices, shape=("V", 3), dims=dims)
    else:
        check_tensor("vertices", vertices, shape=("B", "V", 3), dims=dims)
        if batch is not None and vertices.shape[0] != batch:
            raise ValueError(f"vertices: expected a batch of {batch} like the cameras, got {vertices.shape[0]}")
    if colors is not None and colors.dim() == 3 and batch is not None and colors.shape[0] != batch:
        raise ValueError(f"colors: expected a batch of {batch}, got {colors.shape[0]}")
    _check_mesh(vertices, faces, colors, batch, dims)
    bad = ~torch.isfinite(vertices).all(-1)  # [B, V] or [V]
    if bad.any():  # the binning would skip their faces without a word
        raise ValueError(f"vertices: {int(bad.sum())} of {bad.numel()} vertices have NaN/inf coordinates (the faces "
                         "using them would vanish from the image); expected finite positions")  # fmt: skip
    if colors is not None:
        check_finite("colors", colors)


def _colors_batched(colors, B):
    if colors is None:
        return None
    return colors[None].expand(B, -1, -1) if colors.dim() == 2 else colors


def _check_mode(mode: str, allowed=("softras", "dibr")) -> None:
    if mode not in allowed:
        raise ValueError(f"mode: expected one of {allowed}, got {mode!r}")


# ----------------------------------------------------------------------------------------- public


def soft_rasterize(
    vertices: torch.Tensor,  # [B, V, 3] or [V, 3]
    faces: torch.Tensor,  # [F, 3]
    cameras: Camera,
    colors: torch.Tensor | None = None,  # [B, V, C] or [V, C]
    mode: str = "softras",
    settings: RasterSettings | None = None,
    **overrides,
) -> RasterOutput:
    """Differentiable soft rasterization of a triangle mesh seen by B cameras.

    Args:
        vertices: `[B, V, 3]` (one mesh per camera) or `[V, 3]` (shared) world-space vertices,
            float32 or float64.
        faces: `[F, 3]` int32/int64 vertex indices (F = 0 renders the background).
        cameras: B cameras (`Camera`, OpenCV); K and T_cam_world receive gradients if they require them.
        colors: optional `[B, V, C]` or `[V, C]` per-vertex attributes (any C in 1..64); without them
            only the silhouette (and z-buffer) is rendered, which is faster.
        mode: "softras" or "dibr" (see the module docstring).
        settings: a `RasterSettings`; keyword overrides (sigma=..., gamma=..., background=...,
            tile_size=...) replace single fields.

    Returns:
        `RasterOutput(rgb [B,H,W,C] | None, alpha [B,H,W], depth [B,H,W], face_id [B,H,W] int32,
        bary [B,H,W,3])`; rgb, alpha and depth are differentiable w.r.t. vertices, colors and cameras.
    """
    _check_mode(mode)
    if not isinstance(cameras, Camera):
        raise TypeError(f"cameras: expected a taichi_sdf.Camera, got {type(cameras).__name__}")
    check_mesh_inputs(vertices, faces, colors, len(cameras))
    s = RasterSettings.resolve(settings, overrides)
    s.validate()
    screen = project_vertices(vertices, cameras, s.near)
    return _rasterize_screen(
        screen.contiguous(), faces, _colors_batched(colors, len(cameras)), cameras.width, cameras.height, mode, s
    )


def soft_rasterize_screen(
    screen_vertices: torch.Tensor,  # [B, V, 3]
    faces: torch.Tensor,  # [F, 3]
    width: int,
    height: int,
    colors: torch.Tensor | None = None,  # [B, V, C] or [V, C]
    mode: str = "softras",
    settings: RasterSettings | None = None,
    **overrides,
) -> RasterOutput:
    """`soft_rasterize` for already projected vertices: `screen_vertices [B, V, 3]` holds pixel x, y
    (pixel centres at +0.5, y down) and camera z (> near in front of the camera) per vertex."""
    _check_mode(mode)
    _check_size(width, height)
    check_tensor("screen_vertices", screen_vertices, shape=(None, None, 3), dtype=FLOAT_DTYPES)
    check_mesh_inputs(screen_vertices, faces, colors, screen_vertices.shape[0])
    s = RasterSettings.resolve(settings, overrides)
    return _rasterize_screen(
        screen_vertices, faces, _colors_batched(colors, screen_vertices.shape[0]), width, height, mode, s
    )


def hard_rasterize(
    vertices: torch.Tensor,  # [B, V, 3] or [V, 3]
    faces: torch.Tensor,  # [F, 3]
    cameras: Camera,
    near: float = RasterSettings.near,
    tile_size: int = RasterSettings.tile_size,
) -> RasterOutput:
    """Hard rasterization (no gradient): face_id `[B,H,W]` int32 (-1 background), perspective-correct
    barycentrics `[B,H,W,3]`, camera z `depth [B,H,W]` (0 background), alpha = covered; rgb is None.
    Interpolate attributes with `interpolate(attributes, faces, out)`."""
    if not isinstance(cameras, Camera):
        raise TypeError(f"cameras: expected a taichi_sdf.Camera, got {type(cameras).__name__}")
    check_mesh_inputs(vertices, faces, None, len(cameras))
    s = RasterSettings(near=near, tile_size=tile_size)
    s.validate()
    with torch.no_grad():
        screen = project_vertices(vertices.detach(), cameras, near)
        return _rasterize_screen(screen.contiguous(), faces, None, cameras.width, cameras.height, "hard", s)


def hard_rasterize_screen(
    screen_vertices: torch.Tensor,  # [B, V, 3]
    faces: torch.Tensor,  # [F, 3]
    width: int,
    height: int,
    near: float = RasterSettings.near,
    tile_size: int = RasterSettings.tile_size,
) -> RasterOutput:
    """`hard_rasterize` for already projected vertices (see `soft_rasterize_screen`)."""
    _check_size(width, height)
    check_tensor("screen_vertices", screen_vertices, shape=(None, None, 3), dtype=FLOAT_DTYPES)
    check_mesh_inputs(screen_vertices, faces, None, screen_vertices.shape[0])
    s = RasterSettings(near=near, tile_size=tile_size)
    with torch.no_grad():
        return _rasterize_screen(screen_vertices.detach(), faces, None, width, height, "hard", s)


def interpolate(
    attributes: torch.Tensor,  # [B, V, C] or [V, C]
    faces: torch.Tensor,  # [F, 3]
    out: RasterOutput,
) -> torch.Tensor:
    """Interpolate per-vertex attributes with a rasterization's face ids and barycentrics:
    `[B, H, W, C]`, zeros on background (differentiable w.r.t. the attributes only)."""
    B, H, W = out.face_id.shape
    if attributes.dim() == 2:
        attributes = attributes[None].expand(B, -1, -1)
    fid = out.face_id.long()
    covered = fid >= 0
    tri = faces.long()[fid.clamp(min=0)]  # [B, H, W, 3]
    bidx = torch.arange(B, device=fid.device)[:, None, None, None]
    vals = attributes[bidx, tri]  # [B, H, W, 3, C]
    res = (out.bary.to(attributes.dtype)[..., None] * vals).sum(-2)
    return res * covered[..., None]


def _check_size(width, height) -> None:
    if not (isinstance(width, int) and isinstance(height, int)) or width < 1 or height < 1:
        raise ValueError(f"width, height: expected positive ints, got {width!r}, {height!r}")


class SoftRasterizer(nn.Module):
    """`nn.Module` around `soft_rasterize` holding the mode and `RasterSettings` (sigma, gamma, ...).

    forward(vertices [B,V,3] | [V,3], faces [F,3], cameras, colors=None) -> RasterOutput.
    """

    def __init__(self, mode: str = "softras", settings: RasterSettings | None = None, **overrides):
        super().__init__()
        _check_mode(mode)
        self.mode = mode
        self.settings = RasterSettings.resolve(settings, overrides)
        self.settings.validate()

    def forward(self, vertices, faces, cameras: Camera, colors=None) -> RasterOutput:
        return soft_rasterize(vertices, faces, cameras, colors, mode=self.mode, settings=self.settings)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, {self.settings}"
