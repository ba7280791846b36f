"""The built-in procedural chairs: deterministic, one class that varies, watertight single meshes."""

import numpy as np
import pytest
import torch

from taichi_sdf.geometry.meshing import extract_mesh
from taichi_sdf.geometry.shape_family import EXTENT, chair_params, chair_parts, chair_sdf, make_shape, write_family

RES = 56  # coarse but above the legs' thickness; the default (128) is for datasets


def _first(predicate, n=200):
    return next(i for i in range(n) if predicate(chair_params(i)))


def test_params_deterministic_and_varied():
    assert chair_params(5, seed=3) == chair_params(5, seed=3)
    assert chair_params(5, seed=3) != chair_params(5, seed=4)
    params = [chair_params(i) for i in range(60)]
    assert len({p["seat_width"] for p in params}) == 60
    # Every structural variant shows up in a small family.
    for key, values in (("base", {"legs", "pedestal"}), ("back_style", {"solid", "slats", "rails"}),
                        ("leg_style", {"round", "square"}), ("arms", {True, False}),
                        ("stretchers", {"none", "sides", "h"})):  # fmt: skip
        assert {p[key] for p in params} == values, key
    with pytest.raises(ValueError, match="index"):
        chair_params(-1)
    with pytest.raises(ValueError, match="seed"):
        chair_params(0, seed=-2)


def test_sdf_is_a_distance_bound_and_fits_the_unit_cube():
    sdf = chair_sdf(chair_params(2))
    g = torch.Generator().manual_seed(0)
    a = torch.rand(4000, 3, generator=g, dtype=torch.float64) - 0.5
    b = a + 0.05 * torch.randn(4000, 3, generator=g, dtype=torch.float64)
    # 1-Lipschitz: a valid sphere-tracing bound (the smooth union keeps it).
    assert ((sdf(a) - sdf(b)).abs() <= (a - b).norm(dim=-1) * (1 + 1e-6) + 1e-9).all()
    corners = torch.tensor([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)])
    assert (sdf(corners) > 0.04).all()
    assert float(sdf(a).min()) < 0  # there is an inside
    with pytest.raises(ValueError, match="points"):
        sdf(torch.zeros(4, 2))


@pytest.mark.parametrize("variant", ["pedestal", "arms", "slats", "rails"])
def test_meshes_are_watertight_single_and_in_the_cube(variant):
    predicate = {
        "pedestal": lambda p: p["base"] == "pedestal",
        "arms": lambda p: p["arms"] and p["stretchers"] == "h",
        "slats": lambda p: p["back_style"] == "slats" and p["back_tilt_deg"] > 10,
        "rails": lambda p: p["back_style"] == "rails" and p["leg_splay"] > 0,
    }[variant]
    index = _first(predicate)
    mesh = make_shape(index, resolution=RES)
    assert mesh.is_watertight and mesh.is_winding_consistent
    assert mesh.volume > 0  # normals out
    assert len(mesh.split(only_watertight=False)) == 1
    # make_shape keeps the largest component; without that step there is one already, so no part
    # (a thin leg, a stretcher) was cut off by the grid or left floating.
    sdf = chair_sdf(chair_params(index))
    whole = extract_mesh(sdf, resolution=RES, bound=((-0.5,) * 3, (0.5,) * 3))
    assert len(whole.split(only_watertight=False)) == 1 and len(whole.faces) == len(mesh.faces)
    voxel = 1.0 / (RES - 1)
    assert np.abs(sdf(torch.from_numpy(mesh.vertices)).numpy()).max() < voxel
    lo, hi = mesh.bounds
    assert (lo > -0.5).all() and (hi < 0.5).all()
    assert abs((hi - lo).max() - EXTENT) < 2 * voxel
    assert np.argmax(hi - lo) == 1  # upright: the height is the longest side
    assert len(chair_parts(chair_params(index))) >= 6


def test_make_shape_deterministic_and_differs_between_indices():
    a, b, c = make_shape(4, resolution=40), make_shape(4, resolution=40), make_shape(5, resolution=40)
    assert np.array_equal(a.vertices, b.vertices) and np.array_equal(a.faces, b.faces)
    assert a.vertices.shape != c.vertices.shape or not np.allclose(a.vertices, c.vertices)
    assert abs(a.volume - c.volume) > 1e-4
    with pytest.raises(ValueError, match="resolution"):
        make_shape(0, resolution=8)


def test_write_family_resumes(tmp_path):
    paths = write_family(tmp_path, 3, seed=1, resolution=40, progress=False)
    assert [p.name for p in paths] == ["chair_0000.ply", "chair_0001.ply", "chair_0002.ply"]
    stamps = [p.stat().st_mtime_ns for p in paths]
    paths[1].unlink()
    again = write_family(tmp_path, 3, seed=1, resolution=40, progress=False)
    assert again == paths and all(p.is_file() for p in again)
    assert again[0].stat().st_mtime_ns == stamps[0] and again[2].stat().st_mtime_ns == stamps[2]  # skipped
    import trimesh

    m = trimesh.load(again[1], process=False)
    assert np.allclose(m.vertices, make_shape(1, seed=1, resolution=40).vertices, atol=1e-6)
    with pytest.raises(ValueError, match="count"):
        write_family(tmp_path, 0)
