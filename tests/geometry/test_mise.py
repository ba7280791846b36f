"""MISE extraction: the same grid values as a literal octree re-statement of mise.pyx, the same mesh
as dense marching cubes with far fewer queries, DVR's refinement and vertex colours."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import trimesh

from taichi_sdf.geometry.mise import _marching_cubes, _mise_grid, dense_extract, mise_extract, refine_mesh
from taichi_sdf.train.metrics import chamfer_distance
from tests.helpers import Recorder

RADIUS = 0.3


def sphere_logit(p):  # occupancy logit, positive inside; [M, 3] -> [M]
    return 20.0 * (RADIUS - p.norm(dim=-1))


def torus_logit(p):  # ring radius 0.25, tube 0.1, around z
    ring = torch.sqrt(p[:, 0] ** 2 + p[:, 1] ** 2) - 0.25
    return 30.0 * (0.1 - torch.sqrt(ring**2 + p[:, 2] ** 2))


def blobs_logit(p):  # a lumpy field with thin necks and small islands, so late splits and fills happen
    centres = torch.tensor([[0.1, -0.05, 0.0], [-0.2, 0.15, 0.1], [0.27, 0.3, -0.3], [-0.31, -0.29, 0.33]])
    scales = torch.tensor([0.18, 0.12, 0.05, 0.03])
    d2 = ((p[:, None, :] - centres) ** 2).sum(-1)
    return 10.0 * (torch.exp(-d2 / (2 * scales**2)).sum(-1) - 0.5)


# ---------------------------------------------------------------------------------------------
# A literal re-statement of mise.pyx (octree of voxels, per-voxel test over its closed box, fill by
# copying along x, y, z), slow and only for tiny grids.


def reference_mise(value_at, resolution_0, depth):
    """(dense grid [R+1]^3 float64, list of queried integer points in query order)."""
    res = resolution_0 << depth
    known = {}
    leaves = {}  # voxel origin -> level
    size0 = 1 << depth
    for ijk in itertools.product(range(resolution_0), repeat=3):
        leaves[tuple(size0 * c for c in ijk)] = 0
    pending = sorted(itertools.product(range(0, res + 1, size0), repeat=3))
    queried = []
    while pending:
        for point in pending:
            known[point] = value_at(point)
        queried.extend(pending)
        split = []
        for origin, level in leaves.items():
            if level == depth:
                continue
            s = 1 << (depth - level)
            values = [
                known[q]
                for q in itertools.product(*(range(o, o + s + 1) for o in origin))
                if q in known  # points on the closed box, from this voxel or finer neighbours
            ]
            if any(v >= 0 for v in values) and any(v <= 0 for v in values):
                split.append((origin, level))
        new = set()
        for origin, level in split:
            del leaves[origin]
            half = 1 << (depth - level - 1)
            for off in itertools.product((0, 1), repeat=3):
                leaves[tuple(o + half * d for o, d in zip(origin, off))] = level + 1
            for off in itertools.product((0, 1, 2), repeat=3):
                q = tuple(o + half * d for o, d in zip(origin, off))
                if q not in known:
                    new.add(q)
        pending = sorted(new)
    dense = np.full((res + 1,) * 3, np.nan)
    for q, v in known.items():
        dense[q] = v
    for i, j, k in itertools.product(range(1, res + 1), range(res + 1), range(res + 1)):
        if np.isnan(dense[i, j, k]):
            dense[i, j, k] = dense[i - 1, j, k]
    for i, j, k in itertools.product(range(res + 1), range(1, res + 1), range(res + 1)):
        if np.isnan(dense[i, j, k]):
            dense[i, j, k] = dense[i, j - 1, k]
    for i, j, k in itertools.product(range(res + 1), range(res + 1), range(1, res + 1)):
        if np.isnan(dense[i, j, k]):
            dense[i, j, k] = dense[i, j, k - 1]
    return dense, queried


class IntField:
    """z at integer grid points (what `_mise_grid` asks its evaluator for), counting queries."""

    def __init__(self, fn, res):
        self.fn, self.res, self.count, self.seen = fn, res, 0, []

    def point(self, ijk):
        return torch.as_tensor(np.asarray(ijk, dtype=np.float64) / self.res - 0.5, dtype=torch.float32)

    def __call__(self, ijk):
        self.count += len(ijk)
        self.seen.append(ijk.copy())
        with torch.no_grad():
            return self.fn(self.point(ijk).reshape(-1, 3)).double().numpy()


@pytest.mark.parametrize(
    "fn, resolution_0, depth",
    [(sphere_logit, 4, 2), (blobs_logit, 4, 2), (blobs_logit, 3, 2), (torus_logit, 8, 1), (blobs_logit, 2, 3)],
)
def test_mise_grid_matches_literal_octree(fn, resolution_0, depth):
    res = resolution_0 << depth
    field = IntField(fn, res)
    grid, rounds = _mise_grid(field, resolution_0, depth)
    ref_dense, ref_queried = reference_mise(lambda q: float(field.fn(field.point(q)[None])[0]), resolution_0, depth)
    queried = np.concatenate(field.seen)
    # The same points, each asked for once, and the same completed grid.
    assert field.count == len(ref_queried) == len(queried)
    assert len(np.unique(queried, axis=0)) == len(queried)
    assert set(map(tuple, queried.tolist())) == set(ref_queried)
    assert field.count < (res + 1) ** 3
    assert rounds >= 2
    np.testing.assert_allclose(grid, ref_dense.astype(np.float32), rtol=0, atol=0)


def mesh_euler(mesh):
    return len(mesh.vertices) - len(mesh.edges_unique) + len(mesh.faces)


@pytest.mark.parametrize("fn, euler", [(sphere_logit, 2), (torus_logit, 0)])
def test_mise_mesh_equals_dense_mesh_with_fewer_queries(fn, euler):
    mise = mise_extract(fn, resolution_0=8, upsampling_steps=2, refinement_steps=0)
    dense = dense_extract(fn, 32)
    assert mise.resolution == dense.resolution == 32
    assert dense.num_queries == 33**3
    assert mise.num_queries < 0.3 * dense.num_queries
    for res in (mise, dense):
        assert res.mesh.is_watertight and res.mesh.volume > 0  # closed, faces wound outwards
        assert mesh_euler(res.mesh) == euler
    # The surface cells are all refined, so the meshes agree vertex for vertex.
    np.testing.assert_allclose(
        np.sort(mise.mesh.vertices.view("f8,f8,f8"), axis=0).view(np.float64).reshape(-1, 3),
        np.sort(dense.mesh.vertices.view("f8,f8,f8"), axis=0).view(np.float64).reshape(-1, 3),
        atol=1e-12,
    )
    chamfer = chamfer_distance(mise.mesh.vertices, dense.mesh.vertices)
    assert chamfer["chamfer_l1"] < 1e-9


def test_num_queries_counts_every_point_once():
    rec = Recorder(blobs_logit)
    res = mise_extract(rec, resolution_0=4, upsampling_steps=2, batch_points=97, refinement_steps=0)
    ijk = rec.grid_indices(np.full(3, -0.5), np.full(3, 1.0 / 16))
    assert res.num_queries == len(ijk)
    assert len(np.unique(ijk, axis=0)) == len(ijk)  # no corner is evaluated twice
    assert max(len(p) for p in rec.points) <= 97  # batches are bounded
    assert ijk.min() == 0 and ijk.max() == 16


def test_sphere_volume_and_box_placement():
    res = mise_extract(sphere_logit, resolution_0=8, upsampling_steps=2, refinement_steps=0)
    v = res.mesh.vertices
    assert np.abs(np.linalg.norm(v, axis=1) - RADIUS).max() < 1.0 / 32  # within one voxel
    assert res.mesh.volume == pytest.approx(4 / 3 * np.pi * RADIUS**3, rel=0.03)
    # A shifted box moves the grid, not the surface: vertices stay on the same sphere.
    shifted = mise_extract(sphere_logit, resolution_0=8, upsampling_steps=2, box=(-0.45, 0.55), refinement_steps=0)
    assert np.abs(np.linalg.norm(shifted.mesh.vertices, axis=1) - RADIUS).max() < 1.0 / 32
    # padding grows the box about its centre (DVR: box_size = 1 + padding).
    padded = dense_extract(lambda p: 20.0 * (0.45 - p.abs().max(dim=-1).values), 8, padding=0.5)
    assert np.abs(padded.mesh.bounds).max() == pytest.approx(0.45, abs=0.75 / 8)


def test_sdf_negative_inside_gives_the_same_surface():
    occ = mise_extract(sphere_logit, resolution_0=8, upsampling_steps=1, refinement_steps=0)
    sdf = mise_extract(
        lambda p: p.norm(dim=-1) - RADIUS, inside="negative", resolution_0=8, upsampling_steps=1, refinement_steps=0
    )
    assert sdf.mesh.volume > 0 and sdf.mesh.is_watertight
    np.testing.assert_allclose(sdf.mesh.vertices, occ.mesh.vertices, atol=1e-6)
    # A generic level (refined as an SDF): |p| = 0.25 is the sphere of radius 0.25.
    lvl = mise_extract(lambda p: p.norm(dim=-1), level=0.25, inside="negative", resolution_0=8, upsampling_steps=1)
    assert np.abs(np.linalg.norm(lvl.mesh.vertices, axis=1) - 0.25).mean() < 2e-3


def test_threshold_is_a_probability_level():
    # sigmoid(f) = 0.9 at r = RADIUS - logit(0.9) / 20.
    res = mise_extract(sphere_logit, threshold=0.9, resolution_0=8, upsampling_steps=1, refinement_steps=0)
    r = RADIUS - np.log(9.0) / 20.0
    assert np.abs(np.linalg.norm(res.mesh.vertices, axis=1) - r).max() < 1.0 / 16


def test_multi_column_field_uses_column_zero_and_colors_vertices():
    def field(p):  # [M, 4]: logit + 3 feature columns that must be ignored for the surface
        return torch.cat([sphere_logit(p)[:, None], torch.full((len(p), 3), 1e3)], dim=1)

    res = mise_extract(
        field, resolution_0=8, upsampling_steps=1, refinement_steps=0, color_fn=lambda p: (p + 0.5).clamp(0, 1) * 1.2 - 0.1
    )
    plain = mise_extract(sphere_logit, resolution_0=8, upsampling_steps=1, refinement_steps=0)
    np.testing.assert_array_equal(res.mesh.vertices, plain.mesh.vertices)
    colors = res.mesh.visual.vertex_colors
    assert colors.shape == (len(res.mesh.vertices), 4) and colors.dtype == np.uint8
    expected = (np.clip((res.mesh.vertices.astype(np.float32) + 0.5) * 1.2 - 0.1, 0, 1) * 255).astype(np.uint8)
    assert np.abs(colors[:, :3].astype(int) - expected.astype(int)).max() <= 1
    assert (colors[:, 3] == 255).all()
    assert "color" in res.timings


def surface_error(mesh):
    pts, _ = trimesh.sample.sample_surface(mesh, 20_000, seed=1)
    return np.abs(np.linalg.norm(pts, axis=1) - RADIUS).mean()


def test_refinement_moves_the_surface_toward_the_true_sphere():
    def saturating(p):  # logits that saturate away from the surface, as trained networks do
        return 4.0 * torch.tanh(40.0 * (RADIUS - p.norm(dim=-1)))

    raw = mise_extract(saturating, resolution_0=8, upsampling_steps=1, refinement_steps=0)
    refined = mise_extract(saturating, resolution_0=8, upsampling_steps=1)  # DVR: 30 RMSprop steps, lr 1e-5
    assert np.array_equal(refined.mesh.faces, raw.mesh.faces)
    before, after = surface_error(raw.mesh), surface_error(refined.mesh)
    assert after < 0.85 * before
    stronger = refine_mesh(raw.mesh, saturating, steps=30, lr=1e-4)
    assert surface_error(stronger) < 0.4 * before
    # Deterministic by seed; another seed draws other face points.
    again = mise_extract(saturating, resolution_0=8, upsampling_steps=1)
    np.testing.assert_array_equal(again.mesh.vertices, refined.mesh.vertices)
    other = mise_extract(saturating, resolution_0=8, upsampling_steps=1, seed=1)
    assert not np.array_equal(other.mesh.vertices, refined.mesh.vertices)


def test_refinement_batches_faces():
    raw = mise_extract(sphere_logit, resolution_0=8, upsampling_steps=1, refinement_steps=0)
    calls = []

    def field(p):
        calls.append(len(p))
        return sphere_logit(p)

    refine_mesh(raw.mesh, field, steps=5, max_faces=100)
    assert calls == [100] * 5


def test_empty_and_full_fields_do_not_crash():
    empty = mise_extract(lambda p: -torch.ones(len(p)), resolution_0=4, upsampling_steps=2)
    assert len(empty.mesh.faces) == 0 and empty.num_queries == 5**3
    full = mise_extract(lambda p: torch.ones(len(p)), resolution_0=4, upsampling_steps=1, refinement_steps=0)
    assert full.mesh.is_watertight  # the padding closes it at the box
    np.testing.assert_allclose(full.mesh.bounds, [[-0.5] * 3, [0.5] * 3], atol=1e-5)


def test_marching_cubes_of_an_all_outside_grid_is_empty():
    mesh = _marching_cubes(-np.ones((3, 3, 3), np.float32), np.zeros(3), np.ones(3))
    assert mesh.faces.shape == (0, 3)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"resolution_0": 0}, "resolution_0"),
        ({"upsampling_steps": -1}, "upsampling_steps"),
        ({"threshold": 1.0}, "threshold"),
        ({"inside": "outside"}, "inside"),
        ({"box": (0.5, -0.5)}, "box"),
        ({"padding": -0.1}, "padding"),
        ({"batch_points": 0}, "batch_points"),
        ({"refine_lr": 0.0}, "refine_lr"),
        ({"refinement_steps": 1.5}, "refinement_steps"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mise_extract(sphere_logit, **kwargs)


def test_bad_fields_are_named():
    with pytest.raises(TypeError, match="fn"):
        mise_extract("not callable")
    with pytest.raises(TypeError, match="color_fn"):
        mise_extract(sphere_logit, color_fn=3)
    with pytest.raises(ValueError, match="fn: must return"):
        mise_extract(lambda p: p[:, :, None], resolution_0=2, upsampling_steps=0)
    with pytest.raises(ValueError, match="non-finite"):
        mise_extract(lambda p: torch.full((len(p),), float("nan")), resolution_0=2, upsampling_steps=0)
    with pytest.raises(ValueError, match="no gradient"):
        mise_extract(lambda p: sphere_logit(p).detach(), resolution_0=4, upsampling_steps=0, refinement_steps=1)
