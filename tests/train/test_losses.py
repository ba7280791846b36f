"""Each loss of taichi_sdf.train.losses against a value computed by hand."""

import math

import pytest
import torch

from taichi_sdf.train import losses


def test_rgb_l1_divides_by_all_rays():
    pred = torch.tensor([[0.5, 0.0, -1.0], [1.0, 1.0, 1.0]])
    gt = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.5, 1.0]])
    # |diff| sums: 1.5 + 0.5 = 2.0, over 8 rays of the batch (2 of them hit inside the mask)
    assert float(losses.rgb_l1(pred, gt, num_rays=8)) == pytest.approx(2.0 / 8)
    assert float(losses.rgb_l1(pred, gt)) == pytest.approx(1.0)
    assert float(losses.rgb_l1(pred[:0], gt[:0], 8)) == 0.0


def test_mask_bce_on_min_sdf():
    s = torch.tensor([0.02, -0.01])
    m = torch.tensor([False, True])
    alpha = 50.0
    # logits -alpha s = (-1, 0.5); BCE(x, y) = softplus(x) - x y
    sp = lambda x: math.log1p(math.exp(x))  # noqa: E731
    expected = (sp(-1.0) + (sp(0.5) - 0.5)) / (alpha * 4)
    assert float(losses.mask_bce(s, m, alpha, num_rays=4)) == pytest.approx(expected, rel=1e-6)


def test_eikonal():
    g = torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.5, 0.0]])  # norms 5, 1, 0.5
    assert float(losses.eikonal(g)) == pytest.approx((16 + 0 + 0.25) / 3)
    assert float(losses.eikonal(g[:0])) == 0.0


def test_clamped_sdf_l1():
    pred = torch.tensor([0.05, 0.3, -0.2, 0.0])
    sdf = torch.tensor([0.0, 0.2, 0.5, -0.05])
    # clamped to 0.1: |0.05 - 0| + |0.1 - 0.1| + |-0.1 - 0.1| + |0 + 0.05| = 0.3
    assert float(losses.clamped_sdf_l1(pred, sdf, 0.1)) == pytest.approx(0.3 / 4)
    assert float(losses.clamped_sdf_l1(pred, sdf, 0.1, num_samples=10)) == pytest.approx(0.03)


def test_latent_l2_with_warmup():
    codes = torch.tensor([[3.0, 4.0], [0.0, 1.0]])  # norms 5, 1 (the norm, not its square)
    assert float(losses.latent_l2(codes, 1e-2, epoch=25, warmup=100)) == pytest.approx(1e-2 * 0.25 * 6 / 2)
    assert float(losses.latent_l2(codes, 1e-2, epoch=500, warmup=100, num_samples=4)) == pytest.approx(1e-2 * 6 / 4)
    assert float(losses.latent_l2(codes, 1e-2)) == pytest.approx(1e-2 * 3)


# ----------------------------------------------------------------------------------------- DVR


def test_dvr_rgb_l1_sums_masked_pixels_over_batch_size():
    pred = torch.tensor([[[0.5, 0.0, 1.0], [9.0, 9.0, 9.0]], [[0.0, 0.0, 0.0], [0.2, 0.4, 0.6]]])
    gt = torch.tensor([[[0.0, 0.5, 1.0], [0.0, 0.0, 0.0]], [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]])
    mask = torch.tensor([[True, False], [False, True]])
    # pixel (0, 0): 0.5 + 0.5 + 0 = 1.0; pixel (1, 1): 0.2 + 0.4 + 0.6 = 1.2; B = 2
    assert float(losses.dvr_rgb_l1(pred, gt, mask)) == pytest.approx(2.2 / 2)
    pred.requires_grad_()
    losses.dvr_rgb_l1(pred, gt, mask).backward()
    assert pred.grad[~mask].abs().sum() == 0 and pred.grad[mask].abs().sum() > 0


def test_dvr_depth_l1_skips_non_finite_ground_truth():
    pred = torch.tensor([[1.0, 2.0, 3.0]])
    gt = torch.tensor([[1.5, float("inf"), 2.0]])
    mask = torch.tensor([[True, True, True]])
    assert float(losses.dvr_depth_l1(pred, gt, mask)) == pytest.approx(0.5 + 1.0)
    assert float(losses.dvr_depth_l1(pred, gt, torch.tensor([[False, True, True]]))) == pytest.approx(1.0)


