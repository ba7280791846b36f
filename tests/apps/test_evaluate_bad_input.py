"""apps.evaluate on bad input (issue 17): broken or mis-named files and transforms are refused naming
the file; meshes in different frames get a warning that says how to pass the transform."""

import json
import shutil

import numpy as np
import pytest
import trimesh

from apps.evaluate import main

N = ["--n", "2000"]


@pytest.fixture
def sphere(tmp_path):
    path = tmp_path / "sphere.ply"
    trimesh.creation.icosphere(subdivisions=2, radius=0.5).export(path)
    return path


def _write(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "name, text, match",
    [
        ("empty.obj", "", r"empty\.obj: the file is empty \(0 bytes\)"),
        ("past.obj", "v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\nf 1 2 9\n", r"past\.obj: a face index is past the vertex count"),
        ("pred.txt", "v 0 0 0\n", r"pred\.txt: unknown extension '\.txt'"),
        ("pred.ply.bak", "ply\n", r"pred\.ply\.bak: unknown extension '\.bak'"),
    ],
)
def test_broken_pred_is_named(tmp_path, sphere, name, text, match):
    pred = _write(tmp_path / name, text)
    with pytest.raises(SystemExit, match=match):
        main([str(pred), str(sphere), *N])


def test_missing_file_is_named(tmp_path, sphere):
    with pytest.raises(SystemExit, match=r"sphere\.obj: file not found"):
        main([str(tmp_path / "sphere.obj"), str(sphere), *N])


def test_png_named_obj_is_named(tmp_path, sphere):
    import imageio.v3 as iio

    iio.imwrite(tmp_path / "pred.obj", np.zeros((4, 4, 3), np.uint8), extension=".png")
    with pytest.raises(SystemExit, match=r"pred\.obj: the file holds a PNG image, not a \.obj mesh"):
        main([str(tmp_path / "pred.obj"), str(sphere), *N])


def test_two_mesh_glb_is_scored_as_their_union(tmp_path):
    a = trimesh.creation.box(extents=(0.4, 0.4, 0.4))
    b = trimesh.creation.icosphere(subdivisions=2, radius=0.2)
    b.apply_translation([0.6, 0.0, 0.0])
    trimesh.Scene([a, b]).export(tmp_path / "two.glb")
    trimesh.util.concatenate([a, b]).export(tmp_path / "union.ply")
    res = main([str(tmp_path / "two.glb"), str(tmp_path / "union.ply"), *N, "--threshold", "0.05"])
    assert res["fscore@0.05"] > 0.95  # either part alone leaves a third of the union unmatched


@pytest.mark.parametrize(
    "matrix, match",
    [
        ([[1, 0, 0], [0, 1, 0]], r"expected a 4x4 \(or 3x4\) matrix"),
        ([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]], r"singular"),
    ],
)
def test_bad_transform_is_named(tmp_path, sphere, matrix, match):
    T = _write(tmp_path / "scale_mat.json", json.dumps(matrix))
    with pytest.raises(SystemExit, match=r"scale_mat\.json: .*" + match):
        main([str(sphere), str(sphere), "--transform", str(T), *N])


def test_different_frames_warn_and_pred_transform_fixes_it(tmp_path, sphere, capsys):
    S = np.diag([2.0, 2.0, 2.0, 1.0])
    S[:3, 3] = (0.3, -0.1, 1.5)  # normalised -> world, as a dataset's scale_mat.json
    gt = tmp_path / "gt.ply"
    trimesh.load(sphere).apply_transform(S).export(gt)  # the same sphere in world units
    res = main([str(sphere), str(gt), *N])
    err = capsys.readouterr().err
    assert "look like different frames" in err and "--pred-transform" in err
    assert res["fscore@0.01"] < 0.05
    T = _write(tmp_path / "scale_mat.json", json.dumps(S.tolist()))
    res = main([str(sphere), str(gt), "--pred-transform", str(T), *N, "--threshold", "0.1"])
    assert "different frames" not in capsys.readouterr().err
    assert res["fscore@0.1"] > 0.95  # 2000 samples on a radius-1 sphere lie ~0.08 apart


def test_same_frame_does_not_warn(tmp_path, sphere, capsys):
    shutil.copy(sphere, tmp_path / "gt.ply")
    main([str(sphere), str(tmp_path / "gt.ply"), *N])
    assert "warning" not in capsys.readouterr().err
