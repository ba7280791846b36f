"""DVR data formats. OpenEXR io: write -> read round trips for every supported compression and pixel type,
files built byte by byte from the specification (independent of the module's writer), and the errors.
The DVR multi-view folder: see the second half."""

import struct
import zlib

import numpy as np
import pytest

from taichi_sdf.data.exr import read_depth_exr, read_exr, write_exr


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
