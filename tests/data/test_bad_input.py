"""Broken dataset folders (issue 17, data side): each is read correctly or refused with a message
naming the file or key and what was expected, before any training starts."""

import json
import os
import shutil
import warnings

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from taichi_sdf.data.image_io import read_image
from taichi_sdf.data.multiview import load_dvr, load_idr, load_nerf, save_idr, save_nerf, sphere_dataset, write_dvr_scene
from taichi_sdf.data.multiview.source import MultiViewDataConfig, load_multiview
from taichi_sdf.train import metrics
from taichi_sdf.train.metrics import load_geometry


@pytest.fixture(scope="module")
def ds():
    return sphere_dataset(n_views=6, width=20, height=16, radius=0.5)


@pytest.fixture(scope="module")
def idr_master(ds, tmp_path_factory):
    return save_idr(ds, tmp_path_factory.mktemp("idr") / "scan")


@pytest.fixture
def idr(idr_master, tmp_path):
    """A fresh copy of a good IDR folder to break."""
    return shutil.copytree(idr_master, tmp_path / "scan")


def _edit_npz(path, **changes):
    arrays = dict(np.load(path))
    for key, value in changes.items():
        if value is None:
            del arrays[key]
        else:
            arrays[key] = value
    np.savez(path, **arrays)


