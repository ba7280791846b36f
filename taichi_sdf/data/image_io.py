"""Reading and writing images with errors that name the file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image as float32 `[H, W, C]` in [0, 1] (C = 1, 3 or 4). Raises ValueError naming the
    file when it is missing or unreadable."""
    import imageio.v3 as iio

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: image file not found")
    try:
        img = np.asarray(iio.imread(path))
    except Exception as exc:  # imageio raises many types for corrupt files
        raise ValueError(f"{path}: cannot read image ({type(exc).__name__}: {exc})") from None
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
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        iio.imwrite(tmp, data, extension=path.suffix)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
