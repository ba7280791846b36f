"""COLMAP scene folders: text and binary models written and read back, checked against COLMAP's
documented conventions written out here (quaternion, world-to-camera pose, pixel centres at 0.5),
the normalisation, lens distortion, and one clear error per kind of broken folder."""

import math
import shutil
import struct

import numpy as np
import pytest
import torch

from taichi_sdf.data.image_io import write_image
from taichi_sdf.data.multiview import load_colmap, save_colmap, sphere_dataset
from taichi_sdf.data.multiview.colmap import dataset_to_colmap, pinhole_and_distortion
from taichi_sdf.data.multiview.colmap_model import (
    ColmapCamera,
    qvec_to_rotmat,
    read_colmap_model,
    rotmat_to_qvec,
    write_colmap_model,
)
from taichi_sdf.data.multiview.distortion import distort
from taichi_sdf.data.multiview.source import MultiViewDataConfig, detect_format, load_multiview


def _similarity(s=1.7, angle=0.4, offset=(0.3, -0.2, 1.1)):
    c, n = math.cos(angle), math.sin(angle)
    S = np.eye(4)
    S[:3, :3] = s * np.array([[c, 0, n], [0, 1, 0], [-n, 0, c]])
    S[:3, 3] = offset
    return torch.from_numpy(S)


SCALE = _similarity()
RADIUS = 0.5  # of the sphere in the normalised frame (0.85 in world units)


@pytest.fixture(scope="module")
def sphere():
    return sphere_dataset(n_views=6, width=20, height=16, radius=RADIUS, scale_mat=SCALE)


def surface_points(n=400, seed=0) -> np.ndarray:
    """`[n, 3]` points on the sphere, world units."""
    d = np.random.default_rng(seed).normal(size=(n, 3))
    x_n = RADIUS * d / np.linalg.norm(d, axis=1, keepdims=True)
    return x_n @ SCALE[:3, :3].numpy().T + SCALE[:3, 3].numpy()


def expected_world_pose(ds, i):
    """World-to-camera (R, t) in world units from the normalised-frame camera, derived by hand:
    x_n = Q^T (x_w - c) / s, so s x_cam = R_n Q^T (x_w - c) + s t_n."""
    S = SCALE.numpy()
    s = np.cbrt(np.linalg.det(S[:3, :3]))
    Q, c = S[:3, :3] / s, S[:3, 3]
    R_n, t_n = ds.cameras.R[i].double().numpy(), ds.cameras.t[i].double().numpy()
    R = R_n @ Q.T
    return R, s * t_n - R @ c


def colmap_project(model, image_id, x_world):
    """COLMAP's projection written out: x_cam = R(q) x + t, pixel = K (x/z, y/z) (centres at 0.5)."""
    im = model.images[image_id]
    cam = model.cameras[im.camera_id]
    p = x_world @ qvec_to_rotmat(im.qvec).T + im.tvec
    f, cx, cy = cam.params[:3] if cam.model == "SIMPLE_PINHOLE" else (cam.params[0], cam.params[2], cam.params[3])
    fy = f if cam.model == "SIMPLE_PINHOLE" else cam.params[1]
    return np.stack([f * p[:, 0] / p[:, 2] + cx, fy * p[:, 1] / p[:, 2] + cy], 1)


