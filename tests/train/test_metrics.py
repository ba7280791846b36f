"""Metrics against answers computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import trimesh

from taichi_sdf.train.metrics import (
    chamfer_distance,
    deepsdf_chamfer,
    evaluate_mesh,
    fscore,
    mask_iou,
    normal_consistency,
    psnr,
    sample_surface,
)

# a = {(0,0,0), (2,0,0)}, b = {(0,1,0)}:
#   a -> b distances: 1, sqrt(5);  b -> a distance: 1.
A2 = np.array([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
B1 = np.array([[0.0, 1.0, 0.0]])


def test_chamfer_two_point_example():
    out = chamfer_distance(A2, B1)
    acc = (1.0 + math.sqrt(5.0)) / 2.0
    assert out["accuracy"] == pytest.approx(acc)
    assert out["completeness"] == pytest.approx(1.0)
    assert out["chamfer_l1"] == pytest.approx(0.5 * (acc + 1.0))
    assert out["chamfer_l2"] == pytest.approx(0.5 * ((1.0 + 5.0) / 2.0 + 1.0))  # = 2
    assert deepsdf_chamfer(A2, B1) == pytest.approx(4.0)
    # Asymmetric: swapping the arguments swaps accuracy and completeness.
    swapped = chamfer_distance(B1, A2)
    assert swapped["accuracy"] == pytest.approx(1.0)
    assert swapped["completeness"] == pytest.approx(acc)


def test_chamfer_constant_offset():
    # Points 1 apart on a grid, shifted by a vector of length 0.1: every nearest neighbour is the
    # partner, so all distances are exactly 0.1.
    g = np.stack(np.meshgrid(np.arange(5.0), np.arange(4.0), np.arange(3.0), indexing="ij"), -1).reshape(-1, 3)
    d = 0.1
    offset = d * np.array([2.0, -1.0, 2.0]) / 3.0
    out = chamfer_distance(g + offset, g)
    assert out["accuracy"] == pytest.approx(d)
    assert out["completeness"] == pytest.approx(d)
    assert out["chamfer_l1"] == pytest.approx(d)
    assert out["chamfer_l2"] == pytest.approx(d**2)
    assert deepsdf_chamfer(g + offset, g) == pytest.approx(2 * d**2)
    # Torch tensors (float32) give the same answer.
    out_t = chamfer_distance(torch.tensor(g + offset, dtype=torch.float32), torch.tensor(g))
    assert out_t["chamfer_l1"] == pytest.approx(d, rel=1e-5)


def test_fscore_thresholds():
    res = fscore(A2, B1, thresholds=(0.5, 1.5, 3.0))
    assert res[0.5] == (0.0, 0.0, 0.0)  # nothing within 0.5
    p, r, f = res[1.5]  # only (0,0,0) of a is within 1.5 of b; b is within 1.5 of a
    assert (p, r) == (0.5, 1.0)
    assert f == pytest.approx(2 * 0.5 * 1.0 / 1.5)
    assert res[3.0] == (1.0, 1.0, 1.0)
    # Strict "<" (OccNet): distances of exactly 1 are not within threshold 1, on either side.
    assert fscore(A2, B1, thresholds=1.0)[1.0] == (0.0, 0.0, 0.0)


def test_normal_consistency():
    pts = np.array([[0.0, 0.0, 0.0], [5.0, 0.0, 0.0], [0.0, 5.0, 0.0]])
    n = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    assert normal_consistency(pts, n, pts, -3.0 * n) == pytest.approx(1.0)  # flipped, unnormalised
    perp = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    assert normal_consistency(pts, n, pts, perp) == pytest.approx(0.0)
    # a normals (0,0,1) at both points, b normal (0,3,4)/5 at (0,1,0): |cos| = 0.8 both ways.
    nc = normal_consistency(A2, [[0, 0, 1.0], [0, 0, 1.0]], B1, [[0.0, 3.0, 4.0]])
    assert nc == pytest.approx(0.8)


def test_sample_surface_seeded_on_box():
    box = trimesh.creation.box(extents=(1.0, 1.0, 1.0))
    p1, n1 = sample_surface(box, 500, seed=3)
    p2, n2 = sample_surface(box, 500, seed=3)
    p3, _ = sample_surface(box, 500, seed=4)
    np.testing.assert_array_equal(p1, p2)
    np.testing.assert_array_equal(n1, n2)
    assert not np.array_equal(p1, p3)
    assert p1.shape == (500, 3) and n1.shape == (500, 3)
    np.testing.assert_allclose(np.abs(p1).max(axis=1), 0.5, atol=1e-9)  # on the surface
    np.testing.assert_allclose(np.linalg.norm(n1, axis=1), 1.0, atol=1e-9)
    # Outward face normal: the axis where |p| = 0.5, with the sign of that coordinate.
    axis = np.argmax(np.abs(n1), axis=1)
    rows = np.arange(500)
    np.testing.assert_allclose(np.abs(p1[rows, axis]), 0.5, atol=1e-9)
    np.testing.assert_array_equal(np.sign(n1[rows, axis]), np.sign(p1[rows, axis]))


def test_evaluate_mesh_concentric_spheres():
    pred = trimesh.creation.icosphere(subdivisions=4, radius=1.0)
    gt = trimesh.creation.icosphere(subdivisions=4, radius=1.1)
    out = evaluate_mesh(pred, gt, n_points=20_000, thresholds=(0.05, 0.2))
    # Concentric spheres 0.1 apart (icosphere faces sag < 0.002 below the radius); the sample
    # spacing (~0.03) adds a little to each nearest-neighbour distance, never subtracts.
    assert out["accuracy"] == pytest.approx(0.1, abs=0.005)
    assert out["completeness"] == pytest.approx(0.1, abs=0.005)
    assert out["chamfer_l1"] == pytest.approx(0.1, abs=0.005)
    assert out["deepsdf_chamfer"] == pytest.approx(2 * out["chamfer_l2"])
    assert out["normal_consistency"] > 0.99
    assert out["fscore@0.05"] == 0.0 and out["precision@0.05"] == 0.0
    assert out["fscore@0.2"] == 1.0 and out["recall@0.2"] == 1.0
    # Points only: no normals, so no normal consistency.
    pts = evaluate_mesh(sample_surface(pred, 1000)[0], gt, n_points=1000)
    assert "normal_consistency" not in pts
    # (points, normals) tuples carry normals.
    tup = evaluate_mesh(sample_surface(pred, 1000), sample_surface(gt, 1000, seed=1))
    assert tup["normal_consistency"] > 0.99


def test_psnr_known_values():
    target = np.full((4, 5, 3), 0.5)
    assert psnr(target + 0.1, target) == pytest.approx(20.0)  # MSE 0.01
    assert psnr(torch.tensor(target - 0.1), torch.tensor(target)) == pytest.approx(20.0)
    assert psnr(np.full((2, 2, 3), 25.5), np.zeros((2, 2, 3)), max_value=255.0) == pytest.approx(20.0)
    assert psnr(target, target) == math.inf
    # Two pixels, errors 0.1 and 0.3 on every channel: MSE = (0.01 + 0.09) / 2 = 0.05.
    pred = np.array([[[0.1] * 3, [0.3] * 3]])
    assert psnr(pred, np.zeros_like(pred)) == pytest.approx(10 * math.log10(1 / 0.05))


def test_psnr_mask_ignores_outside():
    target = np.zeros((4, 4, 3))
    pred = np.ones((4, 4, 3))  # error 1 everywhere ...
    mask = np.zeros((4, 4), dtype=bool)
    mask[1:3, 1:3] = True
    pred[mask] = 0.1  # ... except error 0.1 inside the mask
    assert psnr(pred, target, mask) == pytest.approx(20.0)
    assert psnr(pred, target, mask.astype(np.float32)) == pytest.approx(20.0)
    # Unmasked: MSE = (12 * 1 + 4 * 0.01) / 16.
    assert psnr(pred, target) == pytest.approx(10 * math.log10(16 / 12.04))
    with pytest.raises(ValueError, match="mask"):
        psnr(pred, target, np.zeros((4, 4), dtype=bool))
    with pytest.raises(ValueError, match="mask"):
        psnr(pred, target, np.ones((4, 3), dtype=bool))
    with pytest.raises(ValueError, match="target"):
        psnr(pred, target[:, :2])


def test_mask_iou():
    assert mask_iou([1, 1, 0, 0], [0, 1, 1, 0]) == pytest.approx(1 / 3)
    assert mask_iou(np.zeros((3, 3), bool), np.zeros((3, 3), bool)) == 1.0
    assert mask_iou(torch.ones(2, 2, dtype=torch.bool), torch.zeros(2, 2, dtype=torch.bool)) == 0.0
    with pytest.raises(ValueError, match="gt_mask"):
        mask_iou(np.zeros((2, 2)), np.zeros((2, 3)))


@pytest.mark.parametrize(
    "a,b,name",
    [
        (np.zeros((4, 2)), np.zeros((4, 3)), "points_a"),
        (np.zeros((4, 3)), np.zeros((0, 3)), "points_b"),
        (np.zeros(3), np.zeros((4, 3)), "points_a"),
        (np.array([[0.0, np.nan, 0.0]]), np.zeros((1, 3)), "points_a"),
    ],
)
def test_bad_points_raise(a, b, name):
    with pytest.raises(ValueError, match=name):
        chamfer_distance(a, b)
    with pytest.raises(ValueError, match=name):
        fscore(a, b)


def test_bad_normals_and_thresholds_raise():
    with pytest.raises(ValueError, match="normals_b"):
        normal_consistency(A2, np.ones((2, 3)), B1, np.ones((2, 3)))
    with pytest.raises(ValueError, match="thresholds"):
        fscore(A2, B1, thresholds=(-1.0,))
    with pytest.raises(ValueError, match="n_points"):
        evaluate_mesh(A2, B1, n_points=0)
