"""DeepSDF's sampler (taichi_sdf.geometry.sdf_sampling) and the `sample` app that writes its data layout."""

import json

import numpy as np
import pytest
import trimesh

from apps.deepsdf.sample import find_meshes, main, split_names
from taichi_sdf.data.deepsdf import (
    Instance,
    load_normalization,
    load_sdf_samples,
    load_split,
    load_surface_samples,
    normalize,
)
from taichi_sdf.geometry.sdf_sampling import TEST_PRESET, normalized_mesh, sample_query_points, sample_sdf

BUFFER = 1.03


def _sphere(radius=3.0, centre=(1.0, -2.0, 0.5)):
    m = trimesh.creation.icosphere(4, radius=radius)  # 5120 faces
    m.vertices += centre
    return m


def _box(extents=(2.0, 1.0, 0.6), centre=(0.3, 0.2, -0.4)):
    m = trimesh.creation.box(extents=extents)
    m.vertices += centre
    return m


def _box_sdf(p, half):
    q = np.abs(p) - half
    return np.linalg.norm(np.maximum(q, 0), axis=1) + np.minimum(q.max(1), 0)


def test_normalisation_unit_sphere_with_buffer_ignoring_stray_vertices():
    m = _box()
    stray = trimesh.Trimesh(np.vstack([m.vertices, [[50.0, 50.0, 50.0]]]), m.faces, process=False)
    v, f, offset, scale = normalized_mesh(stray)
    used = v[np.unique(f)]
    assert np.isclose(np.linalg.norm(used, axis=1).max(), 1 / BUFFER, atol=1e-12)
    assert np.allclose(0.5 * (used.min(0) + used.max(0)), 0, atol=1e-12)  # bounding-box centre at the origin
    assert np.allclose(normalize(m.vertices, offset, scale), used)
    assert np.allclose(offset, -np.array([0.3, 0.2, -0.4]))


def test_counts_variances_and_placement():
    # A flat square z = 0 covering [-1, 1]^2: the z coordinate of a near-surface point is its noise.
    square = np.array([[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]], dtype=float)
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    rng = np.random.default_rng(0)
    pts, n_near = sample_query_points(square, faces, 100_000, 0.005, 0.0005, 47 / 50, rng)
    assert pts.shape == (100_000, 3) and n_near == 94_000  # 47:3
    first, second, uniform = pts[:n_near:2], pts[1:n_near:2], pts[n_near:]
    # The parameters are variances (sigma = sqrt): 0.005 -> 0.0707, 0.0005 -> 0.0224.
    assert np.isclose(first[:, 2].var(), 0.005, rtol=0.03)
    assert np.isclose(second[:, 2].var(), 0.0005, rtol=0.03)
    assert np.abs(first[:, 2]).max() < 6 * np.sqrt(0.005) and np.abs(second[:, 2]).max() < 6 * np.sqrt(0.0005)
    # Uniform rows fill [-1, 1]^3.
    assert uniform.shape == (6000, 3) and np.abs(uniform).max() <= 1.0
    assert np.allclose(uniform.mean(0), 0, atol=0.05) and np.allclose(uniform.var(0), 1 / 3, rtol=0.08)
    # Odd products of ratio and count: the total is still exact.
    pts, n_near = sample_query_points(square, faces, 1001, 0.05, 0.0005, 45 / 50, rng)
    assert pts.shape == (1001, 3) and n_near == 900


def test_sphere_sdf_matches_analytic_and_splits_by_sign():
    m = _sphere()
    s = sample_sdf(m, num_samples=60_000, seed=1, surface_samples=2000)
    assert len(s.pos) + len(s.neg) == 60_000
    assert s.pos.dtype == np.float32 and s.pos.shape[1] == 4 and s.neg.shape[1] == 4
    assert (s.pos[:, 3] >= 0).all() and (s.neg[:, 3] < 0).all()
    allp = np.vstack([s.pos, s.neg]).astype(np.float64)
    # Normalised frame: the sphere's radius is 1/1.03 (all icosphere vertices lie on it).
    analytic = np.linalg.norm(allp[:, :3], axis=1) - 1 / BUFFER
    # Discretisation: a 5120-face icosphere lies up to ~1e-3 (relative) inside the true sphere.
    assert np.abs(allp[:, 3] - analytic).max() < 2.5e-3
    clear = np.abs(analytic) > 2.5e-3
    assert np.mean(np.sign(allp[clear, 3]) == np.sign(analytic[clear])) > 0.999
    assert np.abs(allp[:, :3]).max() <= 1.0 + 6 * np.sqrt(0.005)  # near-surface noise may leave the cube a bit
    # Most samples are near the surface: 47/50 drawn within a few sigma.
    assert np.mean(np.abs(analytic) < 4 * np.sqrt(0.005) * np.sqrt(3)) > 0.94
    # Surface samples are in the mesh's own units, on its surface.
    r = np.linalg.norm(s.surface - np.array([1.0, -2.0, 0.5]), axis=1)
    assert s.surface.shape == (2000, 3) and np.abs(r - 3.0).max() < 3.0 * 1.5e-3
    assert np.allclose(normalize(np.array([[1.0, -2.0, 0.5]]), s.offset, s.scale), 0, atol=1e-9)
    assert np.isclose(s.scale, 1 / (3.0 * BUFFER), rtol=1e-9)


