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