def _quiet_load(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a loader that only warns would pass a `raises` test otherwise
        return fn(*args, **kwargs)


# ---------------------------------------------------------------------------- image-mask pairing


def test_renamed_mask_is_an_error_naming_both_files(idr):
    os.rename(idr / "mask" / "002.png", idr / "mask" / "x002.png")
    with pytest.raises(ValueError, match=r"without a mask.*002\.png.*without an image.*x002\.png"):
        load_idr(idr)


@pytest.mark.parametrize("loader", ["idr", "dvr"])
def test_masks_are_paired_by_stem_not_position(ds, tmp_path, loader):
    """DTU names images 000000.png and masks 000.png; pairing by number keeps each view's own mask
    even when a sorted listing would interleave them differently (10 views: '10' sorts before '2')."""
    big = sphere_dataset(n_views=11, width=20, height=16, radius=0.5)
    big.masks[:] = False
    for i in range(11):
        big.masks[i, 2:10, : i + 2] = True  # a different mask per view (the sphere's are all alike)
    folder = save_idr(big, tmp_path / "s") if loader == "idr" else write_dvr_scene(tmp_path / "s", big)
    images = sorted((folder / "image").iterdir())
    masks = sorted((folder / "mask").iterdir())
    for i, (ip, mp) in enumerate(zip(images, masks)):
        ip.rename(ip.with_name(f"{i:06d}.png"))
        mp.rename(mp.with_name(f"{i}.png"))  # 0.png, 1.png, 10.png, 2.png ... sorts differently
    back = load_idr(folder) if loader == "idr" else load_dvr(folder)
    assert torch.equal(back.masks, big.masks)


# ----------------------------------------------------------------------------------------- masks


@pytest.mark.parametrize("dtype, one", [(np.uint8, 1), (np.uint16, 1)])
def test_zero_one_masks_read_as_labels(ds, idr, dtype, one):
    for i, f in enumerate(sorted((idr / "mask").iterdir())):
        iio.imwrite(f, ds.masks[i].numpy().astype(dtype) * one)
    back = _quiet_load(load_idr, idr)
    assert torch.equal(back.masks, ds.masks)


def test_all_empty_masks_are_refused(idr):
    for f in (idr / "mask").iterdir():
        iio.imwrite(f, np.zeros((16, 20), np.uint8))
    with pytest.raises(ValueError, match=r"mask: all 6 masks are empty"):
        load_idr(idr)


def test_some_empty_masks_warn_naming_the_views(idr):
    iio.imwrite(idr / "mask" / "001.png", np.zeros((16, 20), np.uint8))
    iio.imwrite(idr / "mask" / "004.png", np.zeros((16, 20), np.uint8))
    with pytest.warns(UserWarning, match=r"2 of 6 masks are empty: 001\.png, 004\.png"):
        load_idr(idr)


def test_nerf_all_transparent_is_refused_naming_the_folder(ds, tmp_path):
    empty = sphere_dataset(n_views=6, width=20, height=16, radius=0.5)
    empty.masks[:] = False
    save_nerf(empty, tmp_path / "nerf", splits={"train": [0, 1, 2, 3, 4, 5]})
    with pytest.raises(ValueError, match=r"nerf: all 6 masks are empty"):
        load_nerf(tmp_path / "nerf")


def test_nerf_without_alpha_warns_how_masks_are_made(ds, tmp_path):
    save_nerf(ds, tmp_path / "nerf", splits={"train": [0, 1, 2, 3, 4, 5]})
    for f in (tmp_path / "nerf" / "train").iterdir():
        iio.imwrite(f, iio.imread(f)[..., :3])
    with pytest.warns(UserWarning, match=r"6 of 6 images have no alpha channel.*masks are all ones"):
        back = load_nerf(tmp_path / "nerf", scale_mat=None)
    assert bool(back.masks.all())


# ------------------------------------------------------------------------------- NeRF splits


def test_nerf_trains_on_train_only_and_says_so(ds, tmp_path, capsys):
    # val repeats the test views, as in many NeRF-synthetic-style datasets.
    save_nerf(ds, tmp_path / "nerf", splits={"train": [0, 1, 2, 3], "val": [4, 5], "test": [4, 5]})
    out = load_multiview(MultiViewDataConfig(data=str(tmp_path / "nerf")))
    train_names = {out.names[i] for i in out.splits["train"]}
    assert train_names == {f"train_r_{k}" for k in range(4)}
    assert len(out.splits["test"]) == 2 and not set(out.splits["train"]) & set(out.splits["test"])
    assert "4 train, 2 test (transforms_train.json / transforms_test.json)" in capsys.readouterr().out
    both = load_multiview(MultiViewDataConfig(data=str(tmp_path / "nerf"), nerf_train="train,val"), log=None)
    assert len(both.splits["train"]) == 6


def test_nerf_train_option_is_checked():
    with pytest.raises(ValueError, match="nerf_train"):
        MultiViewDataConfig(nerf_train="test")


# ---------------------------------------------------------------------------------- splits.json


@pytest.mark.parametrize(
    "text, match",
    [
        ('{"test": [-1]}', r"'test' has indices \[-1\] outside \[0, 6\)"),
        ('{"test": [99]}', r"'test' has indices \[99\] outside \[0, 6\)"),
        ('{"test": [1, 1]}', r"'test' lists views \[1\] more than once"),
        ('{"test": [1,', r"splits\.json: malformed JSON"),
        ('{"tst": [1]}', r'splits\.json: expected an object with a "test" list'),
        ('{"test": ["1", 2.5]}', r"'test' must be a list of integer view indices"),
        ('{"train": [0, 1, 2], "test": [2, 3]}', r"views \[2\] are in both 'train' and 'test'"),
    ],
)
def test_splits_json_is_checked(idr, text, match):
    (idr / "splits.json").write_text(text)
    with pytest.raises(ValueError, match=match):
        load_multiview(MultiViewDataConfig(data=str(idr)), log=None)


def test_splits_json_train_list_is_used(idr):
    (idr / "splits.json").write_text('{"train": [0, 2], "test": [1]}')
    assert load_multiview(MultiViewDataConfig(data=str(idr)), log=None).splits == {"train": [0, 2], "test": [1]}


# ---------------------------------------------------------------------------------- cameras.npz


def test_object_array_in_cameras_npz_names_the_key(idr):
    _edit_npz(idr / "cameras.npz", world_mat_2=np.array([np.eye(4), None], dtype=object))
    with pytest.raises(ValueError, match=r"cameras\.npz: 'world_mat_2' is an object array; expected a \[4, 4\] array"):
        load_idr(idr)


def test_non_zip_cameras_npz_is_named_as_such(idr):
    (idr / "cameras.npz").write_text("not numpy")
    with pytest.raises(ValueError, match=r"cameras\.npz: not a \.npz archive") as info:
        load_idr(idr)
    assert "pickled" not in str(info.value)


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"world_mat_5": None}, r"5 world_mat_i entries but 6 images .*missing world_mat_5"),
        ({"world_mat_3": None, "world_mat_9": np.eye(4)}, r"missing world_mat_3; extra world_mat_9"),
    ],
)
def test_camera_count_mismatch_names_the_missing_key(idr, changes, match):
    _edit_npz(idr / "cameras.npz", **changes)
    with pytest.raises(ValueError, match=match):
        load_idr(idr)


