"""What the IDR and DVR readers share: file listing, image-mask pairing, `cameras.npz` keys and masks.

Every check here raises a ValueError naming the file (or key) and what was expected, or warns naming
the views, so that a broken folder is refused before a training run instead of after it.
"""

from __future__ import annotations

import re
import warnings
import zipfile
from pathlib import Path

import numpy as np

IMAGE_EXTS = (".png", ".jpg", ".jpeg")


def list_files(folder: Path, what: str, exts: tuple[str, ...] = IMAGE_EXTS) -> list[Path]:
    """The files of `folder` with a suffix in `exts`, sorted; a named error when there is none (the
    multi-view readers' `image/`, `mask/`, `depth/` folders)."""
    if not folder.is_dir():
        raise ValueError(f"{folder}: {what} folder not found")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in exts and not p.name.startswith("."))
    if not files:
        raise ValueError(f"{folder}: no {what} files ({'/'.join(exts)}) found")
    return files


def _stem_key(stem: str) -> str:
    """Digits-only stems compare as numbers: IDR's DTU scans name images `000000.png`, masks `000.png`."""
    return str(int(stem)) if re.fullmatch(r"\d+", stem) else stem


def _names(paths: list[Path], limit: int = 3) -> str:
    shown = ", ".join(p.name for p in paths[:limit])
    return shown + (f" (+{len(paths) - limit} more)" if len(paths) > limit else "")


def pair_by_stem(images: list[Path], masks: list[Path]) -> list[tuple[Path, Path]]:
    """(image, mask) pairs matched by file stem (digit-only stems by number), in the images' order.

    Pairing by sorted position (IDR's `zip(images, masks)`) gives every view after one renamed mask
    the next view's mask; here any image without a mask, or mask without an image, is a ValueError
    naming the files.
    """
    by_key = {}
    for m in masks:
        key = _stem_key(m.stem)
        if key in by_key:
            raise ValueError(f"{m}: mask name clashes with {by_key[key].name} (one mask per image stem expected)")
        by_key[key] = m
    image_keys = [_stem_key(p.stem) for p in images]
    lonely_images = [p for p, k in zip(images, image_keys) if k not in by_key]
    lonely_masks = [m for k, m in by_key.items() if k not in set(image_keys)]
    if lonely_images or lonely_masks:
        parts = []
        if lonely_images:
            parts.append(f"images without a mask of the same name in {masks[0].parent}: {_names(lonely_images)}")
        if lonely_masks:
            parts.append(f"masks without an image in {images[0].parent}: {_names(lonely_masks)}")
        raise ValueError("; ".join(parts) + " (image and mask are paired by file name)")
    return [(p, by_key[k]) for p, k in zip(images, image_keys)]


def open_npz(path: Path) -> np.lib.npyio.NpzFile:
    """`np.load` of a camera file, refusing what is not a `.npz` archive (numpy reports that as
    "pickled data") with a message naming the file."""
    if not path.is_file():
        raise ValueError(f"{path}: camera file not found")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not a .npz archive (expected the output of numpy.savez, e.g. world_mat_0 ...)")
    try:
        return np.load(path, allow_pickle=False)
    except Exception as exc:
        raise ValueError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from None


def read_matrix(npz, key: str, path: Path) -> np.ndarray:
    """`npz[key]` as a float64 `[4, 4]` (a `[3, 4]` gets the row [0, 0, 0, 1])."""
    if key not in npz:
        raise ValueError(f"{path}: missing '{key}'")
    try:
        raw = npz[key]
    except ValueError:  # numpy's "Object arrays cannot be loaded when allow_pickle=False"
        raise ValueError(f"{path}: '{key}' is an object array; expected a [4, 4] array of numbers") from None
    if raw.dtype.kind not in "biuf":
        raise ValueError(f"{path}: '{key}' has dtype {raw.dtype}; expected a [4, 4] array of numbers")
    m = np.asarray(raw, dtype=np.float64)
    if m.shape == (3, 4):
        m = np.vstack([m, [0.0, 0.0, 0.0, 1.0]])
    if m.shape != (4, 4):
        raise ValueError(f"{path}: '{key}' has shape {list(m.shape)}, expected [4, 4] or [3, 4]")
    if not np.isfinite(m).all():
        raise ValueError(f"{path}: '{key}' contains non-finite values")
    return m


def check_view_keys(keys: set[str], prefix: str, count: int, path: Path, what: str) -> None:
    """`prefix0 .. prefix{count-1}` must all be in `keys`, and no other `prefix<i>`; otherwise a
    ValueError naming the missing (and extra) keys. `what` says what the count is, e.g. "6 images"."""
    found = {int(k[len(prefix) :]) for k in keys if k.startswith(prefix) and k[len(prefix) :].isdigit()}
    if found == set(range(count)):
        return
    missing = [f"{prefix}{i}" for i in range(count) if i not in found]
    extra = [f"{prefix}{i}" for i in sorted(found) if i >= count]
    detail = "; ".join(
        part
        for part in (f"missing {', '.join(missing[:5])}" if missing else "", f"extra {', '.join(extra[:5])}" if extra else "")
        if part
    )
    raise ValueError(f"{path}: {len(found)} {prefix}i entries but {what} ({detail}); expected {prefix}0 .. {prefix}{count - 1}")


def check_projections(P: np.ndarray, path: Path, key: str = "world_mat") -> None:
    """Each `[N, 4, 4]` projection's left 3x3 block must be invertible; name the view otherwise."""
    for i, p in enumerate(P):
        block = p[:3, :3]
        if not abs(np.linalg.det(block)) > 1e-12 * max(1.0, float(np.abs(block).max()) ** 3):
            raise ValueError(
                f"{path}: '{key}_{i}' is singular (its left 3x3 block has no inverse); expected a pinhole projection"
            )


def mask_from_image(image: np.ndarray, path: Path, threshold: float) -> np.ndarray:
    """Bool mask `[H, W]` from an image in [0, 1] `[H, W, C]`: the brightest colour channel > threshold
    (a mask drawn in any colour on black), or the alpha channel when it is not all opaque (a mask
    stored as transparency, whatever the colour).

    Label masks stored as 0/1 (brightest value one 8-bit grey level or less) would all fall under the
    threshold and read as empty; they are read as `value > 0` instead.
    """
    has_alpha = image.shape[-1] in (2, 4)
    if has_alpha and float(image[..., -1].min()) < 1.0:
        grey = image[..., -1]
    else:
        grey = image[..., : 3 if image.shape[-1] >= 3 else 1].max(axis=-1)
    peak = float(grey.max()) if grey.size else 0.0
    if 0.0 < peak <= 1.0 / 255.0 + 1e-7:
        return grey > 0
    return grey > threshold


def check_masks(masks: np.ndarray, names: list[str], where: str) -> None:
    """Refuse all-empty masks `[N, H, W]` (training would run to the end on nothing); warn naming the
    views whose mask is empty."""
    empty = [n for n, m in zip(names, masks) if not m.any()]
    if len(empty) == len(names):
        raise ValueError(f"{where}: all {len(names)} masks are empty; expected the object as values > 0 (white on black)")
    if empty:
        shown = ", ".join(empty[:8]) + (f" (+{len(empty) - 8} more)" if len(empty) > 8 else "")
        warnings.warn(f"{where}: {len(empty)} of {len(names)} masks are empty: {shown}", UserWarning, stacklevel=3)