def test_quaternion_conventions():
    """qvec = (qw, qx, qy, qz); a 90 degree turn about z maps x to y."""
    h = math.sqrt(0.5)
    np.testing.assert_allclose(qvec_to_rotmat([h, 0, 0, h]), [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-12)
    np.testing.assert_allclose(qvec_to_rotmat([2.0, 0, 0, 0]), np.eye(3))  # normalised first
    rng = np.random.default_rng(3)
    for _ in range(20):  # includes rotations near 180 degrees, where the trace branch fails
        q = rng.normal(size=4)
        q = q / np.linalg.norm(q) * np.sign(q[0])
        np.testing.assert_allclose(rotmat_to_qvec(qvec_to_rotmat(q)), q, atol=1e-12)
    q = rotmat_to_qvec(np.diag([1.0, -1.0, -1.0]))
    np.testing.assert_allclose(np.abs(q), [0, 1, 0, 0], atol=1e-12)


@pytest.mark.parametrize("binary", [False, True])
def test_model_cameras_and_points_match_the_originals(sphere, tmp_path, binary):
    pts = surface_points()
    save_colmap(sphere, tmp_path / "scene", binary=binary, points=pts)
    model = read_colmap_model(tmp_path / "scene" / "sparse" / "0")
    assert sorted(model.images) == list(range(1, 7)) and len(model.cameras) == 1 and len(model.points) == len(pts)
    for i in range(6):
        im = model.images[i + 1]
        R, t = expected_world_pose(sphere, i)
        np.testing.assert_allclose(qvec_to_rotmat(im.qvec), R, atol=1e-5, rtol=0)
        np.testing.assert_allclose(im.tvec, t, atol=1e-5, rtol=0)
        cam = model.cameras[im.camera_id]
        K = sphere.cameras.K[i].double().numpy()
        assert cam.model == "SIMPLE_PINHOLE" and (cam.width, cam.height) == (20, 16)
        np.testing.assert_allclose(cam.params, [K[0, 0], K[0, 2], K[1, 2]], atol=1e-5, rtol=0)
        # Each keypoint is its 3D point's projection; the same points project to the same pixels
        # through our cameras of the normalised frame.
        assert len(im.xys) > 10 and (im.point3D_ids >= 1).all()
        xyz = model.points.xyz[im.point3D_ids - 1]
        np.testing.assert_allclose(colmap_project(model, i + 1, xyz), im.xys, atol=1e-9)
        uv, _ = sphere.cameras[i].project(sphere.to_normalized(torch.from_numpy(xyz)))
        np.testing.assert_allclose(uv[0].numpy(), im.xys, atol=1e-5)
    np.testing.assert_array_equal(model.points.xyz, pts)
    # tracks point back at the keypoints that observe them
    for pid, track in zip(model.points.ids, model.points.tracks):
        assert len(track) >= 1
        for iid, k in track:
            assert model.images[iid].point3D_ids[k] == pid


def test_text_and_binary_read_the_same(sphere, tmp_path):
    save_colmap(sphere, tmp_path / "txt", binary=False, points=surface_points())
    save_colmap(sphere, tmp_path / "bin", binary=True, points=surface_points())
    a, b = read_colmap_model(tmp_path / "txt" / "sparse" / "0"), read_colmap_model(tmp_path / "bin" / "sparse" / "0")
    assert a.cameras.keys() == b.cameras.keys() and a.images.keys() == b.images.keys()
    for k in a.cameras:
        assert (a.cameras[k].model, a.cameras[k].width, a.cameras[k].height) == (b.cameras[k].model, b.cameras[k].width, b.cameras[k].height)
        np.testing.assert_array_equal(a.cameras[k].params, b.cameras[k].params)  # the text form is exact (repr of floats)
    for k in a.images:
        x, y = a.images[k], b.images[k]
        assert (x.name, x.camera_id) == (y.name, y.camera_id)
        for attr in ("qvec", "tvec", "xys", "point3D_ids"):
            np.testing.assert_array_equal(getattr(x, attr), getattr(y, attr))
    for attr in ("ids", "xyz", "rgb", "error"):
        np.testing.assert_array_equal(getattr(a.points, attr), getattr(b.points, attr))
    assert all(np.array_equal(s, t) for s, t in zip(a.points.tracks, b.points.tracks))
    da, db = load_colmap(tmp_path / "txt"), load_colmap(tmp_path / "bin")
    assert torch.equal(da.cameras.K, db.cameras.K) and torch.equal(da.cameras.T_cam_world, db.cameras.T_cam_world)
    assert torch.equal(da.scale_mat, db.scale_mat) and torch.equal(da.images, db.images)


@pytest.mark.parametrize("binary", [False, True])
def test_load_colmap_gives_the_dataset_back(sphere, tmp_path, binary):
    save_colmap(sphere, tmp_path / "scene", binary=binary, points=surface_points())
    back = load_colmap(tmp_path / "scene", scale_mat=SCALE)  # the original normalisation: the original cameras
    torch.testing.assert_close(back.cameras.K.double(), sphere.cameras.K.double(), atol=1e-5, rtol=0)
    torch.testing.assert_close(back.cameras.T_cam_world.double(), sphere.cameras.T_cam_world.double(), atol=1e-5, rtol=0)
    torch.testing.assert_close(back.images, sphere.images, atol=1 / 255, rtol=0)
    assert torch.equal(back.masks, sphere.masks) and back.names == sphere.names
    assert back.splits == {"train": list(range(6))} and back.source == str(tmp_path / "scene")


@pytest.mark.parametrize("source", ["points", "masks"])
def test_auto_normalisation_puts_the_object_in_the_unit_sphere(sphere, tmp_path, source):
    far = np.array([[30.0, 5.0, -2.0], [-40.0, 0.0, 9.0], [3.0, -25.0, 1.0]])  # stray points of a reconstruction
    pts = np.concatenate([surface_points(), far]) if source == "points" else None
    save_colmap(sphere, tmp_path / "scene", binary=True, points=pts, masks=source == "masks")
    if source == "points":
        with pytest.warns(UserWarning, match="no masks/ folder"):
            back = load_colmap(tmp_path / "scene")
    else:
        back = load_colmap(tmp_path / "scene")
    centre = back.to_normalized(SCALE[:3, 3][None])[0]
    radius = RADIUS * 1.7 / float(torch.linalg.det(back.scale_mat[:3, :3])) ** (1 / 3)  # the sphere's, normalised
    assert float(centre.norm()) + radius <= 1.0
    assert radius > (0.85 if source == "points" else 0.5)  # not tiny: the stray points are left out
    # scale_mat maps the normalised frame back to COLMAP's: cameras project world points alike
    x_w = torch.from_numpy(surface_points(20, seed=1))
    model = read_colmap_model(tmp_path / "scene" / "sparse" / "0")
    for i in range(6):
        uv, _ = back.cameras[i].project(back.to_normalized(x_w))
        np.testing.assert_allclose(uv[0].numpy(), colmap_project(model, i + 1, x_w.numpy()), atol=1e-5)


def test_hand_written_text_model_and_hand_packed_binary(tmp_path):
    """A model written from COLMAP's format description alone, text and binary."""
    sparse = tmp_path / "scene" / "sparse"  # the <scene>/sparse/ layout (no 0/)
    sparse.mkdir(parents=True)
    h = math.sqrt(0.5)
    (sparse / "cameras.txt").write_text(
        "# Camera list with one line of data per camera:\n#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]\n"
        "1 SIMPLE_PINHOLE 8 6 10.0 4.0 3.0\n"
    )
    (sparse / "images.txt").write_text(
        "# Image list with two lines of data per image:\n"
        f"1 {h} 0 0 {h} 0.5 0 4 1 a.png\n"  # 90 degrees about z, then 4 units forward
        "4.5 3.25 7 1.0 1.0 -1\n"
        "2 1 0 0 0 0 0 4 1 b.png\n"
        "\n"  # an image without keypoints: its second line is empty
    )
    (sparse / "points3D.txt").write_text("# 3D point list\n7 0.25 0.1 0 255 0 0 0.3 1 0 2 5\n")
    (tmp_path / "scene" / "images").mkdir()
    (tmp_path / "scene" / "masks").mkdir()
    for n in ("a", "b"):
        write_image(tmp_path / "scene" / "images" / f"{n}.png", torch.rand(6, 8, 3))
        write_image(tmp_path / "scene" / "masks" / f"{n}.png", torch.ones(6, 8, dtype=torch.bool))
    model = read_colmap_model(sparse)
    assert [im.name for im in model.images.values()] == ["a.png", "b.png"]
    assert model.images[1].point3D_ids.tolist() == [7, -1] and len(model.images[2].xys) == 0
    np.testing.assert_array_equal(model.points.tracks[0], [[1, 0], [2, 5]])
    # point (0.25, 0.1, 0) -> camera (-0.1 + 0.5, 0.25, 4) -> pixel (10 * 0.4 / 4 + 4, 10 * 0.25 / 4 + 3)
    ds = load_colmap(tmp_path / "scene", scale_mat=None)
    uv, z = ds.cameras[0].project(torch.tensor([[0.25, 0.1, 0.0]], dtype=torch.float64))
    np.testing.assert_allclose(uv[0, 0].numpy(), [5.0, 3.625], atol=1e-12)
    assert float(z[0, 0]) == pytest.approx(4.0)
    # the same model packed by hand in the documented binary layout reads the same
    (sparse / "cameras.bin").write_bytes(struct.pack("<QiiQQddd", 1, 1, 0, 8, 6, 10.0, 4.0, 3.0))
    (sparse / "images.bin").write_bytes(
        struct.pack("<Q", 2)
        + struct.pack("<idddddddi", 1, h, 0, 0, h, 0.5, 0, 4, 1) + b"a.png\x00"
        + struct.pack("<Q", 2) + struct.pack("<ddqddq", 4.5, 3.25, 7, 1.0, 1.0, -1)
        + struct.pack("<idddddddi", 2, 1, 0, 0, 0, 0, 0, 4, 1) + b"b.png\x00" + struct.pack("<Q", 0)
    )  # fmt: skip
    (sparse / "points3D.bin").write_bytes(struct.pack("<QQdddBBBdQiiii", 1, 7, 0.25, 0.1, 0, 255, 0, 0, 0.3, 2, 1, 0, 2, 5))
    binary = read_colmap_model(sparse)  # binary is preferred when both are present
    assert binary.source == str(sparse)
    for k in (1, 2):
        np.testing.assert_array_equal(binary.images[k].qvec, model.images[k].qvec)
        np.testing.assert_array_equal(binary.images[k].xys, model.images[k].xys)
        np.testing.assert_array_equal(binary.images[k].point3D_ids, model.images[k].point3D_ids)
    np.testing.assert_array_equal(binary.cameras[1].params, model.cameras[1].params)
    np.testing.assert_array_equal(binary.points.xyz, model.points.xyz)
    np.testing.assert_array_equal(binary.points.tracks[0], model.points.tracks[0])
    # and our writer produces byte-identical binary files
    write_colmap_model(model, tmp_path / "ours", binary=True)
    for name in ("cameras.bin", "images.bin", "points3D.bin"):
        assert (tmp_path / "ours" / name).read_bytes() == (sparse / name).read_bytes(), name


@pytest.mark.parametrize(
    "model, params, K, coeffs",
    [
        ("SIMPLE_PINHOLE", [10, 4, 3], [10, 10, 4, 3], [0, 0, 0, 0, 0]),
        ("PINHOLE", [10, 11, 4, 3], [10, 11, 4, 3], [0, 0, 0, 0, 0]),
        ("SIMPLE_RADIAL", [10, 4, 3, 0.1], [10, 10, 4, 3], [0.1, 0, 0, 0, 0]),
        ("RADIAL", [10, 4, 3, 0.1, -0.2], [10, 10, 4, 3], [0.1, -0.2, 0, 0, 0]),
        ("OPENCV", [10, 11, 4, 3, 0.1, -0.2, 0.01, 0.02], [10, 11, 4, 3], [0.1, -0.2, 0.01, 0.02, 0]),
    ],
)
def test_camera_models(model, params, K, coeffs):
    k, c = pinhole_and_distortion(ColmapCamera(1, model, 8, 6, np.array(params, float)), "x")
    np.testing.assert_array_equal(k[[0, 1, 0, 1], [0, 1, 2, 2]], K)
    np.testing.assert_array_equal(c, coeffs)


def test_distortion_formula():
    """OpenCV / COLMAP: radial (1 + k1 r^2 + k2 r^4 + k3 r^6), tangential p1, p2, by hand at (0.3, -0.2)."""
    k1, k2, p1, p2, k3 = 0.1, -0.05, 0.01, -0.02, 0.003
    x, y = 0.3, -0.2
    r2 = x * x + y * y
    radial = 1 + k1 * r2 + k2 * r2**2 + k3 * r2**3
    want = [x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x), y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y]
    got = distort(torch.tensor([x, y], dtype=torch.float64), torch.tensor([k1, k2, p1, p2, k3], dtype=torch.float64))
    np.testing.assert_allclose(got.numpy(), want, atol=1e-15)