@pytest.mark.parametrize("kind", ["zeros", "rank2"])
def test_singular_world_mat_names_the_view(idr, kind):
    w = np.load(idr / "cameras.npz")["world_mat_2"].copy()
    if kind == "zeros":
        w[:] = 0.0
    else:
        w[2, :3] = w[0, :3] + w[1, :3]
    _edit_npz(idr / "cameras.npz", world_mat_2=w)
    with pytest.raises(ValueError, match=r"cameras\.npz: 'world_mat_2' is singular"):
        load_idr(idr)


def test_singular_dvr_camera_names_the_view(ds, tmp_path):
    folder = write_dvr_scene(tmp_path / "dvr", ds)
    _edit_npz(folder / "cameras.npz", camera_mat_4=np.zeros((4, 4)))
    with pytest.raises(ValueError, match=r"cameras\.npz: 'camera_mat_4' is singular"):
        load_dvr(folder)


# -------------------------------------------------------------------------- NeRF camera_angle_x


@pytest.mark.parametrize("value", ["0.7", [0.7], None, "abc", True, -0.5, 4.0])
def test_nerf_camera_angle_must_be_a_number(ds, tmp_path, value):
    save_nerf(ds, tmp_path / "nerf", splits={"train": [0, 1, 2, 3, 4, 5]})
    path = tmp_path / "nerf" / "transforms_train.json"
    meta = json.loads(path.read_text())
    meta["camera_angle_x"] = value
    path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"transforms_train\.json: 'camera_angle_x' must be a number, radians in \(0, pi\)"):
        load_nerf(tmp_path / "nerf")


# ------------------------------------------------------------------------------ images, meshes


def test_zero_byte_png_is_named_empty(idr):
    (idr / "image" / "001.png").write_bytes(b"")
    with pytest.raises(ValueError, match=r"image/001\.png: the file is empty \(0 bytes\); expected a PNG or JPEG") as info:
        load_idr(idr)
    assert "pyav" not in str(info.value)


@pytest.mark.parametrize(
    "content, match",
    [
        (b"hello, I am text\n", r"the file holds text data"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 30, r"a PNG image that cannot be decoded"),
    ],
)
def test_unreadable_image_says_what_the_file_holds(tmp_path, content, match):
    (tmp_path / "a.png").write_bytes(content)
    with pytest.raises(ValueError, match=r"a\.png: cannot read image: " + match + r".*expected a PNG or JPEG image"):
        read_image(tmp_path / "a.png")


def test_png_named_obj_is_named(idr, tmp_path):
    shutil.copy(idr / "image" / "000.png", tmp_path / "mesh.obj")
    with pytest.raises(ValueError, match=r"mesh\.obj: the file holds a PNG image, not a \.obj mesh"):
        load_geometry(tmp_path / "mesh.obj")


@pytest.mark.parametrize(
    "name, text, match",
    [
        ("empty.obj", "", r"empty\.obj: the file is empty \(0 bytes\)"),
        ("comments.obj", "# nothing here\n", r"comments\.obj: no geometry"),
        ("past.obj", "v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\nf 1 2 9\n", r"past\.obj: a face index is past the vertex count"),
        ("nan.obj", "v 0 0 nan\nv 1 0 0\nv 0 1 0\nv 0 0 1\nf 1 2 3\nf 2 3 4\n", r"nan\.obj: 1 of 4 vertices are NaN"),
        ("mesh.txt", "v 0 0 0\n", r"mesh\.txt: unknown extension '\.txt'; expected a mesh"),
    ],
)
def test_broken_mesh_files_are_named(tmp_path, name, text, match):
    (tmp_path / name).write_text(text)
    with pytest.raises(ValueError, match=match):
        load_geometry(tmp_path / name)


def test_ply_face_index_past_the_vertices_is_named(tmp_path):
    header = "ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\nproperty float z\n"
    body = "element face 1\nproperty list uchar int vertex_indices\nend_header\n0 0 0\n1 0 0\n0 1 0\n3 0 1 7\n"
    (tmp_path / "m.ply").write_text(header + body)
    with pytest.raises(ValueError, match=r"m\.ply: face index 7 past the 3 vertices"):
        load_geometry(tmp_path / "m.ply")


@pytest.mark.parametrize(
    "array, match",
    [
        (np.zeros((0, 3)), r"expected points \[N, 3\] of numbers with N > 0"),
        (np.array([[0.0, 0.0, np.nan]]), r"1 points are NaN or infinite"),
        (np.array([{"a": 1}], dtype=object), r"cannot read"),
    ],
)
def test_broken_point_files_are_named(tmp_path, array, match):
    np.save(tmp_path / "gt_points.npy", array, allow_pickle=True)
    with pytest.raises(ValueError, match=r"gt_points\.npy: .*" + match):
        load_geometry(tmp_path / "gt_points.npy")