@pytest.mark.parametrize("sign_mode", ["winding", "pseudonormal"])
def test_box_sdf_exact(sign_mode):
    m = _box()
    s = sample_sdf(m, num_samples=20_000, seed=2, sign_mode=sign_mode, surface_samples=0)
    allp = np.vstack([s.pos, s.neg]).astype(np.float64)
    half = 0.5 * np.array([2.0, 1.0, 0.6]) * s.scale
    analytic = _box_sdf(allp[:, :3], half)  # planar faces: no discretisation error
    assert np.abs(allp[:, 3] - analytic).max() < 2e-6
    clear = np.abs(analytic) > 1e-5
    assert np.array_equal(np.sign(allp[clear, 3]), np.sign(analytic[clear]))
    assert s.surface.shape == (0, 3)


def test_flipped_faces_get_the_same_sign_and_seed_determinism():
    m = _box()
    flipped = trimesh.Trimesh(m.vertices, m.faces[:, ::-1], process=False)
    b = sample_sdf(flipped, num_samples=5000, seed=3, surface_samples=10)
    allp = np.vstack([b.pos, b.neg]).astype(np.float64)
    analytic = _box_sdf(allp[:, :3], 0.5 * np.array([2.0, 1.0, 0.6]) * b.scale)
    clear = np.abs(analytic) > 1e-5
    assert np.array_equal(np.sign(allp[clear, 3]), np.sign(analytic[clear]))  # winding sign: |w| > 0.5 inside
    a = sample_sdf(m, num_samples=5000, seed=3, surface_samples=10)
    a2 = sample_sdf(m, num_samples=5000, seed=3, surface_samples=10)
    assert all(np.array_equal(x, y) for x, y in zip(a, a2))
    c = sample_sdf(m, num_samples=5000, seed=4, surface_samples=10)
    assert not np.array_equal(a.pos[:100], c.pos[:100])


def test_test_preset():
    # The original's -t: variance 0.05, second variance variance / 100, 45:5 near/uniform, 250k.
    assert TEST_PRESET == {"num_samples": 250_000, "variance": 0.05, "second_variance": 0.0005, "near_ratio": 0.9}
    square = np.array([[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]], dtype=float)
    pts, n_near = sample_query_points(square, np.array([[0, 1, 2], [0, 2, 3]]), rng=np.random.default_rng(1),
                                      **dict(TEST_PRESET, num_samples=100_000))  # fmt: skip
    assert n_near == 90_000
    assert np.isclose(pts[:n_near:2, 2].var(), 0.05, rtol=0.03) and np.isclose(pts[1:n_near:2, 2].var(), 0.0005, rtol=0.03)
    s = sample_sdf(_sphere(), **dict(TEST_PRESET, num_samples=10_000), surface_samples=0)
    assert len(s.pos) + len(s.neg) == 10_000