def _distorted_sphere(ds, coeffs):
    """Masks `[N, H, W]` of the sphere photographed through the distorted lens: each pixel centre is
    undistorted (fixed-point iteration) to a pinhole ray, then intersected with the sphere."""
    N, H, W = ds.masks.shape
    v, u = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    out = torch.zeros(N, H, W, dtype=torch.bool)
    c = torch.tensor(coeffs, dtype=torch.float64)
    for i in range(N):
        K = ds.cameras.K[i].double()
        xd = torch.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1]], -1).double()
        x = xd.clone()
        for _ in range(100):
            x = x + (xd - distort(x, c))
        d_cam = torch.cat([x, torch.ones_like(x[..., :1])], -1)
        R, t = ds.cameras.R[i].double(), ds.cameras.t[i].double()
        o = -R.T @ t
        d = d_cam @ R  # R^T d_cam per pixel
        d = d / d.norm(dim=-1, keepdim=True)
        b = d @ o
        out[i] = b * b - o @ o + RADIUS**2 > 0
    return out


def test_distortion_is_undone_or_refused(tmp_path):
    ds = sphere_dataset(n_views=3, width=96, height=80, radius=RADIUS, camera_distance=1.3, fov_x_deg=70.0)
    coeffs = [-0.3, 0.08, 0.01, -0.008, 0.0]
    distorted = _distorted_sphere(ds, coeffs)
    model = dataset_to_colmap(ds)
    cam = model.cameras[1]
    model.cameras[1] = ColmapCamera(1, "OPENCV", cam.width, cam.height, np.array([cam.params[0], cam.params[0], *cam.params[1:], *coeffs[:4]]))
    write_colmap_model(model, tmp_path / "scene" / "sparse" / "0", binary=False)
    for folder in ("images", "masks"):
        (tmp_path / "scene" / folder).mkdir()
    for i, im in enumerate(model.images.values()):
        write_image(tmp_path / "scene" / "images" / im.name, distorted[i, ..., None].float().expand(-1, -1, 3))
        write_image(tmp_path / "scene" / "masks" / im.name, distorted[i])
    back = load_colmap(tmp_path / "scene", scale_mat=torch.eye(4, dtype=torch.float64))
    torch.testing.assert_close(back.cameras.K, ds.cameras.K.double(), atol=1e-9, rtol=0)
    # The silhouette's one-pixel band: pixels whose 3x3 neighbourhood holds both sides.
    m = ds.masks[:, None].float()
    band = (torch.nn.functional.max_pool2d(m, 3, 1, 1) != -torch.nn.functional.max_pool2d(-m, 3, 1, 1))[:, 0]
    raw_off_band = int(((distorted != ds.masks) & ~band).sum())
    assert raw_off_band > 100  # the lens moves the silhouette by more than a pixel
    assert int(((back.masks != ds.masks) & ~band).sum()) == 0  # resampled: the pinhole silhouette, to a pixel
    with pytest.raises(ValueError, match=r"sparse/0: camera\(s\) \[1\] have lens distortion and distortion='refuse'"):
        load_colmap(tmp_path / "scene", distortion="refuse")
    model.cameras[1] = ColmapCamera(1, "OPENCV_FISHEYE", cam.width, cam.height, np.array([30.0, 30, 24, 20, 0.1, 0, 0, 0]))
    write_colmap_model(model, tmp_path / "scene" / "sparse" / "0", binary=False)
    with pytest.raises(ValueError, match="uses the OPENCV_FISHEYE model; supported: SIMPLE_PINHOLE, .*image_undistorter"):
        load_colmap(tmp_path / "scene")


