"""Bilinear texture sampling with a hand-written backward pass.

A texture `tex [Bt, Ht, Wt, C]` (Bt = 1: one texture shared by every image) is sampled at per-pixel
texture coordinates `uv [B, H, W, 2]` with u to the right and v up (the OBJ / OpenGL convention):
texel (row r, column c) has its centre at u = (c + 0.5) / Wt, v = 1 - (r + 0.5) / Ht, so row 0 is
the top of the texture image and the continuous texel coordinates are

    x = u * Wt - 0.5,    y = (1 - v) * Ht - 0.5

(texel centres at integers). Bilinear filtering mixes the 4 texels around (x, y). Addressing picks
the texels outside the texture: clamp-to-edge (repeat = 0, the edge texels continue; the gradient
w.r.t. uv is zero beyond the outermost texel centres) or repeat (repeat = 1, period 1 in uv).
Non-finite uv and masked-out pixels give 0 and get zero gradients. Integer texel indices are always
clamped or wrapped into range at the end, so no input can make a kernel read out of bounds.

Kernels run one thread per output element (b, i, j, c): loop-free, so any channel count works
without a recompile. The backward scatters into the texture gradient with atomic adds (the order of
the float additions, hence the last bits of the result, may vary between runs on parallel backends).
No `from __future__ import annotations` here (Taichi reads the annotations).
"""

import functools

import taichi as ti

from taichi_sdf.kernels.dtypes import ti_float

BIG = 2.0**100  # |uv| below this counts as finite (the comparison is also false for NaN)


@functools.cache
def texture_kernels(dtype: str):
    """(forward, backward).

    forward(tex [Bt,Ht,Wt,C], uv [B,H,W,2], mask [Bm,Hm,Wm] u8, out [B,H,W,C], has_mask, repeat)
    backward(tex, uv, mask, out, grad_out [B,H,W,C], grad_tex [Bt,Ht,Wt,C], grad_uv [B,H,W,2],
             has_mask, repeat) accumulates into the zero-filled grad_tex, grad_uv.
    `mask` is read only when has_mask != 0 (pass a [1, 1, 1] dummy otherwise); texture batch index
    min(b, Bt - 1).
    """
    f = ti_float(dtype)
    t4 = ti.types.ndarray(dtype=f, ndim=4)
    m3 = ti.types.ndarray(dtype=ti.u8, ndim=3)

    @ti.func
    def axis(x, n, repeat):
        """Texel indices (i0, i1) around continuous coordinate x on an axis of n texels, and the
        weight of i1."""
        nf = ti.cast(n, f)
        xr = x
        if repeat != 0:
            xr = x - ti.floor(x / nf) * nf  # into [0, n] (rounding may give n): wrapped below
        else:
            xr = ti.min(ti.max(x, -1.0), nf)  # beyond this both texels are the edge one anyway
        x0 = ti.floor(xr)
        i0 = ti.cast(x0, ti.i32)
        i1 = i0 + 1
        if repeat != 0:
            i0 = i0 % n  # Python semantics in Taichi: non-negative for n > 0
            i1 = i1 % n
        else:
            i0 = ti.min(ti.max(i0, 0), n - 1)
            i1 = ti.min(ti.max(i1, 0), n - 1)
        return i0, i1, xr - x0

    @ti.func
    def texel_setup(tex: ti.template(), uv: ti.template(), mask: ti.template(), b, i, j, has_mask, repeat):
        """(active, texture batch index, x0, x1, fx, y0, y1, fy) of pixel (b, i, j)."""
        u = uv[b, i, j, 0]
        v = uv[b, i, j, 1]
        active = ti.abs(u) < BIG and ti.abs(v) < BIG
        if has_mask != 0:
            active = active and mask[b, i, j] != 0
        ht = tex.shape[1]
        wt = tex.shape[2]
        x0, x1, fx = axis(u * ti.cast(wt, f) - 0.5, wt, repeat)
        y0, y1, fy = axis((1.0 - v) * ti.cast(ht, f) - 0.5, ht, repeat)
        tb = ti.min(b, tex.shape[0] - 1)
        return active, tb, x0, x1, fx, y0, y1, fy

    @ti.kernel
    def forward(tex: t4, uv: t4, mask: m3, out: t4, has_mask: ti.i32, repeat: ti.i32):
        for b, i, j, c in ti.ndrange(out.shape[0], out.shape[1], out.shape[2], out.shape[3]):
            val = ti.cast(0.0, f)
            active, tb, x0, x1, fx, y0, y1, fy = texel_setup(tex, uv, mask, b, i, j, has_mask, repeat)
            if active:
                top = (1.0 - fx) * tex[tb, y0, x0, c] + fx * tex[tb, y0, x1, c]
                bottom = (1.0 - fx) * tex[tb, y1, x0, c] + fx * tex[tb, y1, x1, c]
                val = (1.0 - fy) * top + fy * bottom
            out[b, i, j, c] = val

    @ti.kernel
    def backward(tex: t4, uv: t4, mask: m3, out: t4, grad_out: t4, grad_tex: t4, grad_uv: t4,
                 has_mask: ti.i32, repeat: ti.i32):  # fmt: skip
        for b, i, j, c in ti.ndrange(out.shape[0], out.shape[1], out.shape[2], out.shape[3]):
            g = grad_out[b, i, j, c]
            active, tb, x0, x1, fx, y0, y1, fy = texel_setup(tex, uv, mask, b, i, j, has_mask, repeat)
            if active and g != 0.0:
                grad_tex[tb, y0, x0, c] += g * (1.0 - fx) * (1.0 - fy)
                grad_tex[tb, y0, x1, c] += g * fx * (1.0 - fy)
                grad_tex[tb, y1, x0, c] += g * (1.0 - fx) * fy
                grad_tex[tb, y1, x1, c] += g * fx * fy
                t00, t01 = tex[tb, y0, x0, c], tex[tb, y0, x1, c]
                t10, t11 = tex[tb, y1, x0, c], tex[tb, y1, x1, c]
                d_dx = (1.0 - fy) * (t01 - t00) + fy * (t11 - t10)
                d_dy = (1.0 - fx) * (t10 - t00) + fx * (t11 - t01)
                # dx/du = Wt, dy/dv = -Ht (wrapping and clamping have slope 1 or give equal texels)
                grad_uv[b, i, j, 0] += g * d_dx * ti.cast(tex.shape[2], f)
                grad_uv[b, i, j, 1] -= g * d_dy * ti.cast(tex.shape[1], f)

    return forward, backward
