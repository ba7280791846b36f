"""DVR data formats. OpenEXR io: write -> read round trips for every supported compression and pixel type,
files built byte by byte from the specification (independent of the module's writer), and the errors.
The DVR multi-view folder: see the second half."""

import struct
import zlib

import numpy as np
import pytest
import torch

from taichi_sdf.data.exr import read_depth_exr, read_exr, write_exr
from taichi_sdf.data.image_io import write_image
from taichi_sdf.data.multiview import (
    load_dvr,
    load_dvr_depth,
    read_dvr_cameras,
    save_idr,
    sphere_dataset,
    write_dvr_cameras,
    write_dvr_scene,
)
from taichi_sdf.data.multiview.source import MultiViewDataConfig, detect_format, load_multiview


def _depth(H=37, W=23, seed=0):
    rng = np.random.default_rng(seed)
    d = (1.0 + rng.random((H, W))).astype(np.float32)
    d[rng.random((H, W)) < 0.3] = np.inf  # DVR's background
    d[:5, :7] = 1.25  # runs, so RLE and ZIP shrink something
    return d


@pytest.mark.parametrize("compression", ["none", "rle", "zips", "zip"])
@pytest.mark.parametrize("pixel_type", ["float", "half"])
def test_roundtrip(tmp_path, compression, pixel_type):
    rgb = np.random.default_rng(1).random((19, 33, 3)).astype(np.float32)
    rgb[3:9] = 0.5
    path = write_exr(tmp_path / "img.exr", rgb, pixel_type=pixel_type, compression=compression)
    back = read_exr(path)
    assert list(back) == ["B", "G", "R"]  # alphabetical, as the format requires
    dtype = np.float32 if pixel_type == "float" else np.float16
    for i, c in enumerate("RGB"):
        assert back[c].dtype == dtype and back[c].shape == (19, 33)
        np.testing.assert_array_equal(back[c], rgb[..., i].astype(dtype))
    d = _depth()
    write_exr(tmp_path / "d.exr", d, compression=compression, pixel_type=pixel_type)
    got = read_depth_exr(tmp_path / "d.exr")
    assert got.dtype == np.float32 and np.isinf(got).sum() == np.isinf(d).sum()
    np.testing.assert_array_equal(got, d.astype(dtype).astype(np.float32))


def test_compression_shrinks_and_dict_input(tmp_path):
    d = np.full((64, 64), np.inf, np.float32)
    d[20:40, 10:50] = 2.0
    sizes = {c: write_exr(tmp_path / f"{c}.exr", {"Z": d}, compression=c).stat().st_size for c in ("none", "rle", "zip")}
    # RLE sees EXR's 2-way byte interleave of 4-byte floats as alternating bytes: it shrinks less
    assert sizes["zip"] < sizes["none"] / 10 and sizes["rle"] < sizes["none"] * 0.7
    assert list(read_exr(tmp_path / "zip.exr")) == ["Z"]
    np.testing.assert_array_equal(read_depth_exr(tmp_path / "zip.exr"), d)


# --------------------------------------------------------------- files built from the specification


def _attr(name, kind, value):
    return name.encode() + b"\0" + kind.encode() + b"\0" + struct.pack("<i", len(value)) + value


def _spec_zip(raw: bytes) -> bytes:
    """The ZIP chunk coder as written in the OpenEXR documentation, one byte at a time."""
    t = bytearray(raw[0::2] + raw[1::2])
    prev = t[0]
    for i in range(1, len(t)):
        cur = t[i]
        t[i] = (cur - prev + 128 + 256) & 0xFF
        prev = cur
    return zlib.compress(bytes(t))