def test_load_multiview_detects_colmap(sphere, tmp_path):
    save_colmap(sphere, tmp_path / "scene", binary=True, points=surface_points())
    shutil.move(tmp_path / "scene" / "sparse" / "0", tmp_path / "flat")
    shutil.rmtree(tmp_path / "scene" / "sparse")
    shutil.move(tmp_path / "flat", tmp_path / "scene" / "sparse")  # <scene>/sparse/ holds the files
    assert detect_format(tmp_path / "scene") == "colmap"
    ds = load_multiview(MultiViewDataConfig(data=str(tmp_path / "scene"), test_every=3, test_offset=1), log=None)
    assert ds.splits == {"train": [0, 2, 3, 5], "test": [1, 4]} and len(ds) == 6
    explicit = load_multiview(MultiViewDataConfig(data=str(tmp_path / "scene"), format="colmap"), log=None)
    assert torch.equal(explicit.cameras.K, ds.cameras.K)


# -- broken folders -------------------------------------------------------------------------------


@pytest.fixture()
def scene(sphere, tmp_path):
    save_colmap(sphere, tmp_path / "txt", binary=False, points=surface_points(60))
    save_colmap(sphere, tmp_path / "bin", binary=True, points=surface_points(60))
    return tmp_path


def test_missing_model_file(scene):
    (scene / "txt" / "sparse" / "0" / "points3D.txt").unlink()
    with pytest.raises(ValueError, match=r"txt/sparse/0: expected a COLMAP model: .*found cameras.txt, images.txt; missing .*points3D.txt"):
        load_colmap(scene / "txt")
    with pytest.raises(ValueError, match=r"points3D.txt: file not found"):
        read_colmap_model(scene / "txt" / "sparse" / "0", ext=".txt")
    shutil.rmtree(scene / "bin" / "sparse")
    with pytest.raises(ValueError, match=r"bin: no COLMAP model; expected cameras, images and points3D .* in sparse/0/ or sparse/"):
        load_colmap(scene / "bin")


