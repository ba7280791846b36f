"""Reading and writing images with errors that name the file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

# Leading bytes of formats a user may hand a reader by mistake, to say what a file really holds.
MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "PNG image"),
    (b"\xff\xd8\xff", "JPEG image"),
    (b"v/1\x01", "OpenEXR image"),
    (b"GIF8", "GIF image"),
    (b"\x93NUMPY", "numpy .npy array"),
    (b"PK\x03\x04", "zip archive (.npz?)"),
    (b"ply", "PLY mesh"),
    (b"glTF", "binary glTF (.glb) mesh"),
)


def sniff(path: Path) -> str:
    """What the file's first bytes say it is: a name from MAGIC, "empty (0 bytes)", "text" or "unknown"."""
    with open(path, "rb") as f:
        head = f.read(64)
    if not head:
        return "empty (0 bytes)"
    for magic, kind in MAGIC:
        if head.startswith(magic):
            return kind
    try:
        head.decode("utf-8")
        return "text"
    except UnicodeDecodeError:
        return "unknown"


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image as float32 `[H, W, C]` in [0, 1] (C = 1, 2, 3 or 4). Raises ValueError naming the
    file when it is missing, empty or unreadable (saying what the file holds instead)."""
    import imageio.v3 as iio

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: image file not found")
    kind = sniff(path)
    if kind == "empty (0 bytes)":
        raise ValueError(f"{path}: the file is empty (0 bytes); expected a PNG or JPEG image")
    try:
        img = np.asarray(iio.imread(path))
    except Exception as exc:  # imageio raises many types for corrupt files, and names missing plugins
        if not kind.endswith("image"):  # imageio's message would be about plugins; say what the file holds
            raise ValueError(f"{path}: cannot read image: the file holds {kind} data; expected a PNG or JPEG image") from None
        first = (str(exc).strip().splitlines() or [""])[0].replace(str(path), "<file>")[:100]
        raise ValueError(
            f"{path}: cannot read image: a {kind} that cannot be decoded ({type(exc).__name__}: {first}); "
            "expected a PNG or JPEG image"
        ) from None
    if img.ndim == 3 and img.shape[-1] == 4 and _pil_mode(path) == "CMYK":  # 4 channels that are not RGBA
        img = np.asarray(iio.imread(path, mode="RGB"))
    if img.ndim == 2:
        img = img[..., None]
    if img.ndim != 3 or img.shape[-1] not in (1, 2, 3, 4):
        raise ValueError(f"{path}: expected an image [H, W, C], got array of shape {list(img.shape)}")
    if img.dtype == np.uint8:
        return img.astype(np.float32) / 255.0
    if img.dtype == np.uint16:
        return img.astype(np.float32) / 65535.0
    if np.issubdtype(img.dtype, np.floating):
        return img.astype(np.float32)
    raise ValueError(f"{path}: unsupported pixel type {img.dtype}")


def _pil_mode(path: Path) -> str | None:
    import imageio.v3 as iio

    try:
        return iio.immeta(path).get("mode")
    except Exception:  # not a Pillow format: no mode to tell
        return None


def to_uint8(image) -> np.ndarray:
    """float in [0, 1] (numpy or torch, any device) -> uint8, clipped."""
    if hasattr(image, "detach"):
        image = image.detach().cpu().numpy()
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image
    if image.dtype == bool:
        return image.astype(np.uint8) * 255
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def write_image(path: str | os.PathLike, image) -> Path:
    """Write an image (float in [0, 1], bool or uint8; `[H, W]` or `[H, W, C]`) atomically."""
    import imageio.v3 as iio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = to_uint8(image)
    if data.ndim == 3 and data.shape[-1] == 1:
        data = data[..., 0]
    from taichi_sdf.train.checkpoint import open_temp_beside  # umask-respecting (mkstemp: 0600)

    fd, tmp = open_temp_beside(path, suffix=path.suffix)
    os.close(fd)
    try:
        iio.imwrite(tmp, data, extension=path.suffix)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
