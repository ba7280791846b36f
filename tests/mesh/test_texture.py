"""Bilinear texture sampling: agreement with the torch twin (values and VJPs), float64 gradcheck,
hand-known texels (orientation, clamp vs repeat), masks, non-finite uv and argument errors."""

import pytest
import torch

from taichi_sdf.mesh.texture import sample_texture
from taichi_sdf.reference.mesh.texture import sample_texture as twin
from tests.helpers import assert_matches_twin

TOL = {torch.float32: dict(atol=1e-5, rtol=1e-5), torch.float64: dict(atol=1e-12, rtol=1e-12)}


def _inputs(dtype, device, B=2, tex_batch=2, Ht=5, Wt=7, C=3, H=4, W=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = (Ht, Wt, C) if tex_batch is None else (tex_batch, Ht, Wt, C)
    tex = torch.rand(shape, generator=g, dtype=dtype).to(device)
    uv = (torch.rand(B, H, W, 2, generator=g, dtype=dtype) * 1.8 - 0.4).to(device)  # in and outside [0, 1]
    mask = (torch.rand(B, H, W, generator=g) > 0.25).to(device)
    return tex, uv, mask


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("address", ["clamp", "repeat"])
@pytest.mark.parametrize("tex_batch,with_mask", [(2, True), (None, False), (1, True)])
def test_matches_twin_values_and_vjps(device, dtype, address, tex_batch, with_mask):
    tex, uv, mask = _inputs(dtype, device, tex_batch=tex_batch)
    m = mask if with_mask else None
    assert_matches_twin(
        lambda t, u: sample_texture(t, u, m, address), lambda t, u: twin(t, u, m, address),
        (tex.requires_grad_(), uv.requires_grad_()), **TOL[dtype],
    )  # fmt: skip


@pytest.mark.parametrize("address", ["clamp", "repeat"])
def test_gradcheck(device, address):
    tex, uv, mask = _inputs(torch.float64, device, B=1, tex_batch=None, Ht=3, Wt=4, C=2, H=3, W=2, seed=1)
    assert torch.autograd.gradcheck(
        lambda t, u: sample_texture(t, u, mask, address), (tex.requires_grad_(), uv.requires_grad_()),
        atol=1e-8, rtol=1e-6,
    )  # fmt: skip


def test_texel_centres_orientation_and_linear_reproduction(device):
    """uv at texel centres returns the texel (row 0 = top = v near 1); bilinear filtering reproduces
    a texture that is linear in the texel coordinates exactly between the outermost centres."""
    dtype = torch.float64
    Ht, Wt = 4, 5
    rows, cols = torch.meshgrid(torch.arange(Ht, dtype=dtype), torch.arange(Wt, dtype=dtype), indexing="ij")
    tex = torch.stack([rows, cols, 1.0 + 2.0 * cols - 3.0 * rows], -1).to(device)  # [Ht, Wt, 3]
    u = (cols + 0.5) / Wt
    v = 1.0 - (rows + 0.5) / Ht
    out = sample_texture(tex, torch.stack([u, v], -1)[None].to(device))[0]
    torch.testing.assert_close(out, tex, atol=1e-12, rtol=0)
    # continuous points: x = u Wt - 0.5, y = (1 - v) Ht - 0.5 anywhere in [0, Wt - 1] x [0, Ht - 1]
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 7, generator=g, dtype=dtype) * (Wt - 1)
    y = torch.rand(1, 3, 7, generator=g, dtype=dtype) * (Ht - 1)
    uv = torch.stack([(x + 0.5) / Wt, 1.0 - (y + 0.5) / Ht], -1).to(device)
    expected = torch.stack([y, x, 1.0 + 2.0 * x - 3.0 * y], -1).to(device)
    torch.testing.assert_close(sample_texture(tex, uv), expected, atol=1e-12, rtol=0)