def _hand_built(compression: int, chunk_lines: int, y0=2, extra_attrs=b""):
    """A 24x4 file, data window y in [y0, y0 + 3], channels A (HALF) and Z (FLOAT); returns (bytes, A, Z,
    number of chunks stored compressed)."""
    W, H = 24, 4
    A = (np.arange(H * W, dtype=np.float16).reshape(H, W) // 8) / 4
    Z = np.full((H, W), 1.5, np.float32)
    Z[1, 2:9] = np.inf
    Z[3, 5] = -7.25
    chlist = b"A\0" + struct.pack("<iB3xii", 1, 0, 1, 1) + b"Z\0" + struct.pack("<iB3xii", 2, 0, 1, 1) + b"\0"
    header = struct.pack("<iI", 20000630, 2) + extra_attrs + b"".join([
        _attr("channels", "chlist", chlist),
        _attr("compression", "compression", bytes([compression])),
        _attr("dataWindow", "box2i", struct.pack("<4i", 0, y0, W - 1, y0 + H - 1)),
        _attr("displayWindow", "box2i", struct.pack("<4i", 0, 0, W - 1, y0 + H - 1)),
        _attr("lineOrder", "lineOrder", b"\0"),
        _attr("pixelAspectRatio", "float", struct.pack("<f", 1.0)),
        _attr("screenWindowCenter", "v2f", struct.pack("<2f", 0, 0)),
        _attr("screenWindowWidth", "float", struct.pack("<f", 1.0)),
    ]) + b"\0"  # fmt: skip
    chunks, n_packed = [], 0
    for y in range(0, H, chunk_lines):
        raw = b"".join(A[k].astype("<f2").tobytes() + Z[k].astype("<f4").tobytes() for k in range(y, min(H, y + chunk_lines)))
        data = _spec_zip(raw) if compression in (2, 3) else raw
        data = data if len(data) < len(raw) else raw  # the format stores a chunk raw when it would not shrink
        n_packed += len(data) < len(raw)
        chunks.append(struct.pack("<ii", y0 + y, len(data)) + data)
    offsets, off = [], len(header) + 8 * len(chunks)
    for c in chunks:
        offsets.append(off)
        off += len(c)
    return header + struct.pack(f"<{len(offsets)}Q", *offsets) + b"".join(chunks), A, Z, n_packed


@pytest.mark.parametrize("compression, lines", [(0, 1), (2, 1), (3, 16)])
def test_reads_hand_built_file(tmp_path, compression, lines):
    extra = _attr("owner", "string", b"someone")  # unknown attributes are skipped
    blob, A, Z, n_packed = _hand_built(compression, lines, extra_attrs=extra)
    assert n_packed == (0 if compression == 0 else -(-4 // lines))  # ZIP chunks really are compressed
    (tmp_path / "h.exr").write_bytes(blob)
    got = read_exr(tmp_path / "h.exr")
    assert list(got) == ["A", "Z"] and got["A"].dtype == np.float16 and got["Z"].dtype == np.float32
    np.testing.assert_array_equal(got["A"], A)
    np.testing.assert_array_equal(got["Z"], Z)
    np.testing.assert_array_equal(read_depth_exr(tmp_path / "h.exr"), Z)  # "Z" before alphabetical order


def test_our_zip_chunks_match_the_specification(tmp_path):
    d = np.full((3, 40), 2.5, np.float32)
    d[1, 3:30] = np.inf
    write_exr(tmp_path / "z.exr", d, compression="zips")
    blob = (tmp_path / "z.exr").read_bytes()
    for y in range(3):
        chunk = struct.pack("<ii", y, len(_spec_zip(d[y].tobytes()))) + _spec_zip(d[y].tobytes())
        assert len(chunk) < 8 + d[y].nbytes and chunk in blob


def test_errors_name_the_file_and_the_problem(tmp_path):
    blob, *_ = _hand_built(4, 32)  # PIZ
    (tmp_path / "piz.exr").write_bytes(blob)
    with pytest.raises(ValueError, match=r"piz\.exr: unsupported EXR compression PIZ"):
        read_exr(tmp_path / "piz.exr")
    blob, *_ = _hand_built(0, 1)
    (tmp_path / "tiled.exr").write_bytes(blob[:4] + struct.pack("<I", 2 | 0x200) + blob[8:])
    with pytest.raises(ValueError, match=r"tiled\.exr: tiled"):
        read_exr(tmp_path / "tiled.exr")
    (tmp_path / "short.exr").write_bytes(blob[:-5])
    with pytest.raises(ValueError, match=r"short\.exr: corrupt chunk"):
        read_exr(tmp_path / "short.exr")
    (tmp_path / "png.exr").write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(ValueError, match=r"png\.exr: not an OpenEXR file"):
        read_exr(tmp_path / "png.exr")
    with pytest.raises(ValueError, match=r"missing\.exr: EXR file not found"):
        read_exr(tmp_path / "missing.exr")
    with pytest.raises(ValueError, match="compression"):
        write_exr(tmp_path / "x.exr", np.zeros((2, 2)), compression="piz")
    with pytest.raises(ValueError, match="image"):
        write_exr(tmp_path / "x.exr", np.zeros((2, 2, 2, 2)))


# ------------------------------------------------------------------------------ DVR multi-view folders


def _similarity(s=1.7, angle=0.4, offset=(0.3, -0.2, 1.1)):
    c, n = np.cos(angle), np.sin(angle)
    S = np.eye(4)
    S[:3, :3] = s * np.array([[c, 0, n], [0, 1, 0], [-n, 0, c]])
    S[:3, 3] = offset
    return torch.from_numpy(S)


SCALE = _similarity()


@pytest.fixture(scope="module")
def sphere():
    return sphere_dataset(n_views=5, width=20, height=16, radius=0.45, scale_mat=SCALE)


def _object_depth(ds):
    """Camera z `[N, H, W]` of the sphere (object frame), 0 off the mask."""
    o, d = (x.cpu().double() for x in ds.cameras.image_rays())
    b = (o * d).sum(-1)
    t = -b - torch.sqrt((b * b - (o * o).sum(-1) + 0.45**2).clamp_min(0))
    p = o + t[..., None] * d
    z = torch.einsum("bj,bhwj->bhw", ds.cameras.R[:, 2].double(), p) + ds.cameras.t[:, 2, None, None].double()
    return torch.where(ds.masks, z, torch.zeros_like(z))


def _dvr_project(npz, i, p_object):
    """DVR's convention, written out: p_cam = camera_mat @ world_mat @ scale_mat @ p; pixels in [-1, 1]."""
    P = npz[f"camera_mat_{i}"] @ npz[f"world_mat_{i}"] @ npz[f"scale_mat_{i}"]
    q = np.concatenate([p_object, np.ones((len(p_object), 1))], 1) @ P.T
    return q[:, :2] / q[:, 2:3], q[:, 2]


def test_dvr_roundtrip_and_projection(sphere, tmp_path):
    write_dvr_scene(tmp_path / "scan", sphere, depth=_object_depth(sphere))
    back = load_dvr(tmp_path / "scan", test_views=[2])
    torch.testing.assert_close(back.images, sphere.images, atol=1 / 255, rtol=0)
    assert torch.equal(back.masks, sphere.masks) and back.splits == {"train": list(range(5)), "test": [2]}
    torch.testing.assert_close(back.cameras.K.double(), sphere.cameras.K.double(), atol=1e-9, rtol=0)
    torch.testing.assert_close(back.cameras.T_cam_world.double(), sphere.cameras.T_cam_world.double(), atol=1e-9, rtol=0)
    torch.testing.assert_close(back.scale_mat, SCALE)
    # The file follows DVR's chain: the same pixels as our cameras, z in world units.
    npz = np.load(tmp_path / "scan" / "cameras.npz")
    p = np.random.default_rng(0).uniform(-0.5, 0.5, (7, 3))
    W, H = sphere.width, sphere.height
    for i in range(5):
        ndc, z_world = _dvr_project(npz, i, p)
        uv, z = sphere.cameras[i].project(torch.from_numpy(p).to(sphere.cameras.dtype))
        expect = np.stack([2 * (uv[0, :, 0].numpy() - 0.5) / (W - 1) - 1, 2 * (uv[0, :, 1].numpy() - 0.5) / (H - 1) - 1], 1)
        np.testing.assert_allclose(ndc, expect, atol=1e-9)
        np.testing.assert_allclose(z_world, 1.7 * z[0].numpy(), rtol=1e-9)
        R = npz[f"world_mat_{i}"][:3, :3]  # world_mat is rigid ("Rt")
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-9)
    depth = load_dvr_depth(tmp_path / "scan")
    ref = _object_depth(sphere).float()
    assert torch.equal(torch.isinf(depth), ~sphere.masks)
    torch.testing.assert_close(depth[sphere.masks], ref[sphere.masks], rtol=1e-6, atol=0)
    world = load_dvr_depth(tmp_path / "scan", frame="world")
    torch.testing.assert_close(world[sphere.masks], 1.7 * ref[sphere.masks], rtol=1e-6, atol=0)


def test_reads_a_hand_written_dvr_camera_file(tmp_path):
    """A file written from DVR's definitions alone (look-at pose, K in [-1, 1] pixels, scale_mat)."""
    W, H, f_px = 30, 20, 25.0
    K_ndc = np.array([[2 * f_px / (W - 1), 0, 0.1, 0], [0, 2 * f_px / (H - 1), -0.05, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    eye = np.array([0.4, -1.0, 2.5])
    z = -eye / np.linalg.norm(eye)
    x = np.cross(z, [0.0, 1.0, 0.0])
    x /= np.linalg.norm(x)
    Rt = np.eye(4)
    Rt[:3, :3] = np.stack([x, np.cross(z, x), z])
    Rt[:3, 3] = -Rt[:3, :3] @ eye
    S = np.diag([0.5, 0.5, 0.5, 1.0])
    S[:3, 3] = (0.1, 0.0, -0.2)
    np.savez(tmp_path / "cameras.npz", camera_mat_0=K_ndc, world_mat_0=Rt, scale_mat_0=S)
    cams, scale = read_dvr_cameras(tmp_path / "cameras.npz", W, H)
    torch.testing.assert_close(scale, torch.from_numpy(S))
    p = np.random.default_rng(1).uniform(-0.5, 0.5, (9, 3))
    ndc, _ = _dvr_project(np.load(tmp_path / "cameras.npz"), 0, p)
    uv, _ = cams.project(torch.from_numpy(p))
    np.testing.assert_allclose((ndc + 1) * (np.array([W, H]) - 1) / 2 + 0.5, uv[0].numpy(), atol=1e-9)


def test_load_multiview_detects_dvr(sphere, tmp_path):
    write_dvr_scene(tmp_path / "dvr", sphere)
    save_idr(sphere, tmp_path / "idr")
    assert detect_format(tmp_path / "dvr") == "dvr" and detect_format(tmp_path / "idr") == "idr"
    ds = load_multiview(MultiViewDataConfig(data=str(tmp_path / "dvr"), test_every=2, test_offset=1))
    assert ds.splits == {"train": [0, 2, 4], "test": [1, 3]} and ds.source == str(tmp_path / "dvr")
    torch.testing.assert_close(ds.scale_mat, SCALE)
    explicit = load_multiview(MultiViewDataConfig(data=str(tmp_path / "dvr"), format="dvr"))
    torch.testing.assert_close(explicit.cameras.K, ds.cameras.K)
    with pytest.raises(ValueError, match="camera_mat_0"):  # an IDR folder read as DVR
        load_multiview(MultiViewDataConfig(data=str(tmp_path / "idr"), format="dvr"))


def _broken(sphere, tmp_path, name):
    folder = tmp_path / name
    write_dvr_scene(folder, sphere, depth=_object_depth(sphere))
    return folder, dict(np.load(folder / "cameras.npz"))


def test_dvr_errors_name_the_file(sphere, tmp_path):
    folder, cams = _broken(sphere, tmp_path, "key")
    del cams["camera_mat_3"]
    np.savez(folder / "cameras.npz", **cams)
    with pytest.raises(ValueError, match=r"key/cameras\.npz: missing 'camera_mat_3'"):
        load_dvr(folder)
    folder, cams = _broken(sphere, tmp_path, "count")
    del cams["world_mat_4"]
    np.savez(folder / "cameras.npz", **cams)
    with pytest.raises(ValueError, match=r"count/cameras\.npz: 4 world_mat_i entries but 5 images"):
        load_dvr(folder)
    folder, cams = _broken(sphere, tmp_path, "scale")
    cams["scale_mat_2"] = np.eye(4)
    np.savez(folder / "cameras.npz", **cams)
    with pytest.raises(ValueError, match=r"scale/cameras\.npz: 'scale_mat_2' differs"):
        load_dvr(folder)
    folder, _ = _broken(sphere, tmp_path, "size")
    write_image(folder / "mask" / "0001.png", np.zeros((8, 8), bool))
    with pytest.raises(ValueError, match=r"size/mask/0001\.png: mask size 8x8 differs"):
        load_dvr(folder)
    folder, _ = _broken(sphere, tmp_path, "masks")
    (folder / "mask" / "0004.png").unlink()
    with pytest.raises(ValueError, match="5 images in image/ but 4 masks"):
        load_dvr(folder)
    with pytest.raises(ValueError, match="dataset folder not found"):
        load_dvr(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="scale_mat"):  # no similarity: DVR's world_mat would not be rigid
        write_dvr_cameras(tmp_path / "c.npz", sphere.cameras, torch.diag(torch.tensor([1.0, 2.0, 1.0, 1.0])))
    with pytest.raises(ValueError, match="depth: expected shape"):
        write_dvr_scene(tmp_path / "d", sphere, depth=torch.zeros(5, 3, 3))