def test_dvr_world_depth_l2_is_the_euclidean_norm():
    pred = torch.tensor([[[3.0, 4.0, 0.0], [1.0, 1.0, 1.0]], [[0.0, 0.0, 2.0], [5.0, 5.0, 5.0]]])
    gt = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]], [[0.0, 0.0, 0.0], [float("nan"), 0.0, 0.0]]])
    mask = torch.ones(2, 2, dtype=torch.bool)
    # norms 5, 0, 2 (the NaN ground-truth point is dropped), B = 2
    assert float(losses.dvr_world_depth_l2(pred, gt, mask)) == pytest.approx(7.0 / 2)


def test_freespace_and_occupancy_bce_on_logits():
    logits = torch.tensor([[0.0, math.log(3.0)], [-2.0, 5.0]])
    mask = torch.tensor([[True, True], [False, False]])
    # towards empty: BCE(x, 0) = log(1 + e^x): log 2 + log 4; towards occupied: log(1 + e^-x): log 2 + log(4/3)
    assert float(losses.freespace_bce(logits, mask)) == pytest.approx((math.log(2) + math.log(4)) / 2)
    assert float(losses.occupancy_bce(logits, mask)) == pytest.approx((math.log(2) + math.log(4 / 3)) / 2)
    assert float(losses.occupancy_bce(logits, torch.zeros_like(mask))) == 0.0


def test_normal_smoothness_sums_norms_over_batch_size():
    n = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    nb = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
    # ||n - nb|| = sqrt 2, 0, 2 (the norm, not squared), over 4 images
    assert float(losses.normal_smoothness(n, nb, batch_size=4)) == pytest.approx((math.sqrt(2) + 2) / 4)
    with pytest.raises(ValueError, match="batch_size"):
        losses.normal_smoothness(n, nb, batch_size=0)
    with pytest.raises(ValueError, match="neighbour_normals"):
        losses.normal_smoothness(n, nb[:2], batch_size=1)


def test_image_gradient_l2_on_2x2_patches():
    # one image, two 2x2 patches (entry a*2 + b is the pixel at offset (a, b)), two channels
    pred = torch.tensor([[[1.0, 0.0], [2.0, 3.0], [4.0, 4.0], [9.0, 7.0], [1.0, 1.0], [5.0, 5.0], [0.0, 0.0], [0.0, 0.0]]])
    gt = torch.zeros_like(pred)
    mask = torch.tensor([[True, True, True, True, True, True, False, True]])  # patch 2 is incomplete
    # patch 1: g = (v00 - v01, v00 - v10): channel 0 (1 - 2, 1 - 4) -> sqrt 10, channel 1 (0 - 3, 0 - 4) -> 5
    assert float(losses.image_gradient_l2(pred, gt, mask)) == pytest.approx(math.sqrt(10) + 5)
    gt[0, 1, 0] = 1.0  # now the target has channel 0's gradient (-1, 0): difference (0, -3) -> 3
    assert float(losses.image_gradient_l2(pred, gt, mask)) == pytest.approx(3 + 5)
    full = torch.ones_like(mask)  # patch 2 counts too: (1 - 5, 1 - 0) per channel -> 2 sqrt 17
    two = torch.cat([pred, pred]), torch.cat([gt, gt]), torch.cat([full, full])
    assert float(losses.image_gradient_l2(*two)) == pytest.approx(3 + 5 + 2 * math.sqrt(17))  # summed / B = 2


def test_image_gradient_l2_uses_the_first_corner_of_larger_patches():
    g = torch.Generator().manual_seed(0)
    pred, gt = torch.rand(1, 9, 3, generator=g), torch.rand(1, 9, 3, generator=g)
    mask = torch.ones(1, 9, dtype=torch.bool)
    corner = [0, 1, 3, 4]  # offsets (0, 0), (0, 1), (1, 0), (1, 1) of the 3x3 patch, as one 2x2 patch
    p2, g2 = pred[:, corner], gt[:, corner]
    expected = losses.image_gradient_l2(p2, g2, torch.ones(1, 4, dtype=torch.bool))
    assert float(losses.image_gradient_l2(pred, gt, mask, patch_size=3)) == pytest.approx(float(expected))


def test_dvr_losses_check_their_arguments():
    x, mask = torch.zeros(2, 4, 3), torch.ones(2, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match="mask: expected dtype bool"):
        losses.dvr_rgb_l1(x, x, mask.float())
    with pytest.raises(ValueError, match=r"target: expected shape \[2, 4, 3\]"):
        losses.dvr_rgb_l1(x, x[:, :3], mask)
    with pytest.raises(ValueError, match="patch_size"):
        losses.image_gradient_l2(x, x, mask, patch_size=1)
    with pytest.raises(ValueError, match="divisible by patch_size"):
        losses.image_gradient_l2(x[:, :3], x[:, :3], mask[:, :3])
    with pytest.raises(ValueError, match=r"logits: expected shape \[2, 4\]"):
        losses.freespace_bce(x, mask)
