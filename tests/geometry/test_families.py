"""The procedural classes (tables, airplanes, and the chairs through the registry): exact primitive
SDFs, deterministic and varied parameters, watertight single meshes that fill the unit cube."""

import numpy as np
import pytest
import torch

from taichi_sdf.geometry import airplanes, shape_family, tables
from taichi_sdf.geometry.families import CLASSES, class_params, class_sdf, make_class_shape
from taichi_sdf.geometry.parts import part_aabb, part_sdf, prism, rotation_z, round_cone
from taichi_sdf.geometry.shape_family import EXTENT, _box

RES = 64  # above the thinnest parts (airplane tails: ~2 voxels); datasets use 128


def _points(n=3000, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return scale * (torch.rand(n, 3, generator=g, dtype=torch.float64) - 0.5)


def test_round_cone_is_exact():
    p = _points(scale=2.0)
    a, b = np.array([0.1, -0.2, 0.0]), np.array([-0.3, 0.4, 0.2])
    # equal radii: a capsule, distance to the segment minus the radius
    ab = torch.from_numpy(b - a)
    t = ((p - torch.from_numpy(a)) @ ab / (ab @ ab)).clamp(0, 1)
    capsule = (p - torch.from_numpy(a) - t[:, None] * ab).norm(dim=-1) - 0.15
    torch.testing.assert_close(part_sdf(p, round_cone(a, b, 0.15, 0.15)), capsule)
    # unequal radii: zero on the surface, and |grad| = 1 (finite differences)
    cone = round_cone(a, b, 0.2, 0.05)
    d = part_sdf(p, cone)
    eps = 1e-6
    grad = torch.stack(
        [(part_sdf(p + eps * e, cone) - part_sdf(p - eps * e, cone)) / (2 * eps) for e in torch.eye(3, dtype=p.dtype)], -1
    )
    torch.testing.assert_close(grad.norm(dim=-1), torch.ones_like(d), atol=1e-5, rtol=0)
    on = p - d[:, None] * grad  # projected onto the surface
    assert part_sdf(on, cone).abs().max() < 1e-6
    lo, hi = part_aabb(cone)
    assert (on.numpy() >= lo - 1e-9).all() and (on.numpy() <= hi + 1e-9).all()
    with pytest.raises(ValueError, match="round_cone"):
        round_cone(a, a + 0.01, 0.2, 0.05)


def test_prism_matches_a_box_and_a_rotated_triangle():
    p = _points(seed=1)
    R = rotation_z(0.3) @ np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])
    rect = prism((0.05, 0.0, -0.1), [(-0.2, -0.1), (0.2, -0.1), (0.2, 0.1), (-0.2, 0.1)], 0.05, R)
    box = _box((0.05, 0.0, -0.1), (0.2, 0.05, 0.1), 0.0, R)
    torch.testing.assert_close(part_sdf(p, rect), part_sdf(p, box))
    lo, hi = part_aabb(rect)
    blo, bhi = shape_family._aabb(box)
    np.testing.assert_allclose(lo, blo, atol=1e-12)
    np.testing.assert_allclose(hi, bhi, atol=1e-12)
    # a triangle (both windings): inside exactly where the 2D point is inside and |y| < half
    for tri in ([(0, 0), (0.3, 0), (0, 0.3)], [(0, 0), (0, 0.3), (0.3, 0)]):
        d = part_sdf(p, prism((0, 0, 0), tri, 0.1))
        x, y, z = p.unbind(-1)
        inside = (x > 0) & (z > 0) & (x + z < 0.3) & (y.abs() < 0.1)
        assert torch.equal(d < 0, inside)


@pytest.mark.parametrize("name, params_fn", [("table", tables.table_params), ("airplane", airplanes.airplane_params)])
def test_params_deterministic_and_varied(name, params_fn):
    assert params_fn(5, seed=3) == params_fn(5, seed=3) == class_params(name, 5, 3)
    assert params_fn(5, seed=3) != params_fn(5, seed=4)
    params = [params_fn(i) for i in range(60)]
    variants = {"table": {"top": {"rect", "round"}, "base": {"legs", "pedestal", "trestle", "panels"}, "apron": {True, False},
                          "shelf": {True, False}, "stretchers": {"none", "sides", "h"}, "foot": {"disc", "cross"}},
                "airplane": {"engines": {0, 2, 4}, "tail": {"conventional", "t_tail"}, "wing_mount": {"low", "mid", "high"}}}[name]  # fmt: skip
    for key, values in variants.items():
        assert {p[key] for p in params} == values, key
    with pytest.raises(ValueError, match="index"):
        params_fn(-1)
    with pytest.raises(ValueError, match="seed"):
        params_fn(0, seed=1.5)


@pytest.mark.parametrize("name", CLASSES)
def test_sdfs_are_distance_bounds_in_the_unit_cube(name):
    for index in range(3):
        sdf = class_sdf(name, index)
        a = _points(4000, seed=index)
        b = a + 0.05 * torch.randn(4000, 3, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
        assert ((sdf(a) - sdf(b)).abs() <= (a - b).norm(dim=-1) * (1 + 1e-6) + 1e-9).all()  # 1-Lipschitz
        corners = torch.tensor([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)])
        assert (sdf(corners) > 0.04).all() and float(sdf(a).min()) < 0
    with pytest.raises(ValueError, match="points"):
        sdf(torch.zeros(3, 2))


def _first(params_fn, predicate, n=200):
    return next(i for i in range(n) if predicate(params_fn(i)))


VARIANTS = [
    ("table", lambda p: p["base"] == "legs" and p["shelf"] and p["apron"]),
    ("table", lambda p: p["base"] == "pedestal" and p["top"] == "round" and p["foot"] == "cross"),
    ("table", lambda p: p["base"] == "trestle"),
    ("table", lambda p: p["base"] == "panels"),
    ("airplane", lambda p: p["engines"] == 4 and p["tail"] == "t_tail"),
    ("airplane", lambda p: p["engines"] == 2 and p["wing_mount"] == "low"),
]


@pytest.mark.parametrize("name, predicate", VARIANTS)
def test_meshes_are_watertight_single_and_fill_the_cube(name, predicate):
    index = _first(lambda i: class_params(name, i), predicate)
    mesh = make_class_shape(name, index, resolution=RES)
    assert mesh.is_watertight and mesh.is_winding_consistent and mesh.volume > 0
    assert len(mesh.split(only_watertight=False)) == 1
    assert mesh.metadata["name"] == f"{name}_{index:04d}"
    lo, hi = mesh.bounds
    assert (lo > -0.5).all() and (hi < 0.5).all()
    # every extremity survived the meshing: the longest side is EXTENT within a voxel, centred
    assert abs(float(mesh.extents.max()) - EXTENT) < 1.5 / (RES - 1)
    np.testing.assert_allclose((lo + hi) / 2, 0.0, atol=1.5 / (RES - 1))


def test_registry():
    assert CLASSES == ("chair", "table", "airplane")
    assert class_params("chair", 4, 1) == shape_family.chair_params(4, 1)
    a = make_class_shape("chair", 4, seed=1, resolution=40)
    b = shape_family.make_shape(4, seed=1, resolution=40)
    assert np.array_equal(a.vertices, b.vertices) and np.array_equal(a.faces, b.faces)
    with pytest.raises(ValueError, match="class_name: expected one of"):
        make_class_shape("sofa", 0)
    with pytest.raises(ValueError, match="resolution"):
        make_class_shape("table", 0, resolution=16)
