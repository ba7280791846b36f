"""DIST's fast mesher: the upsampling, the query set the band implies, the dense mesh reproduced,
DIST's own rules re-stated literally, surface samples on a sphere, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from taichi_sdf.geometry.fast_mesh import fast_extract, sdf_to_points, upsample_grid
from taichi_sdf.geometry.meshing import extract_mesh, grid_marching_cubes
from tests.helpers import Recorder

R = 0.5
# Field values depend on a point's row in its batch at the ulp level (DESIGN section 6), and the
# fast mesher batches points differently from dense extraction: vertices agree to float32 rounding.
ULP_ATOL = 1e-5


def sphere_sdf(p):  # [M, 3] -> [M]
    return p.norm(dim=-1) - R


def bumped_sphere(seed: int = 0):
    """A sphere with random MLP bumps (amplitude 0.05); its gradient norm stays within ~[0.95, 1.05]."""
    gen = torch.Generator().manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Linear(3, 32), torch.nn.Tanh(), torch.nn.Linear(32, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1)
    )
    with torch.no_grad():
        for param in net.parameters():
            param.copy_(torch.randn(param.shape, generator=gen) / param.shape[-1] ** 0.5)
    net.requires_grad_(False)
    return lambda p: p.norm(dim=-1) - R + 0.05 * torch.tanh(net(4.0 * p)[:, 0])


def grid_points(res: int) -> torch.Tensor:  # [res, res, res, 3] float64 over [-1, 1]^3, corners included
    axis = torch.linspace(-1.0, 1.0, res, dtype=torch.float64)
    return torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1)


def same_mesh(a, b) -> bool:
    return (
        a.vertices.shape == b.vertices.shape
        and np.abs(a.vertices - b.vertices).max() < ULP_ATOL
        and np.array_equal(a.faces, b.faces)
    )


def hausdorff(a, b) -> float:
    return max(cKDTree(b.vertices).query(a.vertices)[0].max(), cKDTree(a.vertices).query(b.vertices)[0].max())


# ---------------------------------------------------------------------------------------------
# upsample_grid


def test_cubic_upsampling_is_exact_for_quadratics():
    # Catmull-Rom reproduces degree-2 polynomials; the quadratic ghost samples keep that at the
    # box faces. Sizes that are not multiples of each other put fine samples anywhere in a cell.
    gen = torch.Generator().manual_seed(1)
    c = torch.randn(10, generator=gen, dtype=torch.float64)

    def poly(x, y, z):  # per-axis degree <= 2, with cross terms
        return c[0] + c[1] * x + c[2] * y**2 + c[3] * z + c[4] * x * y + c[5] * x**2 * z**2 + c[6] * y * z + c[7] * x**2 * y

    def sample(shape):
        axes = [torch.linspace(-1.0, 1.0, n, dtype=torch.float64) for n in shape]
        return poly(*torch.meshgrid(*axes, indexing="ij"))

    up = upsample_grid(sample((5, 6, 7)), (9, 13, 8))
    torch.testing.assert_close(up, sample((9, 13, 8)), rtol=0, atol=1e-12)


def test_cubic_upsampling_interpolates_the_coarse_samples():
    coarse = torch.randn(16, 16, 16, generator=torch.Generator().manual_seed(2))
    up = upsample_grid(coarse, (31, 31, 31))  # every other fine sample sits on a coarse one
    assert torch.equal(up[::2, ::2, ::2], coarse)


def test_nearest_upsampling_is_dists_tiling():
    coarse = torch.randn(4, 5, 6, generator=torch.Generator().manual_seed(3))
    tiled = np.repeat(np.repeat(np.repeat(coarse.numpy(), 2, axis=0), 3, axis=1), 2, axis=2)  # create_mesh.py tile()
    assert torch.equal(upsample_grid(coarse, (8, 15, 12), mode="nearest"), torch.from_numpy(tiled))


def test_upsample_grid_bad_input():
    with pytest.raises(TypeError, match="values"):
        upsample_grid(np.zeros((4, 4, 4)), (8, 8, 8))
    with pytest.raises(ValueError, match="values"):
        upsample_grid(torch.zeros(4, 4), (8, 8, 8))
    with pytest.raises(ValueError, match="mode"):
        upsample_grid(torch.zeros(4, 4, 4), (8, 8, 8), mode="linear")
    with pytest.raises(ValueError, match="size"):
        upsample_grid(torch.zeros(4, 4, 4), (8, 8))
    with pytest.raises(ValueError, match="cubic"):
        upsample_grid(torch.zeros(2, 4, 4), (8, 8, 8))
    with pytest.raises(ValueError, match="nearest"):
        upsample_grid(torch.zeros(4, 4, 4), (9, 8, 8), mode="nearest")


# ---------------------------------------------------------------------------------------------
# fast_extract


@pytest.mark.parametrize("res, coarse", [(32, 16), (31, 16)])
@pytest.mark.parametrize("field", ["sphere", "bumped"])
def test_default_band_gives_the_dense_mesh_with_fewer_queries(field, res, coarse):
    # The corners of crossing voxels lie within sqrt(3) fine voxels (~0.87 coarse voxels) of the
    # surface for a field with gradient norm ~1; the 1.5-coarse-voxel band covers them with room
    # for the upsampling error, so marching cubes sees the same values as on the dense grid.
    fn = sphere_sdf if field == "sphere" else bumped_sphere()
    mesh, stats = fast_extract(fn, res, coarse)
    dense = extract_mesh(fn, res)
    assert same_mesh(mesh, dense)
    assert stats.coarse_queries == coarse**3 and stats.dense_queries == res**3
    assert stats.num_queries == stats.coarse_queries + stats.fine_queries
    # The band is a shell ~2 * 1.5 coarse voxels thick around a sphere of area 4 pi R^2.
    shell = 4 * np.pi * R**2 * 2 * 1.5 * 2 / (coarse - 1) / (2 / (res - 1)) ** 3
    assert 0.5 * shell < stats.fine_queries < 1.5 * shell
    assert stats.query_share < 0.5
    assert set(stats.timings) == {"coarse", "upsample", "fine", "marching_cubes", "total"}


@pytest.mark.parametrize("band", [1.5, 0.6])
def test_queried_points_are_the_band(band):
    res, coarse = 32, 16
    fn = Recorder(sphere_sdf)
    _, stats = fast_extract(fn, res, coarse, band=band)
    points = torch.cat(fn.points).double()
    assert len(points) == stats.num_queries
    fine = points[coarse**3 :]
    assert len(fine) == len(torch.unique(fine, dim=0))  # each fine point once
    voxel = 2 / (coarse - 1)
    width = band * voxel
    # Near the surface the upsampled field is within `err` of the true distance (measured here,
    # and small: Catmull-Rom on a smooth field), so the queried points are pinned between the
    # shells |d| <= width -+ err of the analytic SDF.
    exact = sphere_sdf(grid_points(res).reshape(-1, 3)).reshape(res, res, res)
    upsampled = upsample_grid(sphere_sdf(grid_points(coarse).reshape(-1, 3)).reshape((coarse,) * 3).float(), (res,) * 3)
    near = exact.abs() <= width + voxel
    err = float((upsampled.double() - exact)[near].abs().max())
    assert err < 0.05 * voxel
    assert stats.fine_queries == int((upsampled.abs() <= width).sum())
    ijk = torch.round((fine + 1.0) * (res - 1) / 2).long()  # grid indices of the queried points
    queried = torch.zeros(res, res, res, dtype=torch.bool)
    queried[tuple(ijk.T)] = True
    assert bool(queried[exact.abs() <= width - err - 1e-6].all())
    assert not bool(queried[exact.abs() > width + err + 1e-6].any())


def test_infinite_band_queries_every_fine_point():
    mesh, stats = fast_extract(sphere_sdf, 24, 12, band=float("inf"))
    assert stats.fine_queries == 24**3
    assert same_mesh(mesh, extract_mesh(sphere_sdf, 24))


def test_narrow_band_approaches_the_dense_mesh():
    # With most crossing-voxel corners left at their upsampled values, the mesh keeps the dense
    # topology while every vertex stays on its grid edge: no vertex moves by a fine voxel or more.
    fn = bumped_sphere(1)
    res = 32
    dense = extract_mesh(fn, res)
    mesh, stats = fast_extract(fn, res, 16, band=0.25)
    assert stats.fine_queries < 0.25 * fast_extract(fn, res, 16)[1].fine_queries
    assert len(mesh.faces) == len(dense.faces)
    assert hausdorff(mesh, dense) < 2 / (res - 1)


def dist_reference_mesh(fn, n: int):
    """create_mesh_speedup re-stated literally in numpy (N = n, N/2 coarse, tile, check_valid, +-0.1)."""
    voxel, voxel_half = 2.0 / (n - 1), 2.0 / (n // 2 - 1)
    half = -1.0 + np.arange(n // 2) * voxel_half
    xyz = np.stack(np.meshgrid(half, half, half, indexing="ij"), -1).reshape(-1, 3)
    sdf_half = fn(torch.from_numpy(xyz).float()).numpy().reshape((n // 2,) * 3)
    up = sdf_half.repeat(2, 0).repeat(2, 1).repeat(2, 2)
    valid = np.abs(up) <= voxel_half * 1.5
    values = np.where(up > 0, 0.1, -0.1).astype(np.float32)
    full = -1.0 + np.arange(n) * voxel
    fine = np.stack(np.meshgrid(full, full, full, indexing="ij"), -1)[valid]
    values[valid] = fn(torch.from_numpy(fine).float()).numpy()
    verts, faces = grid_marching_cubes(values, 0.0, np.full(3, -1.0), np.full(3, voxel))
    return verts, faces, int(valid.sum())


def test_dist_rules_match_the_original_literally():
    fn = bumped_sphere(2)
    mesh, stats = fast_extract(fn, 32, 16, upsample="nearest", fill="constant")
    verts, faces, n_valid = dist_reference_mesh(fn, 32)
    assert stats.fine_queries == n_valid
    assert np.abs(mesh.vertices - verts).max() < ULP_ATOL and np.array_equal(mesh.faces, faces)


def test_level_and_feature_columns():
    # A field with extra columns and a non-zero level: the R + 0.1 sphere of column 0.
    fn = lambda p: torch.stack([sphere_sdf(p), torch.ones(len(p))], dim=1)  # [M, 2]
    mesh, _ = fast_extract(fn, 32, 16, level=0.1)
    assert same_mesh(mesh, extract_mesh(fn, 32, level=0.1))
    assert np.abs(np.linalg.norm(mesh.vertices, axis=1) - (R + 0.1)).max() < 2 / 31


def test_fast_extract_bad_input():
    with pytest.raises(TypeError, match="fn"):
        fast_extract("sphere", 32, 16)
    with pytest.raises(ValueError, match="coarse_resolution"):
        fast_extract(sphere_sdf, 16, 16)
    with pytest.raises(ValueError, match="coarse_resolution"):
        fast_extract(sphere_sdf, 16, 2)
    with pytest.raises(ValueError, match="resolution"):
        fast_extract(sphere_sdf, 1.5, 16)
    with pytest.raises(ValueError, match="resolution"):
        fast_extract(sphere_sdf, 33, 16, upsample="nearest")
    with pytest.raises(ValueError, match="upsample"):
        fast_extract(sphere_sdf, 32, 16, upsample="trilinear")
    with pytest.raises(ValueError, match="fill"):
        fast_extract(sphere_sdf, 32, 16, fill="zero")
    with pytest.raises(ValueError, match="band"):
        fast_extract(sphere_sdf, 32, 16, band=-1.0)
    with pytest.raises(ValueError, match="clamp"):
        fast_extract(sphere_sdf, 32, 16, clamp=0.0)
    with pytest.raises(ValueError, match="bound"):
        fast_extract(sphere_sdf, 32, 16, bound=(-1, 1))
    with pytest.raises(ValueError, match="fn.*level=0.0"):
        fast_extract(lambda p: p.norm(dim=-1) + 1.0, 32, 16)  # never crosses
    with pytest.raises(ValueError, match="fn.*level=2.0"):
        fast_extract(sphere_sdf, 32, 16, level=2.0)
    with pytest.raises(ValueError, match="fn.*non-finite"):
        fast_extract(lambda p: sphere_sdf(p) / (p[:, 0] > 0).float(), 32, 16)
    with pytest.raises(ValueError, match="fn"):
        fast_extract(lambda p: sphere_sdf(p)[:, None, None], 32, 16)


# ---------------------------------------------------------------------------------------------
# sdf_to_points


def test_sdf_to_points_lie_on_the_sphere():
    res = 32
    points, normals = sdf_to_points(sphere_sdf, 5000, resolution=res, coarse_resolution=16, seed=3, return_normals=True)
    assert points.shape == (5000, 3) and normals.shape == (5000, 3) and points.dtype == torch.float32
    radius = points.norm(dim=1)
    # Vertices sit on the sphere up to the linear interpolation of |x| - R along an edge, and a
    # flat triangle's interior sags inwards by at most edge^2 / (8 R) (edges <= sqrt(2) voxels):
    # both are O(h^2 / R); h^2 / R bounds their sum.
    h = 2 / (res - 1)
    assert float((radius - R).abs().max()) < h**2 / R
    assert float((normals * points / radius[:, None]).sum(dim=1).min()) > 0.95  # outward
    # Uniform by area: the centroid of uniform samples on a sphere is its centre (std ~ R / sqrt(3n)).
    assert float(points.mean(dim=0).norm()) < 5 * R / (3 * 5000) ** 0.5
    again = sdf_to_points(sphere_sdf, 5000, resolution=res, coarse_resolution=16, seed=3)
    assert torch.equal(points, again)


def test_sdf_to_points_bad_input():
    with pytest.raises(ValueError, match="n_points"):
        sdf_to_points(sphere_sdf, 0, resolution=32, coarse_resolution=16)
    with pytest.raises(ValueError, match="seed"):
        sdf_to_points(sphere_sdf, 10, resolution=32, coarse_resolution=16, seed=-1)
    with pytest.raises(ValueError, match="fn.*level"):
        sdf_to_points(lambda p: p.norm(dim=-1) + 1.0, 10, resolution=32, coarse_resolution=16)
