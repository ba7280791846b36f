"""IDR and NeRF folders: write -> read round trips, and one clear error per kind of broken folder."""

import json
import shutil

import numpy as np
import pytest
import torch

from taichi_sdf.data.multiview import estimate_normalization, load_idr, load_nerf, save_idr, save_nerf, sphere_dataset

SCALE = torch.tensor(
    [[2.0, 0.0, 0.0, 0.3], [0.0, 2.0, 0.0, -0.1], [0.0, 0.0, 2.0, 1.5], [0.0, 0.0, 0.0, 1.0]], dtype=torch.float64
)


@pytest.fixture(scope="module")
def dataset():
    return sphere_dataset(n_views=6, width=20, height=16, radius=0.5, scale_mat=SCALE)


def _assert_same(a, b, cam_atol=1e-6):
    assert a.names == b.names or len(a) == len(b)
    torch.testing.assert_close(a.images, b.images, atol=1 / 255, rtol=0)  # PNG quantisation
    assert torch.equal(a.masks, b.masks)
    torch.testing.assert_close(a.cameras.K.double(), b.cameras.K.double(), atol=cam_atol, rtol=0)
    torch.testing.assert_close(a.cameras.T_cam_world.double(), b.cameras.T_cam_world.double(), atol=cam_atol, rtol=0)
    torch.testing.assert_close(a.scale_mat.double(), b.scale_mat.double())


def test_idr_roundtrip(dataset, tmp_path):
    save_idr(dataset, tmp_path / "scan")
    back = load_idr(tmp_path / "scan", test_views=[1])
    _assert_same(dataset, back)
    assert back.splits == {"train": list(range(6)), "test": [1]}
    # The world-frame projection in the file is world_mat (integer pixel centres).
    npz = np.load(tmp_path / "scan" / "cameras.npz")
    x_norm = torch.tensor([[0.1, 0.2, -0.3]], dtype=torch.float64)
    p = npz["world_mat_2"] @ np.append(dataset.to_world(x_norm)[0].numpy(), 1.0)
    uv, _ = dataset.cameras[2].project(x_norm)
    np.testing.assert_allclose(p[:2] / p[2] + 0.5, uv[0, 0].numpy(), atol=1e-9)


def test_nerf_roundtrip(dataset, tmp_path):
    save_nerf(dataset, tmp_path / "nerf", splits={"train": [0, 1, 2, 3], "test": [4, 5]})
    back = load_nerf(tmp_path / "nerf", scale_mat=SCALE)
    _assert_same(dataset, back)
    assert back.splits == {"train": [0, 1, 2, 3], "test": [4, 5]}
    meta = json.loads((tmp_path / "nerf" / "transforms_train.json").read_text())
    assert set(meta) == {"camera_angle_x", "frames"}
    assert meta["frames"][0]["file_path"] == "./train/r_0"


def test_nerf_auto_normalization_contains_the_object(dataset, tmp_path):
    save_nerf(dataset, tmp_path / "nerf")
    back = load_nerf(tmp_path / "nerf")  # scale_mat="auto": visual hull of the masks
    # The sphere (radius 0.5 in the normalised frame = 1.0 in world units, centred at SCALE's offset)
    # must land inside the unit sphere, and not be tiny in it.
    centre_world = SCALE[:3, 3]
    centre = back.to_normalized(centre_world[None])[0]
    radius = 1.0 / back.scale_mat[0, 0]
    assert float(centre.norm() + radius) <= 1.0
    assert float(radius) > 0.5


def test_estimate_normalization_rejects_empty_masks(dataset):
    with pytest.raises(ValueError, match="masks: the visual hull is empty"):
        estimate_normalization(dataset.cameras, torch.zeros_like(dataset.masks))


# -- broken IDR folders -----------------------------------------------------------------------------


@pytest.fixture()
def idr_folder(dataset, tmp_path):
    return save_idr(dataset, tmp_path / "scan")


def _rewrite_npz(path, **changes):
    data = dict(np.load(path))
    for k, v in changes.items():
        if v is None:
            data.pop(k)
        else:
            data[k] = v
    np.savez(path, **data)


def test_idr_missing_folder(tmp_path):
    with pytest.raises(ValueError, match="dataset folder not found"):
        load_idr(tmp_path / "nope")


def test_idr_missing_mask_folder(idr_folder):
    shutil.rmtree(idr_folder / "mask")
    with pytest.raises(ValueError, match=r"mask: mask folder not found"):
        load_idr(idr_folder)


