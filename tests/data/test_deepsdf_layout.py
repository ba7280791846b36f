"""DeepSDF's data layout: SdfSamples npz, NormalizationParameters, SurfaceSamples PLY, split JSON."""

import json

import numpy as np
import pytest

from taichi_sdf.data import deepsdf as layout


def test_instance_paths_follow_the_original_layout(tmp_path):
    it = layout.Instance("shapes", "chair", "0007")
    assert it.sdf_samples(tmp_path) == tmp_path / "SdfSamples" / "shapes" / "chair" / "0007.npz"
    assert it.surface_samples(tmp_path) == tmp_path / "SurfaceSamples" / "shapes" / "chair" / "0007.ply"
    assert it.normalization(tmp_path) == tmp_path / "NormalizationParameters" / "shapes" / "chair" / "0007.npz"


def test_sdf_samples_round_trip_and_nan_rows_dropped(tmp_path):
    rng = np.random.default_rng(0)
    pos, neg = rng.random((7, 4)), -rng.random((5, 4))
    path = layout.save_sdf_samples(tmp_path / "a.npz", pos, neg)
    p, n = layout.load_sdf_samples(path)
    np.testing.assert_allclose(p, pos.astype(np.float32))
    np.testing.assert_allclose(n, neg.astype(np.float32))
    assert not list(tmp_path.glob(".*")), "the atomic writer left a temporary file behind"
    # a file written by someone else with NaN rows: the original drops them (remove_nans)
    pos[2, 3] = np.nan
    np.savez(tmp_path / "b.npz", pos=pos, neg=neg)
    p, _ = layout.load_sdf_samples(tmp_path / "b.npz")
    assert len(p) == 6 and np.isfinite(p).all()


@pytest.mark.parametrize(
    "arrays, message",
    [({"pos": np.zeros((3, 4))}, "missing array 'neg'"), ({"pos": np.zeros((3, 3)), "neg": np.zeros((1, 4))}, r"\[N, 4\]")],
)
def test_bad_sdf_samples_name_the_file(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=message) as e:
        layout.load_sdf_samples(path)
    assert "bad.npz" in str(e.value)
    (tmp_path / "garbage.npz").write_bytes(b"not an npz")
    with pytest.raises(ValueError, match="garbage.npz"):
        layout.load_sdf_samples(tmp_path / "garbage.npz")
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        layout.load_sdf_samples(tmp_path / "missing.npz")
    with pytest.raises(ValueError, match="NaN"):
        layout.save_sdf_samples(tmp_path / "c.npz", np.full((2, 4), np.nan), np.zeros((1, 4)))


def test_normalization_puts_the_shape_in_the_unit_sphere_with_a_buffer(tmp_path):
    rng = np.random.default_rng(1)
    v = rng.normal(size=(200, 3)) * [3.0, 1.0, 0.5] + [10.0, -4.0, 2.0]
    offset, scale = layout.normalization_parameters(v)
    centre = 0.5 * (v.min(0) + v.max(0))
    np.testing.assert_allclose(offset, -centre)
    radii = np.linalg.norm(layout.normalize(v, offset, scale), axis=1)
    assert radii.max() == pytest.approx(1 / 1.03)
    np.testing.assert_allclose(layout.denormalize(layout.normalize(v, offset, scale), offset, scale), v)
    path = layout.save_normalization(tmp_path / "n.npz", offset, scale)
    o2, s2 = layout.load_normalization(path)
    np.testing.assert_allclose(o2, offset)
    assert s2 == pytest.approx(scale)
    with pytest.raises(ValueError, match="degenerate"):
        layout.normalization_parameters(np.ones((4, 3)))
    (tmp_path / "garbage.npz").write_bytes(b"not an npz")
    with pytest.raises(ValueError, match="garbage.npz"):
        layout.load_normalization(tmp_path / "garbage.npz")
    with pytest.raises(FileNotFoundError, match="normalisation parameters"):
        layout.load_normalization(tmp_path / "missing.npz")


def test_surface_samples_round_trip(tmp_path):
    pts = np.random.default_rng(2).normal(size=(100, 3))
    path = layout.save_surface_samples(tmp_path / "s.ply", pts)
    np.testing.assert_allclose(layout.load_surface_samples(path), pts, atol=1e-6)


def test_split_round_trip_and_errors(tmp_path):
    items = [layout.Instance("d", "c", "b"), layout.Instance("d", "c", "a"), layout.Instance("d", "e", "x")]
    path = layout.save_split(tmp_path / "split.json", items)
    assert json.loads(path.read_text()) == {"d": {"c": ["b", "a"], "e": ["x"]}}
    assert layout.load_split(path) == items
    (tmp_path / "bad.json").write_text('{"d": ["a"]}')
    with pytest.raises(ValueError, match="bad.json"):
        layout.load_split(tmp_path / "bad.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        layout.load_split(tmp_path / "broken.json")


def test_failing_write_leaves_the_old_file_and_no_temp_file(tmp_path, monkeypatch):
    """Every writer goes through the project's atomic writer (temp file, fsync, rename): a write that
    dies half-way removes its temp file and leaves the previous complete file in place."""
    import os

    rng = np.random.default_rng(3)
    pos, neg = rng.random((6, 4)), -rng.random((4, 4))
    fsynced = []
    fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: fsynced.append(fd) or fsync(fd))
    path = layout.save_sdf_samples(tmp_path / "a.npz", pos, neg)
    norm = layout.save_normalization(tmp_path / "n.npz", np.zeros(3), 0.5)
    assert len(fsynced) >= 2  # the data reach the disk before the rename
    savez = np.savez

    def dies_half_way(file, **arrays):
        savez(file, **arrays)  # bytes reach the temp file ...
        raise OSError("disk full")  # ... then the write fails

    monkeypatch.setattr(np, "savez", dies_half_way)
    with pytest.raises(OSError, match="disk full"):
        layout.save_sdf_samples(path, pos[:2], neg[:2])
    with pytest.raises(OSError, match="disk full"):
        layout.save_normalization(norm, np.ones(3), 2.0)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz", "n.npz"]  # no hidden temp files
    p, n = layout.load_sdf_samples(path)
    assert p.shape == (6, 4) and n.shape == (4, 4)
    o, s = layout.load_normalization(norm)
    np.testing.assert_array_equal(o, np.zeros(3))
    assert s == 0.5
