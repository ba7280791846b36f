"""The Taichi<->torch bridge: gradcheck on two kernels (autodiff and hand-written backward), no stale
gradients, one gradient per input, and the validation of tensors before they reach a kernel."""

import pytest
import torch

from taichi_sdf.cameras import rays
from taichi_sdf.core.bridge import KernelOp
from taichi_sdf.implicit import grid
from taichi_sdf.reference.cameras import rays as rays_ref
from taichi_sdf.reference.implicit import grid as grid_ref
from tests.helpers import assert_matches_twin

BOX = (-1.0, -1.0, -1.0, 1.0, 1.0, 1.0)


def _camera(dtype, device, B=2):
    g = torch.Generator().manual_seed(3)
    K = torch.tensor([[40.0, 0.3, 9.0], [0.0, 44.0, 7.0], [0.0, 0.0, 1.0]], dtype=dtype).repeat(B, 1, 1)
    K[:, :2, :3] += 0.5 * torch.rand(B, 2, 3, generator=g, dtype=dtype) * torch.tensor([[1, 0, 1], [0, 1, 1]])
    A = torch.randn(B, 3, 3, generator=g, dtype=dtype)
    Q, _ = torch.linalg.qr(A)
    Q = Q * torch.linalg.det(Q)[:, None, None]  # a proper rotation
    T = torch.eye(4, dtype=dtype).repeat(B, 1, 1)
    T[:, :3, :3] = Q
    T[:, :3, 3] = torch.randn(B, 3, generator=g, dtype=dtype) + torch.tensor([0.0, 0.0, 3.0], dtype=dtype)
    return K.to(device), T.to(device)


def test_gradcheck_image_rays_taichi_autodiff(device):
    K, T = _camera(torch.float64, device)
    assert torch.autograd.gradcheck(
        lambda K, T: rays.image_rays(K, T, 3, 4), (K.requires_grad_(), T.requires_grad_())
    )


def test_gradcheck_pixel_rays_taichi_autodiff(device):
    K, T = _camera(torch.float64, device)
    px = (torch.rand(2, 5, 2, dtype=torch.float64) * 16).to(device)
    assert torch.autograd.gradcheck(
        rays.pixel_rays, (K.requires_grad_(), T.requires_grad_(), px.requires_grad_())
    )


def _grid_inputs(dtype, device):
    g = torch.Generator().manual_seed(0)
    values = torch.randn(4, 5, 3, generator=g, dtype=dtype).to(device)
    # Some points outside the box exercise the clamped branch; keep them off cell borders.
    points = (torch.rand(9, 3, generator=g, dtype=dtype) * 2.6 - 1.3).to(device)
    return values, points


def test_gradcheck_grid_sample_handwritten_backward(device):
    values, points = _grid_inputs(torch.float64, device)
    assert torch.autograd.gradcheck(grid.grid_sample, (values.requires_grad_(), points.requires_grad_()))


def test_gradcheck_grid_sample_taichi_autodiff(device):
    values, points = _grid_inputs(torch.float64, device)
    op = grid.grid_sample_op("f64", autodiff=True)
    assert torch.autograd.gradcheck(
        lambda v, p: op(v, p, scalars=BOX), (values.requires_grad_(), points.requires_grad_())
    )


@pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_rays_match_twin(device, dtype, atol):
    K, T = _camera(dtype, device)
    assert_matches_twin(
        lambda K, T: rays.image_rays(K, T, 6, 7),
        lambda K, T: rays_ref.image_rays(K, T, 6, 7),
        (K.requires_grad_(), T.requires_grad_()),
        atol=atol,
    )
    px = (torch.rand(2, 11, 2, dtype=dtype) * 16).to(device)
    assert_matches_twin(rays.pixel_rays, rays_ref.pixel_rays, (K, T, px.requires_grad_()), atol=atol)


@pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_grid_sample_matches_twin(device, dtype, atol):
    values, points = _grid_inputs(dtype, device)
    assert_matches_twin(
        grid.grid_sample,
        lambda v, p: grid_ref.grid_sample(v, p, -1.0, 1.0),
        (values.requires_grad_(), points.requires_grad_()),
        atol=atol,
    )