def test_idr_count_mismatch(idr_folder):
    (idr_folder / "mask" / "003.png").unlink()
    with pytest.raises(ValueError, match="6 images in image/ but 5 masks in mask/"):
        load_idr(idr_folder)


def test_idr_missing_cameras(idr_folder):
    (idr_folder / "cameras.npz").unlink()
    with pytest.raises(ValueError, match=r"cameras.npz: camera file not found"):
        load_idr(idr_folder)


def test_idr_too_few_cameras(idr_folder):
    _rewrite_npz(idr_folder / "cameras.npz", world_mat_5=None)
    with pytest.raises(ValueError, match="5 world_mat_i entries but 6 images"):
        load_idr(idr_folder)


def test_idr_nan_matrix(idr_folder):
    m = np.eye(4)
    m[0, 0] = np.nan
    _rewrite_npz(idr_folder / "cameras.npz", world_mat_2=m)
    with pytest.raises(ValueError, match="'world_mat_2' contains non-finite values"):
        load_idr(idr_folder)


def test_idr_singular_world_mat(idr_folder):
    m = np.zeros((4, 4))
    m[3, 3] = 1
    _rewrite_npz(idr_folder / "cameras.npz", world_mat_1=m)
    with pytest.raises(ValueError, match=r"cameras\.npz: 'world_mat_1' is singular"):
        load_idr(idr_folder)


def test_idr_bad_matrix_shape(idr_folder):
    _rewrite_npz(idr_folder / "cameras.npz", world_mat_0=np.eye(3))
    with pytest.raises(ValueError, match=r"'world_mat_0' has shape \[3, 3\]"):
        load_idr(idr_folder)


def test_idr_singular_scale_mat(idr_folder):
    _rewrite_npz(idr_folder / "cameras.npz", scale_mat_4=np.diag([0.0, 1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="'scale_mat_4' is singular"):
        load_idr(idr_folder)


def test_idr_unreadable_image(idr_folder):
    (idr_folder / "image" / "002.png").write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match=r"image/002.png: cannot read image"):
        load_idr(idr_folder)


def test_idr_image_size_mismatch(idr_folder):
    from taichi_sdf.data.image_io import write_image

    write_image(idr_folder / "mask" / "001.png", np.zeros((8, 8), bool))
    with pytest.raises(ValueError, match=r"mask/001.png: mask size 8x8 differs from its image's 20x16"):
        load_idr(idr_folder)


def test_idr_bad_test_views(idr_folder):
    with pytest.raises(ValueError, match="test_views"):
        load_idr(idr_folder, test_views=[99])


# -- broken NeRF folders ----------------------------------------------------------------------------


@pytest.fixture()
def nerf_folder(dataset, tmp_path):
    return save_nerf(dataset, tmp_path / "nerf", splits={"train": [0, 1, 2], "test": [3, 4, 5]})


def test_nerf_missing_transforms(nerf_folder):
    (nerf_folder / "transforms_train.json").unlink()
    with pytest.raises(ValueError, match="transforms_train.json: file not found"):
        load_nerf(nerf_folder)


def test_nerf_malformed_json(nerf_folder):
    (nerf_folder / "transforms_test.json").write_text("{ not json")
    with pytest.raises(ValueError, match="transforms_test.json: malformed JSON"):
        load_nerf(nerf_folder)


def test_nerf_missing_fov(nerf_folder):
    path = nerf_folder / "transforms_train.json"
    meta = json.loads(path.read_text())
    del meta["camera_angle_x"]
    path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="transforms_train.json: missing 'camera_angle_x'"):
        load_nerf(nerf_folder)


def test_nerf_missing_image(nerf_folder):
    (nerf_folder / "test" / "r_1.png").unlink()
    with pytest.raises(ValueError, match=r"test/r_1.png: image file not found"):
        load_nerf(nerf_folder)


def test_nerf_bad_transform(nerf_folder):
    path = nerf_folder / "transforms_train.json"
    meta = json.loads(path.read_text())
    meta["frames"][1]["transform_matrix"] = [[1, 0], [0, 1]]
    path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="transforms_train.json: frame 1 'transform_matrix'"):
        load_nerf(nerf_folder)


def test_nerf_non_rotation_transform(nerf_folder):
    path = nerf_folder / "transforms_train.json"
    meta = json.loads(path.read_text())
    meta["frames"][0]["transform_matrix"][0][0] = 5.0
    path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"transforms_train\.json: frame 0 'transform_matrix' is no rigid camera-to-world pose"):
        load_nerf(nerf_folder, scale_mat=None)