def test_unknown_camera_model(scene):
    path = scene / "txt" / "sparse" / "0" / "cameras.txt"
    path.write_text(path.read_text().replace("SIMPLE_PINHOLE", "FANCY_LENS"))
    with pytest.raises(ValueError, match=r"cameras.txt:\d+: camera 1 has unknown model 'FANCY_LENS'; expected one of SIMPLE_PINHOLE"):
        load_colmap(scene / "txt")
    path = scene / "bin" / "sparse" / "0" / "cameras.bin"
    raw = bytearray(path.read_bytes())
    raw[12:16] = struct.pack("<i", 42)  # after the count (8 bytes) and the camera id (4 bytes)
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"cameras.bin: camera 1 has unknown model id 42; expected one of 0 \(SIMPLE_PINHOLE\)"):
        load_colmap(scene / "bin")


@pytest.mark.parametrize("name", ["cameras.bin", "images.bin", "points3D.bin"])
def test_truncated_binary(scene, name):
    path = scene / "bin" / "sparse" / "0" / name
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(ValueError, match=rf"{name}: truncated: .* needs \d+ bytes at offset \d+, but the file has \d+ bytes"):
        load_colmap(scene / "bin")


def test_malformed_text(scene):
    path = scene / "txt" / "sparse" / "0" / "images.txt"
    lines = path.read_text().splitlines()
    first = next(i for i, line in enumerate(lines) if not line.startswith("#"))
    lines[first] = lines[first].replace(" 1 000.png", " one 000.png")
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=rf"images.txt:{first + 1}: expected 'IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME'"):
        load_colmap(scene / "txt")
    lines[first] = "1 0 0 0 0 0 0 4 1 000.png"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=rf"images.txt:{first + 1}: image 1 has a zero quaternion"):
        load_colmap(scene / "txt")
    lines[first] = "1 1 0 0 0 0 0 4 1 000.png"
    for bad, why in (("1.5 2.5 x", "expected POINTS2D as X Y POINT3D_ID triples"), ("1.5 2.5 3 4", "has 4 values")):
        lines[first + 1] = bad
        path.write_text("\n".join(lines) + "\n")
        with pytest.raises(ValueError, match=rf"images.txt:{first + 2}: .*{why}"):
            read_colmap_model(scene / "txt" / "sparse" / "0")


