"""The class-mean shape baseline: occupancy grids, the IoU-chosen threshold, and the meshed mean."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from taichi_sdf.geometry.class_mean import best_threshold, class_mean_mesh, occupancy_grids


def box(x0: float, x1: float) -> trimesh.Trimesh:
    """An axis-aligned box spanning [x0, x1] in x and [-0.2, 0.2] in y and z."""
    mesh = trimesh.creation.box(extents=(x1 - x0, 0.4, 0.4))
    mesh.apply_translation(((x0 + x1) / 2, 0.0, 0.0))
    return mesh


def test_occupancy_grid_of_a_sphere_has_its_volume():
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=0.3)
    grids = occupancy_grids([sphere], resolution=48, bound=0.55)
    cell = (1.1 / 47) ** 3
    assert grids.shape == (1, 48, 48, 48) and grids.dtype == bool
    assert grids.sum() * cell == pytest.approx(sphere.volume, rel=0.05)
    assert not grids[0, 0, 0, 0] and grids[0, 24, 24, 24]


def test_best_threshold_matches_the_hand_computed_ious():
    # Nested 1D "shapes" over 4 cells: shares [1, 2/3, 1/3, 0]. Thresholded means and their IoUs with
    # A, B, C: {0,1,2}: (1/3, 2/3, 1) mean 2/3; {0,1}: (1/2, 1, 2/3) mean 13/18; {0}: (1, 1/2, 1/3) mean 11/18.
    grids = np.array([[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0]], dtype=bool)
    t, iou = best_threshold(grids, candidates=(0.3, 0.5, 0.9))
    assert t == 0.5 and iou == pytest.approx(13 / 18)
    assert best_threshold(grids, candidates=(0.3,))[1] == pytest.approx(2 / 3)
    assert best_threshold(grids, candidates=(0.9,))[1] == pytest.approx(11 / 18)


def test_mean_of_two_overlapping_boxes_is_their_union_or_intersection_by_threshold():
    boxes = [box(-0.3, 0.1), box(-0.1, 0.3)]
    union = class_mean_mesh(boxes, resolution=45, threshold=0.5)  # inside one of two: share 1/2
    inter = class_mean_mesh(boxes, resolution=45, threshold=0.75)  # inside both
    step = 1.1 / 44
    assert union.is_watertight and inter.is_watertight
    assert union.bounds[:, 0] == pytest.approx([-0.3, 0.3], abs=step)
    assert inter.bounds[:, 0] == pytest.approx([-0.1, 0.1], abs=step)
    assert union.metadata["threshold"] == 0.5
    # marching cubes of a two-valued grid bevels the edges, which costs the thin box up to a fifth
    assert union.volume == pytest.approx(0.6 * 0.16, rel=0.1) and inter.volume == pytest.approx(0.2 * 0.16, rel=0.2)


def test_default_threshold_keeps_parts_a_one_half_mean_would_erase():
    # Thin plates at three heights (a table top that moves within the class): no point is inside half
    # of them, so threshold 1/2 has no shape; the IoU-chosen threshold keeps all three plates.
    plates = []
    for z in (-0.2, 0.0, 0.2):
        plate = trimesh.creation.box(extents=(0.6, 0.6, 0.08))
        plate.apply_translation((0.0, 0.0, z))
        plates.append(plate)
    with pytest.raises(ValueError, match="no point of the grid is inside 50%"):
        class_mean_mesh(plates, resolution=40, threshold=0.5)
    mean = class_mean_mesh(plates, resolution=40)
    assert mean.metadata["threshold"] < 0.5
    assert mean.bounds[:, 2] == pytest.approx([-0.24, 0.24], abs=0.03)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"meshes": []}, "meshes: expected at least one mesh"),
        ({"resolution": 1}, "resolution: expected an int >= 2"),
        ({"bound": 0.0}, "bound: expected a positive float"),
        ({"threshold": 1.0}, r"threshold: expected a share in \(0, 1\)"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    args = {"meshes": [box(-0.1, 0.1)], "resolution": 8, "bound": 0.55} | kwargs
    with pytest.raises(ValueError, match=match):
        class_mean_mesh(**args)