def test_clamp_and_repeat_addressing(device):
    dtype = torch.float64
    tex = torch.tensor([[[0.0], [1.0], [2.0], [3.0]]], dtype=dtype, device=device)  # one row, 4 texels
    us = torch.tensor([-0.3, 0.05, 0.125, 0.97, 1.2, 1.625], dtype=dtype)
    uv = torch.stack([us, torch.full_like(us, 0.5)], -1).view(1, 1, -1, 2).to(device)
    clamp = sample_texture(tex, uv, address="clamp")[0, 0, :, 0].cpu()
    repeat = sample_texture(tex, uv, address="repeat")[0, 0, :, 0].cpu()
    # x = 4u - 0.5: -1.7, -0.3, 0, 3.38, 4.3, 6
    torch.testing.assert_close(clamp, torch.tensor([0.0, 0.0, 0.0, 3.0, 3.0, 3.0], dtype=dtype))
    # repeat: x mod 4, neighbours wrap (texel 3 next to texel 0)
    torch.testing.assert_close(repeat, torch.tensor([0.7 * 2 + 0.3 * 3, 0.3 * 3 + 0.7 * 0, 0.0, 0.62 * 3, 0.3, 2.0],
                                                    dtype=dtype))  # fmt: skip
    # clamp: no gradient w.r.t. uv beyond the outer texel centres, the full slope inside
    uvg = uv.clone().requires_grad_()
    sample_texture(tex, uvg, address="clamp").sum().backward()
    torch.testing.assert_close(uvg.grad[0, 0, :, 0].cpu(), torch.tensor([0.0, 0.0, 4.0, 0.0, 0.0, 0.0], dtype=dtype))


def test_mask_and_non_finite_uv_give_zero_and_no_gradient(device):
    dtype = torch.float64
    tex, uv, mask = _inputs(dtype, device)
    uv[0, 0, 0, 0] = float("nan")
    uv[0, 0, 1, 1] = float("inf")
    mask[0, 0, :2] = True
    t, u = tex.clone().requires_grad_(), uv.clone().requires_grad_()
    out = sample_texture(t, u, mask)
    assert torch.isfinite(out).all()
    vals = out.detach()
    assert float(vals[0, 0, :2].abs().sum()) == 0.0 and float(vals[~mask].abs().sum()) == 0.0
    out.sum().backward()
    assert torch.isfinite(u.grad).all() and float(u.grad[0, 0, :2].abs().sum()) == 0.0
    assert float(u.grad[~mask].abs().sum()) == 0.0
    # the texture gradient sums to the number of active pixels per channel (weights sum to 1)
    active = int(mask.sum()) - 2
    torch.testing.assert_close(t.grad.sum((0, 1, 2)), torch.full((3,), float(active), dtype=dtype, device=device))


def test_errors(device):
    tex, uv, mask = _inputs(torch.float32, device)
    with pytest.raises(ValueError, match="texture: expected shape"):
        sample_texture(tex[0, 0], uv)
    with pytest.raises(ValueError, match="texture: expected a batch of 1 or 2"):
        sample_texture(torch.cat([tex, tex]), uv)
    with pytest.raises(ValueError, match="uv: expected shape"):
        sample_texture(tex, uv[..., :1].contiguous())
    with pytest.raises(ValueError, match="uv: expected dtype float32"):
        sample_texture(tex, uv.double())
    with pytest.raises(ValueError, match="texture: expected dtype float32 or float64"):
        sample_texture(tex.half(), uv)
    with pytest.raises(ValueError, match="mask: expected dtype bool"):
        sample_texture(tex, uv, mask.float())
    with pytest.raises(ValueError, match="mask: expected shape"):
        sample_texture(tex, uv, mask[:, :2].contiguous())
    with pytest.raises(ValueError, match="address: expected one of"):
        sample_texture(tex, uv, address="mirror")
    with pytest.raises(ValueError, match="uv: expected a contiguous"):
        sample_texture(tex, uv.transpose(1, 2))
    with pytest.raises(TypeError, match="texture: expected a torch.Tensor"):
        sample_texture(tex.numpy(), uv)
