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
    evaluate_occnet,
    fscore,
    mask_iou,
    mesh_contains,
    normal_consistency,
    psnr,
    sample_surface,
    write_eval_tables,
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


# ---------------------------------------------------------------------------------------------
# OccNet/DVR evaluation: evaluate_occnet, mesh_contains, write_eval_tables.

R = 0.3


def sphere_cloud(n, seed, centre=(0.0, 0.0, 0.0)):
    """Points exactly on the sphere of radius R about `centre`, and their unit normals `[n, 3]`."""
    g = np.random.default_rng(seed).normal(size=(n, 3))
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    return R * g + np.asarray(centre), g


def test_occnet_sphere_against_itself():
    mesh = trimesh.creation.icosphere(subdivisions=5, radius=R)
    pts, nrm = sphere_cloud(50_000, seed=3)
    out = evaluate_occnet(mesh, pts, nrm, n_points=50_000)
    # Point-to-point distances between two independent 50k samples of a 1.13 area sphere: about
    # half the sample spacing sqrt(1.13 / 50k) = 0.0048; the icosphere's chords add ~1e-5.
    assert out["completeness"] < 0.004 and out["accuracy"] < 0.004
    assert out["chamfer_l1"] == pytest.approx(0.5 * (out["completeness"] + out["accuracy"]))
    assert out["chamfer_l1_x10"] == pytest.approx(10 * out["chamfer_l1"])
    assert out["chamfer_l2"] == pytest.approx(0.5 * (out["completeness2"] + out["accuracy2"]))
    assert out["normal_consistency"] > 0.999
    assert out["fscore@0.01"] == 1.0 and out["precision@0.01"] == 1.0 and out["recall@0.01"] == 1.0
    assert "iou" not in out  # no occupancy points given


def test_occnet_shifted_sphere_has_the_analytic_chamfer():
    # A point at polar angle theta on one sphere is | sqrt(R^2 + d^2 - 2 R d cos theta) - R | from the
    # other; cos theta is uniform on [-1, 1] for uniform points, so the mean distance is a 1-D integral.
    d = 0.05
    u = np.linspace(-1.0, 1.0, 200_001)
    dist = np.abs(np.sqrt(R**2 + d**2 - 2 * R * d * u) - R)
    expected_l1, expected_l2 = np.trapezoid(dist, u) / 2, np.trapezoid(dist**2, u) / 2
    mesh = trimesh.creation.icosphere(subdivisions=5, radius=R)
    mesh.apply_translation([d, 0.0, 0.0])
    pts, nrm = sphere_cloud(100_000, seed=4)
    out = evaluate_occnet(mesh, pts, nrm, n_points=100_000, thresholds=(0.01, 0.2))
    assert out["completeness"] == pytest.approx(expected_l1, rel=0.03)  # symmetric: both ways the same
    assert out["accuracy"] == pytest.approx(expected_l1, rel=0.03)
    assert out["chamfer_l1"] == pytest.approx(expected_l1, rel=0.03)
    assert out["chamfer_l1_x10"] == pytest.approx(10 * expected_l1, rel=0.03)
    assert out["chamfer_l2"] == pytest.approx(expected_l2, rel=0.05)
    # The fraction within 0.01 of the other sphere, from the same distance function.
    expected_p = float(np.mean(dist <= 0.01))
    assert out["precision@0.01"] == pytest.approx(expected_p, abs=0.02)
    assert out["recall@0.01"] == pytest.approx(expected_p, abs=0.02)
    assert out["fscore@0.2"] == 1.0


def box_mesh(lo, hi):
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    return trimesh.creation.box(extents=hi - lo, transform=trimesh.transformations.translation_matrix((lo + hi) / 2))


def test_occnet_iou_of_two_cubes():
    # Prediction [-0.25, 0.25]^3, ground truth shifted by 0.1 in x: overlap 0.4 x 0.5 x 0.5 = 0.1,
    # union 0.125 + 0.125 - 0.1 = 0.15, IoU 2/3. Grid points avoid the faces (offset 0.0025).
    pred = box_mesh([-0.25] * 3, [0.25] * 3)
    axis = np.arange(-0.4975, 0.5, 0.01)
    grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    occ = np.all(np.abs(grid - [0.1, 0.0, 0.0]) < 0.25, axis=1).astype(np.float32)
    pts, nrm = trimesh.sample.sample_surface(box_mesh([-0.15, -0.25, -0.25], [0.35, 0.25, 0.25]), 2000, seed=0)
    out = evaluate_occnet(pred, pts, None, grid, occ, n_points=2000)
    assert out["iou"] == pytest.approx(2.0 / 3.0, abs=1e-9)
    assert math.isnan(out["normal_consistency"])  # no GT normals
    assert evaluate_occnet(pred, pts, None, grid, np.all(np.abs(grid) < 0.25, axis=1), n_points=2000)["iou"] == 1.0


