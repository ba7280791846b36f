"""nerfstudio folders (`transforms.json`): written and read back, checked against nerfstudio's
conventions written out here (OpenGL camera-to-world, fl_x/fl_y/cx/cy pixels), applied_transform,
the normalisation from masks, point cloud or cameras, distortion, and one error per broken file."""

import json

import numpy as np
import pytest
import torch

from taichi_sdf.data.multiview import load_nerfstudio, save_nerfstudio, sphere_dataset
from taichi_sdf.data.multiview.source import MultiViewDataConfig, detect_format, load_multiview
from tests.data.test_colmap import RADIUS, SCALE, surface_points

# ns-process-data's applied_transform: COLMAP (x, y, z) -> (x, z, -y)
APPLIED = np.array([[1.0, 0, 0, 0], [0, 0, 1, 0], [0, -1, 0, 0]])


@pytest.fixture(scope="module")
def sphere():
    ds = sphere_dataset(n_views=6, width=20, height=16, radius=RADIUS, scale_mat=SCALE)
    K = ds.cameras.K.clone()
    K[1::2, 0, 0] *= 1.1  # alternate views: non-square pixels and another principal point (per-frame intrinsics)
    K[1::2, 1, 2] += 0.7
    ds.cameras = type(ds.cameras)(K, ds.cameras.T_cam_world, ds.width, ds.height)
    return ds


def gl_project(frame, meta, x_world):
    """nerfstudio's pinhole written out: camera = inv(c2w) x with y up, z back; pixel = (cx + fx x/-z, cy - fy y/-z)."""
    get = lambda k: frame.get(k, meta.get(k))  # noqa: E731
    p = (np.linalg.inv(np.asarray(frame["transform_matrix"])) @ np.c_[x_world, np.ones(len(x_world))].T).T
    return np.stack([get("cx") + get("fl_x") * p[:, 0] / -p[:, 2], get("cy") - get("fl_y") * p[:, 1] / -p[:, 2]], 1)


@pytest.mark.parametrize("per_frame", [False, True])
def test_roundtrip_and_projection(sphere, tmp_path, per_frame):
    ds = sphere if per_frame else sphere_dataset(n_views=6, width=20, height=16, radius=RADIUS, scale_mat=SCALE)
    save_nerfstudio(ds, tmp_path / "ns", per_frame_intrinsics=per_frame)
    meta = json.loads((tmp_path / "ns" / "transforms.json").read_text())
    assert ("fl_x" in meta) != per_frame and ("fl_x" in meta["frames"][0]) == per_frame
    assert meta["frames"][0]["file_path"] == "images/frame_00001.png" and meta["frames"][0]["mask_path"] == "masks/frame_00001.png"
    back = load_nerfstudio(tmp_path / "ns", scale_mat=SCALE)
    torch.testing.assert_close(back.cameras.K.double(), ds.cameras.K.double(), atol=1e-5, rtol=0)
    torch.testing.assert_close(back.cameras.T_cam_world.double(), ds.cameras.T_cam_world.double(), atol=1e-5, rtol=0)
    torch.testing.assert_close(back.images, ds.images, atol=1 / 255, rtol=0)
    assert torch.equal(back.masks, ds.masks) and back.names == [f"frame_{i:05d}" for i in range(1, 7)]
    x_w = surface_points(30)
    for i, frame in enumerate(meta["frames"]):
        uv, _ = back.cameras[i].project(back.to_normalized(torch.from_numpy(x_w)))
        np.testing.assert_allclose(uv[0].numpy(), gl_project(frame, meta, x_w), atol=1e-5)


def test_applied_transform_and_frames(sphere, tmp_path):
    save_nerfstudio(sphere, tmp_path / "ns", applied_transform=APPLIED)
    meta = json.loads((tmp_path / "ns" / "transforms.json").read_text())
    assert meta["applied_transform"] == APPLIED.tolist()
    in_file = load_nerfstudio(tmp_path / "ns")
    in_colmap = load_nerfstudio(tmp_path / "ns", frame="colmap")
    assert torch.equal(in_file.cameras.T_cam_world, in_colmap.cameras.T_cam_world)  # one normalised frame
    x_n = torch.tensor([[0.1, -0.3, 0.2], [0.0, 0.0, 0.0]], dtype=torch.float64)
    colmap = in_colmap.to_world(x_n).numpy()
    np.testing.assert_allclose(in_file.to_world(x_n).numpy(), colmap @ APPLIED[:, :3].T + APPLIED[:, 3], atol=1e-12)
    # COLMAP's frame is the dataset's world: the normalised points project alike in the original cameras
    for i in range(len(sphere)):
        uv, _ = in_colmap.cameras[i].project(x_n)
        ref, _ = sphere.cameras[i].project(sphere.to_normalized(torch.from_numpy(colmap)))
        np.testing.assert_allclose(uv[0].numpy(), ref[0].numpy(), atol=1e-5)