@pytest.mark.parametrize(
    "text, match",
    [
        ("[[1, 0, 0], [0, 1, 0]]", r"expected a 4x4 \(or 3x4\) matrix"),
        ("[[1,0,0,0],[0,1,0,0],[0,0,0,0],[0,0,0,1]]", r"singular"),
        ("[[1,0,0,0],[0,1,0,0],[0,0,1,0],[0,0,1,1]]", r"not \[0, 0, 0, 1\]"),
        ("[[1,0,0,0],", r"malformed JSON"),
    ],
)
def test_transform_file_is_checked(tmp_path, text, match):
    (tmp_path / "T.json").write_text(text)
    with pytest.raises(ValueError, match=r"T\.json: .*" + match):
        metrics.load_transform(tmp_path / "T.json")


# ------------------------------------------------- found by trying bad inputs beyond the issue's list


@pytest.mark.parametrize("style", ["alpha", "blue", "grey_alpha"])
def test_masks_in_alpha_or_colour_are_read(ds, idr, style):
    for i, f in enumerate(sorted((idr / "mask").iterdir())):
        m = ds.masks[i].numpy().astype(np.uint8) * 255
        full, zero = np.full_like(m, 255), np.zeros_like(m)
        layers = {"alpha": [full, full, full, m], "blue": [zero, zero, m], "grey_alpha": [full, m]}[style]
        iio.imwrite(f, np.stack(layers, -1))
    assert torch.equal(_quiet_load(load_idr, idr).masks, ds.masks)


def test_cmyk_jpeg_is_read_as_rgb(ds, idr):
    from PIL import Image

    for f in sorted((idr / "image").iterdir()):
        Image.open(f).convert("CMYK").save(f.with_suffix(".jpg"), quality=100)
        f.unlink()
    back = _quiet_load(load_idr, idr)
    assert back.images.shape == ds.images.shape
    assert float((back.images - ds.images).abs().mean()) < 0.05  # JPEG error; CMYK read as RGBA is ~0.6


@pytest.mark.parametrize(
    "matrix, match",
    [
        ([["1", "0", "0", "0"]] * 4, r"frame 2 'transform_matrix' must be a finite 4x4 or 3x4 matrix of numbers"),
        ([[2, 0, 0, 0], [0, 2, 0, 0], [0, 0, 2, 4], [0, 0, 0, 1]], r"frame 2 'transform_matrix' is no rigid camera-to-world"),
    ],
)
def test_nerf_pose_is_checked_per_frame(ds, tmp_path, matrix, match):
    save_nerf(ds, tmp_path / "nerf", splits={"train": [0, 1, 2, 3, 4, 5]})
    path = tmp_path / "nerf" / "transforms_train.json"
    meta = json.loads(path.read_text())
    meta["frames"][2]["transform_matrix"] = matrix
    path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"transforms_train\.json: " + match):
        load_nerf(tmp_path / "nerf")


def test_nerf_camera_angle_in_degrees_gets_a_hint(ds, tmp_path):
    save_nerf(ds, tmp_path / "nerf", splits={"train": [0, 1, 2, 3, 4, 5]})
    path = tmp_path / "nerf" / "transforms_train.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "camera_angle_x": 40}))
    with pytest.raises(ValueError, match=r"got 40 \(degrees\?\)"):
        load_nerf(tmp_path / "nerf")


def test_splits_holding_out_every_view_is_refused(idr):
    (idr / "splits.json").write_text('{"test": [0, 1, 2, 3, 4, 5]}')
    with pytest.raises(ValueError, match=r"data: no training views in .*splits\.json"):
        load_multiview(MultiViewDataConfig(data=str(idr)), log=None)


def test_nerf_grey_alpha_images_are_read(ds, tmp_path):
    save_nerf(ds, tmp_path / "nerf", splits={"train": [0, 1, 2, 3, 4, 5]})
    for f in (tmp_path / "nerf" / "train").iterdir():
        rgba = iio.imread(f)
        iio.imwrite(f, np.stack([rgba[..., 0], rgba[..., 3]], -1))
    back = _quiet_load(load_nerf, tmp_path / "nerf", scale_mat=None)
    assert back.images.shape == ds.images.shape and torch.equal(back.masks, ds.masks)
