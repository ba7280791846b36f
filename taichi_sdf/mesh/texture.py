"""UV texture sampling with bilinear filtering (Taichi kernels, hand-written backward).

Texture coordinates follow OBJ / OpenGL: u to the right, v up, the texture image's first row at
v = 1 (see `kernels/mesh/texture.py` for the exact texel-centre convention). Gradients reach the texture
(scattered with atomic adds) and the uv coordinates, hence everything upstream of them (e.g. vertex
positions through a soft rasterizer's interpolation of per-vertex uvs).
"""

from __future__ import annotations

import functools

import torch

from taichi_sdf.core.bridge import KernelOp
from taichi_sdf.core.dtypes import dtype_name
from taichi_sdf.core.validation import FLOAT_DTYPES, check_tensor
from taichi_sdf.kernels.mesh.texture import texture_kernels

ADDRESS_MODES = ("clamp", "repeat")


@functools.cache
def _op(dtype: str) -> KernelOp:
    forward, backward = texture_kernels(dtype)
    return KernelOp(
        name="sample_texture",
        forward=forward,
        backward=backward,
        allocate=lambda tex, uv, mask: (uv.new_empty(*uv.shape[:3], tex.shape[-1]),),
        input_names=("texture", "uv", "mask"),
    )


def sample_texture(
    texture: torch.Tensor,  # [B, Ht, Wt, C] or [Ht, Wt, C]
    uv: torch.Tensor,  # [B, H, W, 2]
    mask: torch.Tensor | None = None,  # [B, H, W] bool
    address: str = "clamp",
) -> torch.Tensor:
    """Bilinearly filtered texture lookups at per-pixel uv coordinates, differentiable w.r.t. both.

    Args:
        texture: `[B, Ht, Wt, C]` (one texture per image) or `[Ht, Wt, C]` (shared), float32 or
            float64; row 0 is the top of the texture image (v = 1).
        uv: `[B, H, W, 2]` texture coordinates (u right, v up; [0, 1]^2 spans the texture), same dtype.
        mask: optional `[B, H, W]` bool; pixels where it is False read nothing and give 0.
        address: "clamp" (clamp-to-edge, default) or "repeat" (wrap with period 1).

    Returns:
        `[B, H, W, C]` sampled values; 0 where masked out or where uv is not finite.
    """
    check_tensor("texture", texture, dtype=FLOAT_DTYPES)
    if texture.dim() not in (3, 4):
        raise ValueError(f"texture: expected shape [B, Ht, Wt, C] or [Ht, Wt, C], got {list(texture.shape)}")
    tex = texture if texture.dim() == 4 else texture[None]
    if min(tex.shape[1:]) < 1:
        raise ValueError(f"texture: expected at least one texel and one channel, got shape {list(texture.shape)}")
    check_tensor("uv", uv, shape=(None, None, None, 2), dtype=texture.dtype)
    B = uv.shape[0]
    if tex.shape[0] not in (1, B):
        raise ValueError(f"texture: expected a batch of 1 or {B} (like uv), got {tex.shape[0]}")
    if mask is not None:
        check_tensor("mask", mask, shape=(B, *uv.shape[1:3]), dtype=torch.bool)
    if address not in ADDRESS_MODES:
        raise ValueError(f"address: expected one of {ADDRESS_MODES}, got {address!r}")
    # bool -> uint8 is a zero-copy view; a [1, 1, 1] dummy when there is no mask
    m = mask.view(torch.uint8) if mask is not None else torch.zeros(1, 1, 1, dtype=torch.uint8, device=uv.device)
    return _op(dtype_name(tex.dtype))(
        tex, uv, m, scalars=(int(mask is not None), int(address == "repeat"))
    )
