"""COLMAP's sparse model files, text and binary, read and written from COLMAP's documented format
(https://colmap.github.io/format.html); no COLMAP or pycolmap needed.

- `cameras.txt`: `CAMERA_ID MODEL WIDTH HEIGHT PARAMS[]`, one line per camera.
- `images.txt`: two lines per registered image: `IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME`, then
  `POINTS2D[]` as `(X, Y, POINT3D_ID)` triples (possibly an empty line; -1 = no 3D point).
  (qw, qx, qy, qz, tx, ty, tz) is the world-to-camera pose: x_cam = R(q) x_world + t, OpenCV axes.
- `points3D.txt`: `POINT3D_ID X Y Z R G B ERROR TRACK[]` with the track as `(IMAGE_ID, POINT2D_IDX)` pairs.
- The `.bin` files hold the same records, little-endian: a uint64 count, then per camera
  `int32 id, int32 model_id, uint64 width, uint64 height, float64 params[]`; per image `int32 id,
  float64 q[4], float64 t[3], int32 camera_id, NAME\\0, uint64 n, n x (float64 x, float64 y, int64
  point3D_id)`; per point `uint64 id, float64 xyz[3], uint8 rgb[3], float64 error, uint64 n, n x
  (int32 image_id, int32 point2D_idx)`.
Pixel coordinates follow COLMAP's convention, which is ours: the centre of the top-left pixel is (0.5, 0.5).

Every malformed file raises ValueError naming the file (and line or byte offset) and what was expected.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# name -> (model id, parameter names), as in COLMAP's src/colmap/sensor/models.h.
CAMERA_MODELS: dict[str, tuple[int, tuple[str, ...]]] = {
    "SIMPLE_PINHOLE": (0, ("f", "cx", "cy")),
    "PINHOLE": (1, ("fx", "fy", "cx", "cy")),
    "SIMPLE_RADIAL": (2, ("f", "cx", "cy", "k")),
    "RADIAL": (3, ("f", "cx", "cy", "k1", "k2")),
    "OPENCV": (4, ("fx", "fy", "cx", "cy", "k1", "k2", "p1", "p2")),
    "OPENCV_FISHEYE": (5, ("fx", "fy", "cx", "cy", "k1", "k2", "k3", "k4")),
    "FULL_OPENCV": (6, ("fx", "fy", "cx", "cy", "k1", "k2", "p1", "p2", "k3", "k4", "k5", "k6")),
    "FOV": (7, ("fx", "fy", "cx", "cy", "omega")),
    "SIMPLE_RADIAL_FISHEYE": (8, ("f", "cx", "cy", "k")),
    "RADIAL_FISHEYE": (9, ("f", "cx", "cy", "k1", "k2")),
    "THIN_PRISM_FISHEYE": (10, ("fx", "fy", "cx", "cy", "k1", "k2", "p1", "p2", "k3", "k4", "sx1", "sy1")),
}
MODEL_BY_ID = {mid: name for name, (mid, _) in CAMERA_MODELS.items()}
MODEL_FILES = ("cameras", "images", "points3D")


@dataclass
class ColmapCamera:
    id: int
    model: str  # a key of CAMERA_MODELS
    width: int
    height: int
    params: np.ndarray  # [P] float64, in the order of CAMERA_MODELS[model][1]


@dataclass
class ColmapImage:
    id: int
    qvec: np.ndarray  # [4] float64 (qw, qx, qy, qz), world-to-camera rotation
    tvec: np.ndarray  # [3] float64, world-to-camera translation
    camera_id: int
    name: str  # path relative to the images folder
    xys: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # [M, 2] float64 keypoints (pixels)
    point3D_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # [M] int64, -1 = none


@dataclass
class ColmapPoints:
    """The sparse points as arrays: ids `[P]`, xyz `[P, 3]` float64, rgb `[P, 3]` uint8, error `[P]`
    float64 (reprojection, pixels), tracks: P arrays `[L, 2]` int64 of (image_id, point2D_idx)."""

    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    xyz: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    rgb: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.uint8))
    error: np.ndarray = field(default_factory=lambda: np.zeros(0))
    tracks: list[np.ndarray] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def track_lengths(self) -> np.ndarray:
        """`[P]` number of images that see each point."""
        return np.array([len(t) for t in self.tracks], np.int64)


@dataclass
class ColmapModel:
    cameras: dict[int, ColmapCamera]
    images: dict[int, ColmapImage]
    points: ColmapPoints
    source: str = ""


# -- rotations ------------------------------------------------------------------------------------


def qvec_to_rotmat(q: np.ndarray) -> np.ndarray:
    """Unit quaternion (qw, qx, qy, qz) `[4]` -> rotation `[3, 3]` (normalised first, as COLMAP does)."""
    w, x, y, z = np.asarray(q, np.float64) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * y * y - 2 * z * z, 2 * x * y - 2 * w * z, 2 * z * x + 2 * w * y],
        [2 * x * y + 2 * w * z, 1 - 2 * x * x - 2 * z * z, 2 * y * z - 2 * w * x],
        [2 * z * x - 2 * w * y, 2 * y * z + 2 * w * x, 1 - 2 * x * x - 2 * y * y],
    ])  # fmt: skip


def rotmat_to_qvec(R: np.ndarray) -> np.ndarray:
    """Rotation `[3, 3]` -> unit quaternion (qw, qx, qy, qz) `[4]` with qw >= 0 (Shepperd's method)."""
    R = np.asarray(R, np.float64)
    tr = np.trace(R)
    i = int(np.argmax([tr, R[0, 0], R[1, 1], R[2, 2]]))
    if i == 0:
        s = 2 * np.sqrt(1 + tr)
        q = [s / 4, (R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s]
    elif i == 1:
        s = 2 * np.sqrt(1 + R[0, 0] - R[1, 1] - R[2, 2])
        q = [(R[2, 1] - R[1, 2]) / s, s / 4, (R[0, 1] + R[1, 0]) / s, (R[0, 2] + R[2, 0]) / s]
    elif i == 2:
        s = 2 * np.sqrt(1 + R[1, 1] - R[0, 0] - R[2, 2])
        q = [(R[0, 2] - R[2, 0]) / s, (R[0, 1] + R[1, 0]) / s, s / 4, (R[1, 2] + R[2, 1]) / s]
    else:
        s = 2 * np.sqrt(1 + R[2, 2] - R[0, 0] - R[1, 1])
        q = [(R[1, 0] - R[0, 1]) / s, (R[0, 2] + R[2, 0]) / s, (R[1, 2] + R[2, 1]) / s, s / 4]
    q = np.asarray(q) / np.linalg.norm(q)
    return -q if q[0] < 0 else q


# -- finding and reading a model -----------------------------------------------------------------


def model_format(folder: str | os.PathLike) -> str | None:
    """ ".bin" or ".txt" when `folder` holds all three files of that form (binary preferred, as COLMAP
    does), None when it holds neither complete form."""
    folder = Path(folder)
    for ext in (".bin", ".txt"):
        if all((folder / f"{name}{ext}").is_file() for name in MODEL_FILES):
            return ext
    return None


def read_colmap_model(folder: str | os.PathLike, ext: str | None = None) -> ColmapModel:
    """Read `cameras`, `images` and `points3D` (`ext` ".bin" or ".txt"; default: the form present,
    binary first). A missing file is a ValueError naming it."""
    folder = Path(folder)
    if ext is None:
        ext = model_format(folder)
        if ext is None:
            found = sorted(p.name for p in folder.glob("*")) if folder.is_dir() else []
            have = [f for f in found if Path(f).stem in MODEL_FILES]
            missing = [f"{n}{e}" for e in (".bin", ".txt") for n in MODEL_FILES if f"{n}{e}" not in have]
            detail = f"found {', '.join(have)}; missing {', '.join(missing)}" if have else "found none"
            raise ValueError(f"{folder}: expected a COLMAP model: cameras, images and points3D as .bin or .txt files ({detail})")
    if ext not in (".bin", ".txt"):
        raise ValueError(f"ext: expected '.bin' or '.txt', got {ext!r}")
    for name in MODEL_FILES:
        if not (folder / f"{name}{ext}").is_file():
            raise ValueError(
                f"{folder / f'{name}{ext}'}: file not found (a COLMAP model needs cameras, images and points3D{ext})"
            )
    if ext == ".bin":
        cams, imgs, pts = (_read_cameras_bin, _read_images_bin, _read_points_bin)
    else:
        cams, imgs, pts = (_read_cameras_txt, _read_images_txt, _read_points_txt)
    return ColmapModel(cams(folder / f"cameras{ext}"), imgs(folder / f"images{ext}"), pts(folder / f"points3D{ext}"), str(folder))


def _camera(path: Path, where: str, cid: int, model: str, width: int, height: int, params) -> ColmapCamera:
    if model not in CAMERA_MODELS:
        raise ValueError(f"{path}{where}: camera {cid} has unknown model {model!r}; expected one of {', '.join(CAMERA_MODELS)}")
    n = len(CAMERA_MODELS[model][1])
    params = np.asarray(params, np.float64)
    if len(params) != n:
        raise ValueError(
            f"{path}{where}: camera {cid} ({model}) has {len(params)} parameters; expected {n} "
            f"({', '.join(CAMERA_MODELS[model][1])})"
        )
    if width < 1 or height < 1:
        raise ValueError(f"{path}{where}: camera {cid} has size {width}x{height}; expected positive width and height")
    if not np.isfinite(params).all():
        raise ValueError(f"{path}{where}: camera {cid} has non-finite parameters")
    return ColmapCamera(cid, model, int(width), int(height), params)


def _check_pose(path: Path, where: str, iid: int, q: np.ndarray, t: np.ndarray) -> None:
    if not (np.isfinite(q).all() and np.isfinite(t).all()):
        raise ValueError(f"{path}{where}: image {iid} has a non-finite pose")
    if not np.linalg.norm(q) > 1e-12:
        raise ValueError(f"{path}{where}: image {iid} has a zero quaternion; expected a unit quaternion QW QX QY QZ")


# -- text form ------------------------------------------------------------------------------------


def _data_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of every line that is not a comment; blank lines kept (images.txt's
    second line of an image without points is blank)."""
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text file (a binary model is read from the .bin files)") from None
    return [(i + 1, line.strip()) for i, line in enumerate(text.splitlines()) if not line.lstrip().startswith("#")]


def _numbers(path: Path, lineno: int, parts: list[str], kind, expected: str) -> list:
    try:
        return [kind(p) for p in parts]
    except ValueError:
        raise ValueError(f"{path}:{lineno}: expected {expected}, got {' '.join(parts)[:80]!r}") from None


def _array(path: Path, lineno: int, parts: list[str], dtype, expected: str) -> np.ndarray:
    """`parts` as one numpy array (numpy parses the strings: ~10x faster than a Python loop on long lines)."""
    try:
        return np.array(parts, dtype=dtype)
    except (ValueError, OverflowError):
        raise ValueError(f"{path}:{lineno}: expected {expected}, got {' '.join(parts)[:80]!r}") from None


def _read_cameras_txt(path: Path) -> dict[int, ColmapCamera]:
    cameras = {}
    expected = "'CAMERA_ID MODEL WIDTH HEIGHT PARAMS[]'"
    for lineno, line in _data_lines(path):
        if not line:
            continue
        parts = line.split()
        if len(parts) < 4:
            raise ValueError(f"{path}:{lineno}: expected {expected}, got {line[:80]!r}")
        cid, width, height = _numbers(path, lineno, [parts[0], parts[2], parts[3]], int, expected)
        params = _numbers(path, lineno, parts[4:], float, f"{expected} with numeric PARAMS")
        if cid in cameras:
            raise ValueError(f"{path}:{lineno}: camera {cid} is listed twice")
        cameras[cid] = _camera(path, f":{lineno}", cid, parts[1], width, height, params)
    return cameras


def _read_images_txt(path: Path) -> dict[int, ColmapImage]:
    images = {}
    lines = _data_lines(path)
    expected = "'IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME'"
    k = 0
    while k < len(lines):
        lineno, line = lines[k]
        k += 1
        if not line:
            continue
        parts = line.split()
        if len(parts) < 10:
            raise ValueError(f"{path}:{lineno}: expected {expected} (then a line of POINTS2D), got {line[:80]!r}")
        iid, cid = _numbers(path, lineno, [parts[0], parts[8]], int, expected)
        qt = np.array(_numbers(path, lineno, parts[1:8], float, expected))
        _check_pose(path, f":{lineno}", iid, qt[:4], qt[4:])
        name = " ".join(parts[9:])
        points_line = lines[k][1] if k < len(lines) else ""  # the second line of the image (maybe blank)
        points_lineno = lines[k][0] if k < len(lines) else lineno + 1
        k += 1
        vals = points_line.split()
        if len(vals) % 3:
            raise ValueError(
                f"{path}:{points_lineno}: image {iid}'s POINTS2D line has {len(vals)} values; expected (X, Y, POINT3D_ID) triples"
            )
        what = "POINTS2D as X Y POINT3D_ID triples"
        xys = _array(path, points_lineno, vals[0::3] + vals[1::3], np.float64, what).reshape(2, -1).T.copy()
        point3D_ids = _array(path, points_lineno, vals[2::3], np.int64, what)
        if iid in images:
            raise ValueError(f"{path}:{lineno}: image {iid} is listed twice")
        images[iid] = ColmapImage(iid, qt[:4], qt[4:], cid, name, xys, point3D_ids)
    return images


def _read_points_txt(path: Path) -> ColmapPoints:
    ids, xyz, rgb, err, tracks = [], [], [], [], []
    expected = "'POINT3D_ID X Y Z R G B ERROR TRACK[]'"
    for lineno, line in _data_lines(path):
        if not line:
            continue
        parts = line.split()
        if len(parts) < 8 or (len(parts) - 8) % 2:
            raise ValueError(f"{path}:{lineno}: expected {expected} with (IMAGE_ID, POINT2D_IDX) pairs, got {line[:80]!r}")
        ids.append(_numbers(path, lineno, parts[:1], int, expected)[0])
        xyz.append(_numbers(path, lineno, parts[1:4], float, expected))
        rgb.append(_numbers(path, lineno, parts[4:7], int, expected))
        err.append(_numbers(path, lineno, parts[7:8], float, expected)[0])
        tracks.append(_array(path, lineno, parts[8:], np.int64, expected).reshape(-1, 2))
    return _points(path, ids, xyz, rgb, err, tracks)


def _points(path: Path, ids, xyz, rgb, err, tracks) -> ColmapPoints:
    pts = ColmapPoints(
        np.asarray(ids, np.int64).reshape(-1), np.asarray(xyz, np.float64).reshape(-1, 3),
        np.asarray(rgb, np.int64).reshape(-1, 3).clip(0, 255).astype(np.uint8), np.asarray(err, np.float64).reshape(-1), tracks,
    )  # fmt: skip
    if len(np.unique(pts.ids)) != len(pts.ids):
        raise ValueError(f"{path}: point ids are not unique")
    return pts


def _fmt(x: float) -> str:
    return repr(float(x))  # shortest text that reads back to the same float64


def _write_text(path: Path, header: list[str], lines: list[str]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(f"# {h}\n" for h in header) + "".join(line + "\n" for line in lines))
    os.replace(tmp, path)


def _write_model_txt(model: ColmapModel, folder: Path) -> None:
    cams = [" ".join([str(c.id), c.model, str(c.width), str(c.height), *map(_fmt, c.params)]) for c in model.cameras.values()]
    _write_text(folder / "cameras.txt", [
        "Camera list with one line of data per camera:", "  CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]",
        f"Number of cameras: {len(cams)}",
    ], cams)  # fmt: skip
    lines = []
    for im in model.images.values():
        lines.append(" ".join([str(im.id), *map(_fmt, im.qvec), *map(_fmt, im.tvec), str(im.camera_id), im.name]))
        lines.append(" ".join(f"{_fmt(x)} {_fmt(y)} {int(p)}" for (x, y), p in zip(im.xys, im.point3D_ids)))
    n_obs = sum(len(im.xys) for im in model.images.values())
    _write_text(folder / "images.txt", [
        "Image list with two lines of data per image:", "  IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
        "  POINTS2D[] as (X, Y, POINT3D_ID)", f"Number of images: {len(model.images)}, observations: {n_obs}",
    ], lines)  # fmt: skip
    p = model.points
    lines = [
        " ".join([str(int(i)), *map(_fmt, x), *(str(int(c)) for c in rgb), _fmt(e), *(str(int(v)) for v in t.reshape(-1))])
        for i, x, rgb, e, t in zip(p.ids, p.xyz, p.rgb, p.error, p.tracks)
    ]
    _write_text(folder / "points3D.txt", [
        "3D point list with one line of data per point:",
        "  POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)", f"Number of points: {len(p)}",
    ], lines)  # fmt: skip


# -- binary form ----------------------------------------------------------------------------------


class _Reader:
    """Sequential little-endian reads of a model file; running past its end names the file, the byte
    offset and the record being read."""

    def __init__(self, path: Path):
        self.path, self.data, self.pos = path, path.read_bytes(), 0

    def take(self, fmt: str, what: str) -> tuple:
        size = struct.calcsize("<" + fmt)
        if self.pos + size > len(self.data):
            raise ValueError(
                f"{self.path}: truncated: {what} needs {size} bytes at offset {self.pos}, but the file has "
                f"{len(self.data)} bytes (expected a complete COLMAP binary model file)"
            )
        out = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += size
        return out

    def array(self, dtype: np.dtype, count: int, what: str) -> np.ndarray:
        dtype = np.dtype(dtype).newbyteorder("<")
        size = dtype.itemsize * count
        if self.pos + size > len(self.data):
            raise ValueError(
                f"{self.path}: truncated: {what} needs {size} bytes at offset {self.pos}, but the file has "
                f"{len(self.data)} bytes (expected a complete COLMAP binary model file)"
            )
        out = np.frombuffer(self.data, dtype, count, self.pos)
        self.pos += size
        return out

    def name(self, what: str) -> str:
        end = self.data.find(b"\x00", self.pos)
        if end < 0:
            raise ValueError(f"{self.path}: truncated: {what} has no terminating NUL byte after offset {self.pos}")
        raw, self.pos = self.data[self.pos : end], end + 1
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"{self.path}: {what} at offset {self.pos} is not UTF-8 text") from None

    def count(self, what: str) -> int:
        n = self.take("Q", what)[0]
        if n > len(self.data):  # a count larger than the file cannot be real: stop before allocating for it
            raise ValueError(f"{self.path}: {what} is {n}, more than the file's {len(self.data)} bytes could hold")
        return n

    def done(self) -> None:
        if self.pos != len(self.data):
            raise ValueError(
                f"{self.path}: {len(self.data) - self.pos} unexpected bytes after the last record at offset {self.pos}"
            )


def _read_cameras_bin(path: Path) -> dict[int, ColmapCamera]:
    r = _Reader(path)
    cameras = {}
    for k in range(r.count("the number of cameras")):
        cid, mid, width, height = r.take("iiQQ", f"camera record {k}")
        if mid not in MODEL_BY_ID:
            raise ValueError(
                f"{path}: camera {cid} has unknown model id {mid}; expected one of "
                + ", ".join(f"{i} ({n})" for i, n in MODEL_BY_ID.items())
            )
        model = MODEL_BY_ID[mid]
        params = r.array(np.float64, len(CAMERA_MODELS[model][1]), f"camera {cid}'s {model} parameters")
        if cid in cameras:
            raise ValueError(f"{path}: camera {cid} is listed twice")
        cameras[cid] = _camera(path, "", cid, model, width, height, params.copy())
    r.done()
    return cameras


_OBS = np.dtype([("x", "<f8"), ("y", "<f8"), ("id", "<i8")])


def _read_images_bin(path: Path) -> dict[int, ColmapImage]:
    r = _Reader(path)
    images = {}
    for k in range(r.count("the number of images")):
        iid, qw, qx, qy, qz, tx, ty, tz, cid = r.take("idddddddi", f"image record {k}")
        name = r.name(f"image {iid}'s name")
        n = r.count(f"image {iid}'s number of 2D points")
        obs = r.array(_OBS, n, f"image {iid}'s {n} 2D points")
        q, t = np.array([qw, qx, qy, qz]), np.array([tx, ty, tz])
        _check_pose(path, "", iid, q, t)
        if iid in images:
            raise ValueError(f"{path}: image {iid} is listed twice")
        images[iid] = ColmapImage(iid, q, t, cid, name, np.stack([obs["x"], obs["y"]], 1), obs["id"].astype(np.int64))
    r.done()
    return images


def _read_points_bin(path: Path) -> ColmapPoints:
    r = _Reader(path)
    n = r.count("the number of points")
    ids, xyz, rgb, err, tracks = np.zeros(n, np.int64), np.zeros((n, 3)), np.zeros((n, 3), np.uint8), np.zeros(n), []
    for k in range(n):
        pid, x, y, z, cr, cg, cb, e = r.take("QdddBBBd", f"point record {k}")
        length = r.count(f"point {pid}'s track length")
        tracks.append(
            r.array(np.int32, 2 * length, f"point {pid}'s track of {length} observations").reshape(-1, 2).astype(np.int64)
        )
        ids[k], xyz[k], rgb[k], err[k] = pid, (x, y, z), (cr, cg, cb), e
    r.done()
    return _points(path, ids, xyz, rgb, err, tracks)


def _write_model_bin(model: ColmapModel, folder: Path) -> None:
    out = [struct.pack("<Q", len(model.cameras))]
    for c in model.cameras.values():
        out.append(struct.pack("<iiQQ", c.id, CAMERA_MODELS[c.model][0], c.width, c.height))
        out.append(np.asarray(c.params, "<f8").tobytes())
    _write_bytes(folder / "cameras.bin", out)
    out = [struct.pack("<Q", len(model.images))]
    for im in model.images.values():
        out.append(struct.pack("<idddddddi", im.id, *im.qvec, *im.tvec, im.camera_id))
        out.append(im.name.encode("utf-8") + b"\x00")
        obs = np.zeros(len(im.xys), _OBS)
        obs["x"], obs["y"], obs["id"] = im.xys[:, 0], im.xys[:, 1], im.point3D_ids
        out += [struct.pack("<Q", len(obs)), obs.tobytes()]
    _write_bytes(folder / "images.bin", out)
    p = model.points
    out = [struct.pack("<Q", len(p))]
    for i, x, rgb, e, t in zip(p.ids, p.xyz, p.rgb, p.error, p.tracks):
        out.append(struct.pack("<QdddBBBd", int(i), *x, *(int(c) for c in rgb), e))
        out += [struct.pack("<Q", len(t)), np.asarray(t, "<i4").tobytes()]
    _write_bytes(folder / "points3D.bin", out)


def _write_bytes(path: Path, chunks: list[bytes]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(b"".join(chunks))
    os.replace(tmp, path)


def write_colmap_model(model: ColmapModel, folder: str | os.PathLike, binary: bool = True) -> Path:
    """Write `model` as `cameras`, `images`, `points3D` `.bin` (binary) or `.txt` files into `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for c in model.cameras.values():
        _camera(folder, "", c.id, c.model, c.width, c.height, c.params)  # refuse what COLMAP could not read
    (_write_model_bin if binary else _write_model_txt)(model, folder)
    return folder
