"""Mesh extraction: geometry of an analytic sphere, orientation, transforms, components, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import trimesh

from taichi_sdf.geometry.meshing import extract_mesh, save_mesh

R = 0.6
RES = 48
VOXEL = 2.0 / (RES - 1)


def sphere_sdf(p: torch.Tensor, center=(0.0, 0.0, 0.0), r: float = R) -> torch.Tensor:
    return (p - torch.tensor(center, dtype=p.dtype, device=p.device)).norm(dim=-1) - r


def outward_fraction(mesh: trimesh.Trimesh, center=(0.0, 0.0, 0.0)) -> float:
    d = mesh.triangles_center - np.asarray(center)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    return float(np.mean(np.sum(d * mesh.face_normals, axis=1) > 0.5))


def test_sphere_sdf_radius_volume_normals():
    mesh = extract_mesh(sphere_sdf, resolution=RES)
    radii = np.linalg.norm(mesh.vertices, axis=1)
    assert np.abs(radii - R).max() < VOXEL
    assert mesh.is_watertight
    true_volume = 4.0 / 3.0 * math.pi * R**3
    # Signed volume: positive only if the faces are wound with outward normals.
    assert mesh.volume == pytest.approx(true_volume, rel=0.02)
    assert outward_fraction(mesh) == 1.0


def test_vertices_lie_in_bound_coordinates():
    # Off-centre box: a sphere of radius 0.25 at (2, 3, 4) meshed in [1.5, 2.5] x [2.5, 3.5] x [3.5, 4.5].
    c = (2.0, 3.0, 4.0)
    bound = ((1.5, 2.5, 3.5), (2.5, 3.5, 4.5))
    mesh = extract_mesh(lambda p: sphere_sdf(p, c, 0.25), resolution=32, bound=bound)
    voxel = 1.0 / 31
    radii = np.linalg.norm(mesh.vertices - np.array(c), axis=1)
    assert np.abs(radii - 0.25).max() < voxel
    assert outward_fraction(mesh, c) == 1.0


def test_occupancy_positive_inside_and_column_zero():
    # Logit-like field positive inside, returned as [N, 2] (second column is garbage to ignore).
    def occ(p):
        v = R - p.norm(dim=-1)
        return torch.stack([v, torch.full_like(v, 123.0)], dim=-1)

    mesh = extract_mesh(occ, resolution=RES, inside="positive")
    radii = np.linalg.norm(mesh.vertices, axis=1)
    assert np.abs(radii - R).max() < VOXEL
    assert mesh.volume == pytest.approx(4.0 / 3.0 * math.pi * R**3, rel=0.02)
    assert outward_fraction(mesh) == 1.0


def test_occupancy_probability_level():
    # Probability field sigmoid(10 (R - |p|)) at level 0.5 has the same surface |p| = R.
    mesh = extract_mesh(lambda p: torch.sigmoid(10 * (R - p.norm(dim=-1))), resolution=RES, level=0.5, inside="positive")
    assert np.abs(np.linalg.norm(mesh.vertices, axis=1) - R).max() < VOXEL
    assert outward_fraction(mesh) == 1.0


@pytest.mark.parametrize("flip", [False, True])
def test_T_world_field_scales_and_translates(flip):
    T = np.diag([2.0, 2.0, 2.0, 1.0])
    T[:3, 3] = (1.0, -2.0, 0.5)
    if flip:  # a reflection must not turn the normals inwards
        T[0, 0] = -2.0
    mesh = extract_mesh(sphere_sdf, resolution=RES, T_world_field=torch.tensor(T))
    c = (1.0, -2.0, 0.5)
    radii = np.linalg.norm(mesh.vertices - np.array(c), axis=1)
    assert np.abs(radii - 2 * R).max() < 2 * VOXEL
    assert mesh.volume == pytest.approx(8 * 4.0 / 3.0 * math.pi * R**3, rel=0.02)
    assert outward_fraction(mesh, c) == 1.0


def test_largest_component_keeps_big_sphere():
    big_c, small_c = (-0.45, 0.0, 0.0), (0.6, 0.0, 0.0)

    def two(p):
        return torch.minimum(sphere_sdf(p, big_c, 0.45), sphere_sdf(p, small_c, 0.25))

    both = extract_mesh(two, resolution=RES)
    assert len(both.split(only_watertight=False)) == 2
    big = extract_mesh(two, resolution=RES, largest_component=True)
    assert len(big.faces) < len(both.faces)
    radii = np.linalg.norm(big.vertices - np.array(big_c), axis=1)
    assert np.abs(radii - 0.45).max() < VOXEL
    assert big.volume == pytest.approx(4.0 / 3.0 * math.pi * 0.45**3, rel=0.03)


def test_chunked_equals_unchunked():
    calls = []

    def f(p):
        calls.append(p.shape[0])
        return sphere_sdf(p)

    a = extract_mesh(f, resolution=20, chunk_size=777)
    n_chunks = len(calls)
    b = extract_mesh(f, resolution=20, chunk_size=2**18)
    assert n_chunks == math.ceil(20**3 / 777) and max(calls[:n_chunks]) == 777
    assert calls[n_chunks:] == [20**3]
    np.testing.assert_array_equal(a.vertices, b.vertices)
    np.testing.assert_array_equal(a.faces, b.faces)


def test_grid_points_are_the_regular_grid():
    seen = []

    def f(p):
        seen.append(p.clone())
        return sphere_sdf(p)

    extract_mesh(f, resolution=3, chunk_size=5)
    pts = torch.cat(seen)
    assert pts.dtype == torch.float32 and pts.shape == (27, 3)
    # C order over (x, y, z): index 1 is (x=-1, y=-1, z=0), index 9 is (x=0, y=-1, z=-1).
    assert pts[1].tolist() == [-1.0, -1.0, 0.0]
    assert pts[9].tolist() == [0.0, -1.0, -1.0]
    assert pts[26].tolist() == [1.0, 1.0, 1.0]


def test_level_not_crossed_reports_range():
    with pytest.raises(ValueError, match=r"never crosses.*min value 5.*max value") as e:
        extract_mesh(lambda p: p.norm(dim=-1) + 5.0, resolution=8)
    assert "level" in str(e.value)


def test_nan_values_counted():
    # Grid x = -1 + 2 i / 7; x > 0.5 for i in {6, 7}: 2 * 8 * 8 = 128 NaNs.
    def f(p):
        v = sphere_sdf(p)
        return torch.where(p[:, 0] > 0.5, torch.full_like(v, float("nan")), v)

    with pytest.raises(ValueError, match=r"128 non-finite"):
        extract_mesh(f, resolution=8)


@pytest.mark.parametrize("res", [1, 0, 2.5, True, "64"])
def test_bad_resolution(res):
    with pytest.raises(ValueError, match="resolution"):
        extract_mesh(sphere_sdf, resolution=res)


@pytest.mark.parametrize(
    "kwargs,name",
    [
        (dict(bound=(-1, 1)), "bound"),
        (dict(bound=((1, 1, 1), (-1, -1, -1))), "bound"),
        (dict(inside="outside"), "inside"),
        (dict(chunk_size=0), "chunk_size"),
        (dict(T_world_field=np.eye(3)), "T_world_field"),
    ],
)
def test_bad_arguments_are_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        extract_mesh(sphere_sdf, resolution=8, **kwargs)


def test_bad_field_output_shape():
    with pytest.raises(ValueError, match="field_fn"):
        extract_mesh(lambda p: p.norm(dim=-1)[:-1], resolution=8)


@pytest.mark.parametrize("ext", ["ply", "obj"])
def test_save_mesh_round_trip(tmp_path, ext):
    mesh = extract_mesh(sphere_sdf, resolution=16)
    path = tmp_path / "sub" / f"sphere.{ext}"
    save_mesh(mesh, path)
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp file left
    back = trimesh.load(path, process=False)
    assert len(back.faces) == len(mesh.faces)
    np.testing.assert_allclose(back.vertices, mesh.vertices, atol=1e-5)
    with pytest.raises(ValueError, match="path"):
        save_mesh(mesh, tmp_path / "sphere.stl")


def _two_spheres_and_box(p: torch.Tensor) -> torch.Tensor:  # an exact 1-Lipschitz SDF, [N, 3] -> [N]
    a = (p - torch.tensor([0.3, 0.1, 0.0])).norm(dim=-1) - 0.35
    b = (p + torch.tensor([0.4, 0.2, 0.1])).norm(dim=-1) - 0.2
    q = (p - torch.tensor([0.0, -0.5, 0.3])).abs() - torch.tensor([0.3, 0.1, 0.2])
    box = q.clamp_min(0).norm(dim=-1) + q.max(dim=-1).values.clamp_max(0)
    return torch.minimum(torch.minimum(a, b), box)


@pytest.mark.parametrize("res", [33, 64, 97])
def test_narrow_band_gives_the_dense_mesh_with_fewer_queries(res):
    dense_stats, band_stats = {}, {}
    dense = extract_mesh(_two_spheres_and_box, resolution=res, stats=dense_stats)
    band = extract_mesh(_two_spheres_and_box, resolution=res, narrow_band=1.0, stats=band_stats)
    assert band.vertices.shape == dense.vertices.shape and band.faces.shape == dense.faces.shape
    np.testing.assert_allclose(band.vertices, dense.vertices, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(band.faces, dense.faces)
    assert dense_stats["queries"] == res**3
    if res >= 64:  # a coarse lattice of 16+ cells per axis, then refinement: well under the dense count
        assert band_stats["queries"] < 0.5 * res**3


def test_narrow_band_of_an_mlp_equals_dense():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 32), torch.nn.Softplus(beta=10), torch.nn.Linear(32, 1))
    with torch.no_grad():  # a sphere of radius 0.5 plus a small smooth bump: |grad| stays near 1

        def field(p):
            return p.norm(dim=-1) - 0.5 + 0.05 * torch.tanh(net(p)[:, 0])

    dense = extract_mesh(field, resolution=48)
    band = extract_mesh(field, resolution=48, narrow_band=2.0)
    np.testing.assert_allclose(band.vertices, dense.vertices, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(band.faces, dense.faces)


@pytest.mark.parametrize("value", [0, -1.0, True, "2"])
def test_bad_narrow_band_is_named(value):
    with pytest.raises(ValueError, match="narrow_band"):
        extract_mesh(_two_spheres_and_box, resolution=16, narrow_band=value)