def test_image_listed_but_missing(scene):
    (scene / "bin" / "images" / "002.png").unlink()
    with pytest.raises(ValueError, match=r"bin/images: 1 image\(s\) the model lists are missing: 002.png"):
        load_colmap(scene / "bin")


def test_mask_missing_for_an_image(scene):
    (scene / "bin" / "masks" / "004.png").unlink()
    with pytest.raises(ValueError, match=r"bin/masks: no mask for 1 image\(s\): 004.png"):
        load_colmap(scene / "bin")


def test_image_size_differs_from_its_camera(scene):
    write_image(scene / "bin" / "images" / "001.png", torch.zeros(16, 21, 3))
    with pytest.raises(ValueError, match=r"001.png: size 21x16 differs from its camera's 20x16"):
        load_colmap(scene / "bin")


def test_image_refers_to_a_missing_camera(scene):
    path = scene / "txt" / "sparse" / "0" / "cameras.txt"
    path.write_text(path.read_text().replace("\n1 SIMPLE_PINHOLE", "\n3 SIMPLE_PINHOLE"))
    with pytest.raises(ValueError, match=r"image 1 \(000.png\) refers to camera 1, which the cameras file does not list"):
        load_colmap(scene / "txt")


def test_no_points_and_no_masks(sphere, tmp_path):
    save_colmap(sphere, tmp_path / "scene", points=None, masks=False)
    with pytest.warns(UserWarning, match="no masks/ folder"):
        with pytest.raises(ValueError, match=r"scene/sparse/0: cannot normalise to the unit sphere: points3D has 0 point\(s\) seen in >= 2"):
            load_colmap(tmp_path / "scene")
    with pytest.warns(UserWarning, match="no masks/ folder"):
        ds = load_colmap(tmp_path / "scene", scale_mat=SCALE)  # a given normalisation needs neither
    assert bool(ds.masks.all())


def test_background_points_that_swallow_the_cameras_warn(sphere, tmp_path):
    d = np.random.default_rng(2).normal(size=(200, 3))
    wall = 8.0 * d / np.linalg.norm(d, axis=1, keepdims=True) + SCALE[:3, 3].numpy()  # a room around the capture
    save_colmap(sphere, tmp_path / "scene", points=np.concatenate([surface_points(), wall]), masks=False)
    model = read_colmap_model(tmp_path / "scene" / "sparse" / "0")
    model.points.tracks = [np.array([[1, 0], [2, 0]])] * len(model.points)  # every point seen twice
    write_colmap_model(model, tmp_path / "scene" / "sparse" / "0", binary=False)
    with pytest.warns(UserWarning) as record:
        load_colmap(tmp_path / "scene")
    messages = [str(w.message) for w in record]
    assert any("no masks/ folder" in m for m in messages)
    assert any("scene: 6 of 6 cameras lie inside the unit sphere after normalisation" in m for m in messages)