def test_mesh_contains_nonconvex_and_open_meshes():
    rng = np.random.default_rng(0)
    torus = trimesh.creation.torus(0.3, 0.1, major_sections=64, minor_sections=32)
    p = rng.uniform(-0.5, 0.5, (20_000, 3))
    tube = np.hypot(np.hypot(p[:, 0], p[:, 1]) - 0.3, p[:, 2]) - 0.1
    far = np.abs(tube) > 0.01  # farther from the surface than the polygon's chord error
    inside = mesh_contains(torus, p)
    np.testing.assert_array_equal(inside[far], tube[far] < 0)
    assert mesh_contains(torus, p, max_pairs=1000).tolist() == inside.tolist()  # slicing changes nothing
    # A cube missing its top: rays up from inside escape, so nothing is inside (OccNet's rule).
    cube = box_mesh([-0.25] * 3, [0.25] * 3)
    open_cube = trimesh.Trimesh(cube.vertices, cube.faces[cube.face_normals[:, 2] < 0.5], process=False)
    q = rng.uniform(-0.2, 0.2, (100, 3))
    assert mesh_contains(cube, q).all() and not mesh_contains(open_cube, q).any()
    assert not mesh_contains(cube, q + 1.0).any()


def test_occnet_empty_mesh_gets_dvrs_fixed_scores():
    pts, nrm = sphere_cloud(100, seed=0)
    empty = trimesh.Trimesh(np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64))
    out = evaluate_occnet(empty, pts, nrm, pts, np.ones(100))
    assert out["completeness"] == out["accuracy"] == pytest.approx(math.sqrt(3))
    assert out["completeness2"] == out["accuracy2"] == 3.0
    assert out["chamfer_l2"] == 6.0  # eval.py EMPTY_PCL_DICT['chamfer'], as written there
    assert out["chamfer_l1"] == pytest.approx(math.sqrt(3)) and out["chamfer_l1_x10"] == pytest.approx(10 * math.sqrt(3))
    assert out["normal_consistency"] == -1.0 and out["iou"] == 0.0 and out["fscore@0.01"] == 0.0


def test_occnet_open_mesh_does_not_crash():
    pts, nrm = sphere_cloud(500, seed=0)
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=R)
    half = trimesh.Trimesh(sphere.vertices, sphere.faces[sphere.triangles_center[:, 2] < 0], process=False)
    grid = np.random.default_rng(1).uniform(-0.5, 0.5, (2000, 3))
    out = evaluate_occnet(half, pts, nrm, grid, np.linalg.norm(grid, axis=1) < R, n_points=1000)
    assert 0.0 <= out["iou"] < 0.5 and out["completeness"] > out["accuracy"]


def test_occnet_bad_inputs_are_named():
    mesh = trimesh.creation.icosphere(subdivisions=1, radius=R)
    pts, nrm = sphere_cloud(10, seed=0)
    with pytest.raises(TypeError, match="mesh"):
        evaluate_occnet(pts, pts, nrm)
    with pytest.raises(ValueError, match="gt_points"):
        evaluate_occnet(mesh, pts[:, :2], nrm)
    with pytest.raises(ValueError, match="gt_normals"):
        evaluate_occnet(mesh, pts, nrm[:5])
    with pytest.raises(ValueError, match="occ_points, occ_gt"):
        evaluate_occnet(mesh, pts, nrm, occ_points=pts)
    with pytest.raises(ValueError, match="occ_gt"):
        evaluate_occnet(mesh, pts, nrm, pts, np.ones(3))
    with pytest.raises(ValueError, match="n_points"):
        evaluate_occnet(mesh, pts, nrm, n_points=0)


def test_write_eval_tables(tmp_path):
    rows = [
        {"instance": "a1", "class": "chair", "chamfer_l1": 0.1, "iou": 0.5},
        {"instance": "a2", "class": "chair", "chamfer_l1": 0.3, "iou": math.nan},
        {"instance": "b1", "class": "car", "chamfer_l1": 0.6, "iou": 0.9},
    ]
    paths = write_eval_tables(rows, tmp_path / "eval")
    import csv
    import json

    with open(paths["full_csv"]) as fh:
        full = list(csv.DictReader(fh))
    assert [r["instance"] for r in full] == ["a1", "a2", "b1"] and full[2]["chamfer_l1"] == "0.6"
    with open(paths["class_csv"]) as fh:
        table = {r["class"]: r for r in csv.DictReader(fh)}
    assert list(table) == ["car", "chair", "mean"]
    assert table["chair"]["n"] == "2" and float(table["chair"]["chamfer_l1"]) == pytest.approx(0.2)
    assert float(table["chair"]["iou"]) == pytest.approx(0.5)  # NaN rows ignored, as pandas does
    # "mean" = the mean of the class means, not of the rows: (0.6 + 0.2) / 2, and (0.9 + 0.5) / 2.
    assert float(table["mean"]["chamfer_l1"]) == pytest.approx(0.4)
    assert float(table["mean"]["iou"]) == pytest.approx(0.7) and table["mean"]["n"] == "3"
    with open(paths["class_json"]) as fh:
        js = json.load(fh)
    assert [r["class"] for r in js] == ["car", "chair", "mean"] and js[1]["chamfer_l1"] == pytest.approx(0.2)
    # A class with only NaN gets null in JSON; rows without "class" land in "n/a".
    paths = write_eval_tables([{"iou": math.nan, "chamfer_l1": 1.0}], tmp_path / "two")
    with open(paths["class_json"]) as fh:
        js = json.load(fh)
    assert js[0] == {"class": "n/a", "n": 1, "iou": None, "chamfer_l1": 1.0}
    with pytest.raises(ValueError, match="rows"):
        write_eval_tables([], tmp_path)
    with pytest.raises(TypeError, match="rows"):
        write_eval_tables({"iou": 1.0}, tmp_path)