def test_repeated_calls_give_identical_gradients(device):
    """No stale `.grad`: twice in a row, and after an earlier backward, the gradient is the same."""
    K, T = _camera(torch.float64, device)
    T.requires_grad_()
    cot = torch.randn(2, 5, 6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).to(device)

    def grad_once():
        _, d = rays.image_rays(K, T, 5, 6)
        (g,) = torch.autograd.grad((d * cot).sum(), T)
        return g

    first, second = grad_once(), grad_once()
    torch.testing.assert_close(first, second, atol=0, rtol=0)
    # An accumulated `.grad` on the leaf must neither leak into nor be clobbered by the bridge.
    _, d = rays.image_rays(K, T, 5, 6)
    (d * cot).sum().backward()
    torch.testing.assert_close(T.grad, first, atol=0, rtol=0)
    _, d = rays.image_rays(K, T, 5, 6)
    (d * cot).sum().backward()
    torch.testing.assert_close(T.grad, 2 * first, atol=1e-12, rtol=0)
    torch.testing.assert_close(grad_once(), first, atol=0, rtol=0)


def test_forward_leaves_user_grad_untouched(device):
    K, T = _camera(torch.float32, device)
    K.requires_grad_()
    rays.image_rays(K, T, 2, 2)
    assert K.grad is None  # Taichi alone would allocate it in the forward call (taichi#8340)


def test_gradients_only_where_needed(device):
    values, points = _grid_inputs(torch.float64, device)
    values.requires_grad_()
    out = grid.grid_sample(values, points)
    out.sum().backward()
    assert values.grad is not None and points.grad is None
    # Each grid node's weights over all points sum to the gradient of sum(out).
    leaf = values.detach().requires_grad_()
    (g,) = torch.autograd.grad(grid_ref.grid_sample(leaf, points, -1.0, 1.0).sum(), leaf)
    torch.testing.assert_close(values.grad, g)


def test_integer_outputs_are_not_differentiable(device):
    import functools

    import taichi as ti

    @functools.cache
    def kernels():
        @ti.kernel
        def fwd(x: ti.types.ndarray(dtype=ti.f64, ndim=1), y: ti.types.ndarray(dtype=ti.f64, ndim=1),
                sign: ti.types.ndarray(dtype=ti.i32, ndim=1)):  # fmt: skip
            for i in range(x.shape[0]):
                y[i] = x[i] * x[i]
                sign[i] = 1 if x[i] > 0 else 0

        return fwd

    op = KernelOp("square", kernels(), lambda x: (torch.empty_like(x), torch.empty(x.shape, dtype=torch.int32, device=x.device)))
    x = torch.tensor([-1.0, 2.0, 3.0], dtype=torch.float64, device=device, requires_grad=True)
    y, sign = op(x)
    assert not sign.requires_grad and sign.tolist() == [0, 1, 1]
    y.sum().backward()
    torch.testing.assert_close(x.grad, 2 * x.detach())


# -- validation ---------------------------------------------------------------------------------


def test_wrong_dtype_names_argument(device):
    K, T = _camera(torch.float32, device)
    with pytest.raises(ValueError, match="T_cam_world: expected dtype float32"):
        rays.image_rays(K, T.double(), 4, 4)
    with pytest.raises(ValueError, match="K: expected dtype"):
        rays.image_rays(K.half(), T, 4, 4)


def test_wrong_shape_names_argument(device):
    K, T = _camera(torch.float32, device)
    with pytest.raises(ValueError, match=r"T_cam_world: expected shape \[B, 4, 4\] with B=2, got \[1, 4, 4\]"):
        rays.image_rays(K, T[:1].contiguous(), 4, 4)
    with pytest.raises(ValueError, match="pixels: expected shape"):
        rays.pixel_rays(K, T, torch.zeros(2, 5, 3, device=device))
    with pytest.raises(ValueError, match="height, width"):
        rays.image_rays(K, T, 0, 4)


def test_non_contiguous_is_rejected(device):
    K, T = _camera(torch.float32, device)
    T_nc = T.transpose(1, 2)
    assert not T_nc.is_contiguous()
    with pytest.raises(ValueError, match="T_cam_world: expected a contiguous tensor"):
        rays.image_rays(K, T_nc, 4, 4)


def test_wrong_device_is_rejected(device):
    K, T = _camera(torch.float32, device)
    with pytest.raises(ValueError, match="K: expected a tensor on"):
        rays.image_rays(K.to("meta"), T, 4, 4)


def test_not_a_tensor(device):
    K, T = _camera(torch.float32, device)
    with pytest.raises(TypeError, match="K: expected a torch.Tensor, got ndarray"):
        rays.image_rays(K.cpu().numpy(), T, 4, 4)


def test_grid_sample_validation(device):
    values, points = _grid_inputs(torch.float32, device)
    with pytest.raises(ValueError, match="grid: expected at least 2 nodes"):
        grid.grid_sample(values[:1].contiguous(), points)
    with pytest.raises(ValueError, match="bound_max"):
        grid.grid_sample(values, points, 1.0, -1.0)
    with pytest.raises(ValueError, match="points: expected shape"):
        grid.grid_sample(values, points[:, :2].contiguous())