def test_bad_meshes_raise_named_errors():
    with pytest.raises(TypeError, match="mesh"):
        sample_sdf(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="no faces"):
        sample_sdf(trimesh.Trimesh(np.zeros((3, 3)), np.zeros((0, 3), int)))
    bad = _box()
    v = bad.vertices.copy()
    v[0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        sample_sdf(trimesh.Trimesh(v, bad.faces, process=False))
    with pytest.raises(ValueError, match="variance"):
        sample_sdf(_box(), num_samples=10, variance=-1)
    with pytest.raises(ValueError, match="near_ratio"):
        sample_sdf(_box(), num_samples=10, near_ratio=1.5)


# ---------------------------------------------------------------------------------------------- app


def _mesh_folder(tmp_path):
    d = tmp_path / "meshes"
    d.mkdir()
    _sphere().export(d / "ball.ply")
    _box().export(d / "brick.obj")
    trimesh.creation.cylinder(0.5, 2.0).export(d / "can.stl")
    trimesh.creation.capsule(1.0, 0.4).export(d / "pill.off")
    (d / "garbage.ply").write_bytes(np.random.default_rng(0).bytes(3000))
    (d / "empty.obj").write_text("# no faces\nv 0 0 0\nv 1 0 0\n")
    (d / "notes.txt").write_text("not a mesh")
    return d


ARGS = ["--samples", "4000", "--surface-samples", "300", "--quiet", "--test-fraction", "0.5"]


def test_app_writes_layout_reports_bad_meshes_and_resumes(tmp_path, capsys):
    meshes = _mesh_folder(tmp_path)
    out = meshes / "data"  # inside the mesh folder: its SurfaceSamples/*.ply must not be taken for meshes
    report = main(["--meshes", str(meshes), "--out", str(out), "--dataset", "toy", "--class-name", "things", *ARGS])
    good = ["ball", "brick", "can", "pill"]
    assert report["sampled"] == good and report["skipped"] == []
    assert sorted(f["instance"] for f in report["failed"]) == ["empty", "garbage"]
    assert json.loads((out / "sample_report.json").read_text())["failed"] == report["failed"]
    err = capsys.readouterr().err
    assert "garbage.ply" in err and "empty.obj" in err and "no faces" in err

    train = load_split(out / "splits" / "toy_things_train.json")
    test = load_split(out / "splits" / "toy_things_test.json")
    assert sorted(i.instance for i in train + test) == good and len(test) == 2
    assert {i.dataset for i in train + test} == {"toy"} and {i.class_name for i in train} == {"things"}
    for inst in train + test:
        pos, neg = load_sdf_samples(inst.sdf_samples(out))
        # The test split is sampled with the -t preset, at half the count (as 500k -> 250k).
        assert len(pos) + len(neg) == (2000 if inst in test else 4000)
        assert (pos[:, 3] >= 0).all() and (neg[:, 3] < 0).all() and len(neg) > 0
        offset, scale = load_normalization(inst.normalization(out))
        surface = load_surface_samples(inst.surface_samples(out))
        assert surface.shape == (300, 3)
        assert np.linalg.norm(normalize(surface, offset, scale), axis=1).max() <= 1 / BUFFER + 1e-5
    ball = Instance("toy", "things", "ball")
    offset, scale = load_normalization(ball.normalization(out))
    assert np.allclose(offset, [-1.0, 2.0, -0.5]) and np.isclose(scale, 1 / (3 * BUFFER))

    # Rerun: nothing resampled, the same split; --overwrite resamples.
    stamp = ball.sdf_samples(out).stat().st_mtime_ns
    again = main(["--meshes", str(meshes), "--out", str(out), "--dataset", "toy", "--class-name", "things", *ARGS])
    assert again["sampled"] == [] and again["skipped"] == good and again["failed"] == report["failed"]
    assert ball.sdf_samples(out).stat().st_mtime_ns == stamp
    assert load_split(out / "splits" / "toy_things_test.json") == test
    # Other settings for an instance (here: more samples) resample it even without --overwrite.
    more = ["--samples", "5000", *ARGS[2:]]
    third = main(["--meshes", str(meshes), "--out", str(out), "--dataset", "toy", "--class-name", "things", *more])
    assert third["sampled"] == good
    fourth = main(["--meshes", str(meshes), "--out", str(out), "--dataset", "toy", "--class-name", "things",
                   "--overwrite", *more])  # fmt: skip
    assert fourth["sampled"] == good


def test_app_fails_only_when_nothing_was_sampled(tmp_path):
    d = tmp_path / "bad"
    d.mkdir()
    (d / "a.ply").write_bytes(b"ply\nformat ascii 1.0\nelement vertex 2\nend_header\n1 2\n")
    (d / "b.obj").write_text("")
    with pytest.raises(SystemExit) as e:
        main(["--meshes", str(d), "--out", str(tmp_path / "out"), *ARGS])
    assert e.value.code not in (0, None)
    report = json.loads((tmp_path / "out" / "sample_report.json").read_text())
    assert sorted(f["instance"] for f in report["failed"]) == ["a", "b"]
    with pytest.raises(SystemExit, match="no .*files"):
        main(["--meshes", str(tmp_path / "out"), "--out", str(tmp_path / "o2"), *ARGS])


def test_app_builtin_family(tmp_path):
    out = tmp_path / "data"
    report = main(["--out", str(out), "--count", "3", "--resolution", "48", *ARGS])
    assert report["sampled"] == ["chair_0000", "chair_0001", "chair_0002"]
    assert sorted(p.name for p in (out / "meshes").iterdir()) == ["chair_0000.ply", "chair_0001.ply", "chair_0002.ply"]
    assert (out / "splits" / "procedural_chairs_train.json").is_file()
    assert load_sdf_samples(Instance("procedural", "chairs", "chair_0001").sdf_samples(out))[1].shape[1] == 4


def test_find_meshes_names_and_deterministic_split(tmp_path):
    for sid in ("1a2b", "3c4d"):  # ShapeNet: <id>/models/model_normalized.obj
        (tmp_path / sid / "models").mkdir(parents=True)
        (tmp_path / sid / "models" / "model_normalized.obj").write_text("")
    assert [n for n, _ in find_meshes(tmp_path)] == ["1a2b", "3c4d"]
    names = [f"s{i:02d}" for i in range(20)]
    train, test = split_names(names, 0.2, seed=0)
    assert len(test) == 4 and sorted(train + test) == names
    assert split_names(list(reversed(names)), 0.2, seed=0) == (train, test)
    assert split_names(names, 0.2, seed=1) != (train, test)
    assert split_names(names[:2], 0.2, seed=0)[1] != []  # at least one test shape
