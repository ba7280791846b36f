"""Central-difference normals of torch-callable fields (taichi_sdf/implicit/normals.py) against
analytic normals, float64 gradchecks, DVR's sign convention and argument checks."""

import pytest
import torch

from taichi_sdf.implicit.normals import central_difference_normals, neighbour_normals
from taichi_sdf.models.dvr import DVRDecoder


def random_points(n, seed, low=0.3, high=0.9):
    """Points in a shell low <= |x| <= high (away from the sphere field's kink at the origin)."""
    g = torch.Generator().manual_seed(seed)
    d = torch.nn.functional.normalize(torch.randn(n, 3, generator=g, dtype=torch.float64), dim=-1)
    return d * (low + (high - low) * torch.rand(n, 1, generator=g, dtype=torch.float64))


def sphere_occupancy(x, r=0.5):  # positive inside, like DVR's occupancy logit
    return r - x.norm(dim=-1)


def test_sphere_occupancy_normals_point_inwards():
    p = random_points(50, 0)
    n = central_difference_normals(sphere_occupancy, p)
    # grad (r - |x|) = -x / |x|: DVR's normals of an occupancy field point into the object
    assert torch.allclose(n, -p / p.norm(dim=-1, keepdim=True), atol=1e-7)
    assert torch.allclose(n.norm(dim=-1), torch.ones(50, dtype=torch.float64), atol=1e-12)


def test_ellipsoid_normals_from_column_zero():
    axes = torch.tensor([0.6, 0.4, 0.3], dtype=torch.float64)
    # [M, 2] output: column 0 is the field (a quadratic, so central differences are exact), column 1 a feature
    fn = lambda x: torch.stack([1 - ((x / axes) ** 2).sum(-1), x[:, 0] * 100], dim=-1)  # noqa: E731
    p = random_points(20, 1)
    grad = -2 * p / axes**2
    assert torch.allclose(central_difference_normals(fn, p, h=1e-2), grad / grad.norm(dim=-1, keepdim=True), atol=1e-10)


def test_float32_decoder_field_normals_match_autograd():
    torch.manual_seed(0)
    dec = DVRDecoder(c_dim=0, hidden_size=16, n_blocks=1)
    for p in dec.parameters():
        torch.nn.init.normal_(p, 0.0, 0.5)
    fn = dec.field()
    p = (torch.rand(30, 3) - 0.5).requires_grad_()
    g = torch.autograd.grad(fn(p)[:, 0].sum(), p)[0]
    n = central_difference_normals(fn, p.detach())
    # ReLU MLP: piecewise linear, so central differences equal the gradient except near a kink
    close = (n - g / g.norm(dim=-1, keepdim=True)).norm(dim=-1) < 1e-2
    assert close.float().mean() > 0.9


def test_points_reach_the_field_point_major():
    # per-point codes follow the documented layout (rows 6i..6i+5 belong to point i)
    torch.manual_seed(1)
    dec = DVRDecoder(c_dim=2, hidden_size=8, n_blocks=1)
    p, codes = torch.rand(5, 3) - 0.5, torch.randn(5, 2)
    n = central_difference_normals(lambda x: dec(x, codes.repeat_interleave(6, dim=0)), p)
    for i in range(5):
        assert torch.allclose(n[i], central_difference_normals(dec.field(codes[i]), p[i : i + 1])[0], atol=1e-6)


def test_gradcheck_points_and_field_parameters():
    g = torch.Generator().manual_seed(2)
    w = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(4, generator=g, dtype=torch.float64)
    field = lambda x, w: torch.tanh(x @ w) @ v  # noqa: E731
    p = random_points(4, 3).requires_grad_()
    assert torch.autograd.gradcheck(lambda p, w: central_difference_normals(lambda x: field(x, w), p), (p, w))


def test_flat_field_gives_short_vectors_not_nan():
    p = random_points(3, 4)
    n = central_difference_normals(lambda x: torch.zeros(x.shape[0], dtype=x.dtype), p)
    assert torch.equal(n, torch.zeros_like(p))
    assert central_difference_normals(sphere_occupancy, p[:0]).shape == (0, 3)


def test_neighbour_normals_are_normals_of_jittered_points():
    p = random_points(40, 5)
    n, nb = neighbour_normals(sphere_occupancy, p, h_sample=0.1, generator=torch.Generator().manual_seed(6))
    assert torch.allclose(n, -p / p.norm(dim=-1, keepdim=True), atol=1e-7)
    # nb is the inward normal at q = p + U(-0.05, 0.05)^3, drawn from the same generator
    jitter = torch.rand(p.shape, generator=torch.Generator().manual_seed(6), dtype=p.dtype)
    q = p + (jitter - 0.5) * 0.1
    assert torch.allclose(nb, -q / q.norm(dim=-1, keepdim=True), atol=1e-7)
    assert not torch.allclose(n, nb)
    n0, nb0 = neighbour_normals(sphere_occupancy, p, h_sample=0.0)
    assert torch.equal(n0, nb0)


def test_argument_checks():
    p = random_points(2, 7)
    with pytest.raises(TypeError, match="fn"):
        central_difference_normals(None, p)
    with pytest.raises(ValueError, match=r"points: expected shape \[\*, 3\]"):
        central_difference_normals(sphere_occupancy, p[:, :2])
    with pytest.raises(ValueError, match="h: expected a step > 0"):
        central_difference_normals(sphere_occupancy, p, h=0.0)
    with pytest.raises(ValueError, match="fn: expected output"):
        central_difference_normals(lambda x: x.norm(dim=-1)[:1], p)
    with pytest.raises(ValueError, match="h_sample"):
        neighbour_normals(sphere_occupancy, p, h_sample=-1.0)