@pytest.mark.parametrize("source", ["masks", "ply", "cameras"])
def test_auto_normalisation_puts_the_object_in_the_unit_sphere(sphere, tmp_path, source):
    far = np.array([[30.0, 5.0, -2.0], [-40.0, 0.0, 9.0]])
    save_nerfstudio(sphere, tmp_path / "ns", points=np.concatenate([surface_points(), far]) if source == "ply" else None,
                    masks=source == "masks")  # fmt: skip
    if source == "masks":
        back = load_nerfstudio(tmp_path / "ns")
    else:
        with pytest.warns(UserWarning, match="no 'mask_path'"):
            back = load_nerfstudio(tmp_path / "ns")
    centre = back.to_normalized(SCALE[:3, 3][None])[0]
    radius = RADIUS * 1.7 / float(torch.linalg.det(back.scale_mat[:3, :3])) ** (1 / 3)
    assert float(centre.norm()) + radius <= 1.0
    assert radius > {"masks": 0.5, "ply": 0.85, "cameras": 0.3}[source]
    if source == "cameras":  # the largest sphere about the look-at point that every camera sees whole
        assert float(centre.norm()) < 1e-9  # the cameras look at the object's centre


def test_distortion_undone_or_refused(sphere, tmp_path):
    save_nerfstudio(sphere, tmp_path / "ns")
    path = tmp_path / "ns" / "transforms.json"
    meta = json.loads(path.read_text())
    meta["frames"][2]["k1"] = -0.4  # a per-frame override of the top-level k1 = 0
    path.write_text(json.dumps(meta))
    plain = load_nerfstudio(tmp_path / "ns", scale_mat=SCALE, distortion="undistort")
    changed = [i for i in range(6) if (plain.images[i] - sphere.images[i]).abs().max() > 1.5 / 255]  # beyond PNG rounding
    assert changed == [2]  # only the distorted view is resampled
    with pytest.raises(ValueError, match=r"transforms.json: frame 2 has lens distortion .* distortion='refuse'"):
        load_nerfstudio(tmp_path / "ns", distortion="refuse")


def test_load_multiview_detects_nerfstudio(sphere, tmp_path):
    save_nerfstudio(sphere, tmp_path / "ns")
    assert detect_format(tmp_path / "ns") == "nerfstudio"
    ds = load_multiview(MultiViewDataConfig(data=str(tmp_path / "ns"), test_every=4, test_offset=1), log=None)
    assert ds.splits == {"train": [0, 2, 3, 4], "test": [1, 5]} and len(ds) == 6


# -- broken files ---------------------------------------------------------------------------------


@pytest.fixture()
def folder(sphere, tmp_path):
    return save_nerfstudio(sphere, tmp_path / "ns")


def _edit(folder, change):
    path = folder / "transforms.json"
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


def test_missing_image(folder):
    (folder / "images" / "frame_00003.png").unlink()
    with pytest.raises(ValueError, match=r"images/frame_00003.png: image file not found"):
        load_nerfstudio(folder)


def test_missing_intrinsics(folder):
    _edit(folder, lambda m: m["frames"][0].pop("fl_x"))
    with pytest.raises(ValueError, match=r"transforms.json: frame 0: missing 'fl_x' \(at the top level or in the frame\)"):
        load_nerfstudio(folder)


def test_unsupported_camera_model(folder):
    _edit(folder, lambda m: m.update(camera_model="OPENCV_FISHEYE"))
    with pytest.raises(ValueError, match=r"frame 0 has camera_model 'OPENCV_FISHEYE'; supported: SIMPLE_PINHOLE"):
        load_nerfstudio(folder)


def test_masks_on_some_frames_only(folder):
    _edit(folder, lambda m: m["frames"][4].pop("mask_path"))
    with pytest.raises(ValueError, match=r"frames \[4\] have no 'mask_path' while 5 others do"):
        load_nerfstudio(folder)


def test_bad_pose_and_json(folder):
    _edit(folder, lambda m: m["frames"][1].update(transform_matrix=[[2, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]))
    with pytest.raises(ValueError, match=r"frame 1 'transform_matrix' is no rigid transform"):
        load_nerfstudio(folder)
    (folder / "transforms.json").write_text("{ not json")
    with pytest.raises(ValueError, match=r"transforms.json: malformed JSON"):
        load_nerfstudio(folder)


def test_point_cloud_named_but_missing(sphere, tmp_path):
    save_nerfstudio(sphere, tmp_path / "ns", points=surface_points(), masks=False)
    (tmp_path / "ns" / "sparse_pc.ply").unlink()
    with pytest.warns(UserWarning), pytest.raises(ValueError, match=r"'ply_file_path' names .*sparse_pc.ply, which does not exist"):
        load_nerfstudio(tmp_path / "ns")
