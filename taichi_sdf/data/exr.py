"""Minimal OpenEXR reading and writing (single-part scanline images; no external dependency).

DVR stores depth maps as EXR (`depth/*.exr`, camera z with `inf` on the background; read there with
imageio's FreeImage plugin, which needs a download). This module covers what such files use:

    write_exr("d.exr", depth)                    # [H, W] float32 -> channel "Y", ZIP compression
    depth = read_depth_exr("d.exr")              # [H, W] float32, inf kept
    channels = read_exr("img.exr")               # {"R": [H, W], "G": ..., ...}

Supported: pixel types HALF, FLOAT and UINT; compression NONE, RLE, ZIPS and ZIP (reading and
writing; ZIP/RLE with EXR's byte interleave + delta predictor). Tiled, deep and multi-part files and
the lossy or wavelet compressions (PIZ, PXR24, B44, DWA) raise ValueError naming the file and what is
unsupported. Layout (OpenEXR "file layout" document): magic, version, header attributes, a table of
chunk offsets, then chunks of `LINES_PER_CHUNK[compression]` scanlines, each line holding every
channel (alphabetical order) one after the other.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np

__all__ = ["COMPRESSIONS", "read_exr", "read_depth_exr", "write_exr"]

MAGIC = 20000630
COMPRESSIONS = ("none", "rle", "zips", "zip", "piz", "pxr24", "b44", "b44a", "dwaa", "dwab")
SUPPORTED = ("none", "rle", "zips", "zip")
LINES_PER_CHUNK = {"none": 1, "rle": 1, "zips": 1, "zip": 16}
PIXEL_TYPES = {0: np.dtype("<u4"), 1: np.dtype("<f2"), 2: np.dtype("<f4")}  # UINT, HALF, FLOAT
_TILED, _LONG_NAMES, _DEEP, _MULTIPART = 0x200, 0x400, 0x800, 0x1000


# --------------------------------------------------------------------- EXR's byte-level predictor


def _predict(raw: bytes) -> bytes:
    """Interleave (even bytes, then odd bytes) and store deltas + 128, as ZIP and RLE chunks do."""
    b = np.frombuffer(raw, np.uint8)
    t = np.concatenate([b[0::2], b[1::2]])
    d = t.copy()
    d[1:] = (t[1:].astype(np.int16) - t[:-1] + 128) & 0xFF
    return d.tobytes()


def _unpredict(data: bytes) -> bytes:
    d = np.frombuffer(data, np.uint8).astype(np.int64)
    d[1:] -= 128
    t = (np.cumsum(d) & 0xFF).astype(np.uint8)
    half = (len(t) + 1) // 2
    out = np.empty_like(t)
    out[0::2], out[1::2] = t[:half], t[half:]
    return out.tobytes()


def _rle_compress(data: bytes) -> bytes:
    """OpenEXR's run-length code: a signed count byte, then a run (count + 1 copies of one byte) or
    -count literal bytes; runs shorter than 3 go into literals."""
    out, n, i = bytearray(), len(data), 0
    while i < n:
        run = 1
        while i + run < n and data[i + run] == data[i] and run < 128:
            run += 1
        if run >= 3:
            out += struct.pack("b", run - 1) + data[i : i + 1]
            i += run
            continue
        j = i
        while j < n and j - i < 127 and not (j + 2 < n and data[j] == data[j + 1] == data[j + 2]):
            j += 1
        out += struct.pack("b", -(j - i)) + data[i:j]
        i = j
    return bytes(out)


def _rle_decompress(data: bytes, expected: int, where: str) -> bytes:
    out, i = bytearray(), 0
    while i < len(data):
        count = struct.unpack_from("b", data, i)[0]
        i += 1
        if count < 0:
            out += data[i : i - count]
            i -= count
        else:
            out += data[i : i + 1] * (count + 1)
            i += 1
    if len(out) != expected:
        raise ValueError(f"{where}: RLE chunk decodes to {len(out)} bytes, expected {expected}")
    return bytes(out)


# --------------------------------------------------------------------------------- the header


def _read_cstr(buf: bytes, pos: int, where: str) -> tuple[str, int]:
    end = buf.find(b"\0", pos)
    if end < 0:
        raise ValueError(f"{where}: truncated header")
    return buf[pos:end].decode("latin-1"), end + 1


def _parse_channels(value: bytes, where: str) -> list[tuple[str, int]]:
    channels, pos = [], 0
    while pos < len(value) and value[pos] != 0:
        name, pos = _read_cstr(value, pos, where)
        ptype, _, xs, ys = struct.unpack_from("<iB3xii", value, pos)
        pos += 16
        if ptype not in PIXEL_TYPES:
            raise ValueError(f"{where}: channel {name!r} has unknown pixel type {ptype}")
        if (xs, ys) != (1, 1):
            raise ValueError(f"{where}: channel {name!r} is subsampled ({xs}x{ys}); only full-resolution channels are supported")
        channels.append((name, ptype))
    return channels


def _read_header(buf: bytes, where: str) -> tuple[dict, int]:
    if len(buf) < 8 or struct.unpack_from("<i", buf, 0)[0] != MAGIC:
        raise ValueError(f"{where}: not an OpenEXR file (bad magic number)")
    version = struct.unpack_from("<I", buf, 4)[0]
    if version & 0xFF != 2:
        raise ValueError(f"{where}: unsupported OpenEXR version {version & 0xFF}")
    for flag, what in ((_TILED, "tiled"), (_DEEP, "deep"), (_MULTIPART, "multi-part")):
        if version & flag:
            raise ValueError(f"{where}: {what} OpenEXR files are not supported (single-part scanline only)")
    attrs, pos = {}, 8
    while True:
        if pos >= len(buf):
            raise ValueError(f"{where}: truncated header")
        if buf[pos] == 0:
            return attrs, pos + 1
        name, pos = _read_cstr(buf, pos, where)
        kind, pos = _read_cstr(buf, pos, where)
        size = struct.unpack_from("<i", buf, pos)[0]
        pos += 4
        attrs[name] = (kind, buf[pos : pos + size])
        pos += size


def _attr(attrs: dict, name: str, where: str) -> bytes:
    if name not in attrs:
        raise ValueError(f"{where}: header lacks the required attribute '{name}'")
    return attrs[name][1]


# ---------------------------------------------------------------------------------- reading


def read_exr(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a single-part scanline OpenEXR file: {channel name: `[H, W]` array} (float16, float32 or
    uint32 as stored), in the file's (alphabetical) channel order.

    Raises:
        ValueError naming the file: missing, not EXR, tiled/deep/multi-part, an unsupported
        compression (PIZ, PXR24, B44, DWA; the message names it) or a truncated/corrupt chunk.
    """
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise ValueError(f"{where}: EXR file not found")
    buf = path.read_bytes()
    attrs, pos = _read_header(buf, where)
    channels = _parse_channels(_attr(attrs, "channels", where), where)
    code = _attr(attrs, "compression", where)[0]
    compression = COMPRESSIONS[code] if code < len(COMPRESSIONS) else f"code {code}"
    if compression not in SUPPORTED:
        raise ValueError(f"{where}: unsupported EXR compression {compression.upper()} (supported: NONE, RLE, ZIPS, ZIP)")
    x0, y0, x1, y1 = struct.unpack("<4i", _attr(attrs, "dataWindow", where))
    W, H = x1 - x0 + 1, y1 - y0 + 1
    if W < 1 or H < 1:
        raise ValueError(f"{where}: empty data window {W}x{H}")
    lines = LINES_PER_CHUNK[compression]
    n_chunks = -(-H // lines)
    offsets = np.frombuffer(buf, "<u8", n_chunks, pos) if pos + 8 * n_chunks <= len(buf) else None
    if offsets is None:
        raise ValueError(f"{where}: truncated offset table")
    dtypes = [PIXEL_TYPES[t] for _, t in channels]
    line_bytes = W * sum(d.itemsize for d in dtypes)
    out = {name: np.empty((H, W), d) for (name, _), d in zip(channels, dtypes)}
    for off in offsets:
        off = int(off)
        if off + 8 > len(buf):
            raise ValueError(f"{where}: chunk offset {off} beyond the end of the file")
        y, size = struct.unpack_from("<ii", buf, off)
        row = y - y0
        if not 0 <= row < H or off + 8 + size > len(buf):
            raise ValueError(f"{where}: corrupt chunk at offset {off} (line {y}, {size} bytes)")
        n = min(lines, H - row)
        raw = buf[off + 8 : off + 8 + size]
        expected = n * line_bytes
        if size < expected:  # stored compressed (a chunk that would not shrink is stored raw)
            try:
                raw = zlib.decompress(raw) if compression in ("zip", "zips") else _rle_decompress(raw, expected, where)
            except zlib.error as exc:
                raise ValueError(f"{where}: corrupt ZIP chunk at line {y} ({exc})") from None
            raw = _unpredict(raw)
        if len(raw) != expected:
            raise ValueError(f"{where}: chunk at line {y} holds {len(raw)} bytes, expected {expected}")
        pos_in = 0
        for k in range(n):
            for (name, _), d in zip(channels, dtypes):
                out[name][row + k] = np.frombuffer(raw, d, W, pos_in)
                pos_in += W * d.itemsize
    return out


def read_depth_exr(path: str | os.PathLike) -> np.ndarray:
    """A depth map `[H, W]` float32 from an EXR file: its first channel in the order R, Y, Z, then
    alphabetical, like DVR's `depth.reshape(H, W, -1)[:, :, 0]` (inf on the background is kept)."""
    channels = read_exr(path)
    for name in ("R", "Y", "Z", "depth", "depth.Z"):
        if name in channels:
            return channels[name].astype(np.float32)
    return next(iter(channels.values())).astype(np.float32)


# ---------------------------------------------------------------------------------- writing


def _attribute(name: str, kind: str, value: bytes) -> bytes:
    return name.encode() + b"\0" + kind.encode() + b"\0" + struct.pack("<i", len(value)) + value


def write_exr(
    path: str | os.PathLike,
    image,  # [H, W] or [H, W, C], or {name: [H, W]}
    channels: tuple[str, ...] | None = None,
    pixel_type: str = "float",
    compression: str = "zip",
) -> Path:
    """Write a single-part scanline OpenEXR file atomically.

    Args:
        image: `[H, W]` (one channel, named "Y"), `[H, W, C]` (named "R", "G", "B", "A" for C <= 4, or
            `channels`), or a dict {name: `[H, W]`}; numpy or torch, any float dtype. Non-finite
            values (DVR's inf background) are stored as they are.
        pixel_type: "float" (32-bit) or "half" (16-bit).
        compression: "none", "rle", "zips" (one line per chunk) or "zip" (16 lines per chunk).
    """
    if hasattr(image, "detach"):
        image = image.detach().cpu().numpy()
    if isinstance(image, dict):
        named = {str(k): np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v) for k, v in image.items()}
    else:
        image = np.asarray(image)
        if image.ndim == 2:
            image = image[..., None]
        if image.ndim != 3 or image.shape[-1] < 1:
            raise ValueError(f"image: expected shape [H, W] or [H, W, C], got {list(image.shape)}")
        if channels is None:
            if image.shape[-1] == 1:
                channels = ("Y",)
            elif image.shape[-1] <= 4:
                channels = ("R", "G", "B", "A")[: image.shape[-1]]
            else:
                raise ValueError(f"channels: give names for {image.shape[-1]} channels")
        if len(channels) != image.shape[-1]:
            raise ValueError(f"channels: expected {image.shape[-1]} names, got {len(channels)}")
        named = {c: image[..., i] for i, c in enumerate(channels)}
    if not named:
        raise ValueError("image: no channels to write")
    shapes = {v.shape for v in named.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2 or min(next(iter(shapes))) < 1:
        raise ValueError(f"image: expected channels of one shape [H, W], got {sorted(shapes)}")
    if pixel_type not in ("float", "half"):
        raise ValueError(f"pixel_type: expected 'float' or 'half', got {pixel_type!r}")
    if compression not in SUPPORTED:
        raise ValueError(f"compression: expected one of {SUPPORTED}, got {compression!r}")
    H, W = next(iter(shapes))
    dtype = PIXEL_TYPES[2] if pixel_type == "float" else PIXEL_TYPES[1]
    names = sorted(named)  # EXR requires alphabetical channel order
    planes = [np.ascontiguousarray(named[c], dtype=dtype) for c in names]

    chlist = b"".join(c.encode() + b"\0" + struct.pack("<iB3xii", 2 if pixel_type == "float" else 1, 0, 1, 1) for c in names)
    header = struct.pack("<iI", MAGIC, 2) + b"".join([
        _attribute("channels", "chlist", chlist + b"\0"),
        _attribute("compression", "compression", bytes([COMPRESSIONS.index(compression)])),
        _attribute("dataWindow", "box2i", struct.pack("<4i", 0, 0, W - 1, H - 1)),
        _attribute("displayWindow", "box2i", struct.pack("<4i", 0, 0, W - 1, H - 1)),
        _attribute("lineOrder", "lineOrder", b"\0"),
        _attribute("pixelAspectRatio", "float", struct.pack("<f", 1.0)),
        _attribute("screenWindowCenter", "v2f", struct.pack("<2f", 0.0, 0.0)),
        _attribute("screenWindowWidth", "float", struct.pack("<f", 1.0)),
    ]) + b"\0"  # fmt: skip

    lines = LINES_PER_CHUNK[compression]
    chunks = []
    for y in range(0, H, lines):
        raw = b"".join(p[k].tobytes() for k in range(y, min(y + lines, H)) for p in planes)
        if compression in ("zip", "zips"):
            packed = zlib.compress(_predict(raw))
        elif compression == "rle":
            packed = _rle_compress(_predict(raw))
        else:
            packed = raw
        data = packed if len(packed) < len(raw) else raw  # as OpenEXR: store raw when it does not shrink
        chunks.append(struct.pack("<ii", y, len(data)) + data)
    offset = len(header) + 8 * len(chunks)
    table = []
    for c in chunks:
        table.append(offset)
        offset += len(c)
    blob = header + np.asarray(table, "<u8").tobytes() + b"".join(chunks)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    from taichi_sdf.train.checkpoint import open_temp_beside  # umask-respecting (mkstemp: 0600)

    fd, tmp = open_temp_beside(path, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
