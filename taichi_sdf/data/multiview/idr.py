"""IDR / DTU scan folders: `image/*.png`, `mask/*.png`, `cameras.npz` (`world_mat_i`, `scale_mat_i`).

`world_mat_i = K [R | t]` (4x4) projects world points to pixels with integer centres; `scale_mat_i`
maps the normalised unit-sphere frame to the world. The cameras we return are those of the
normalised frame, `world_mat_i @ scale_mat_i`, in our +0.5 pixel convention.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from taichi_sdf.cameras.camera import Camera
from taichi_sdf.data.image_io import read_image, write_image
from taichi_sdf.data.multiview.base import MultiViewDataset

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


def read_matrix(npz, key: str, path: Path) -> np.ndarray:
    if key not in npz:
        raise ValueError(f"{path}: missing '{key}'")
    m = np.asarray(npz[key], dtype=np.float64)
    if m.shape == (3, 4):
        m = np.vstack([m, [0.0, 0.0, 0.0, 1.0]])
    if m.shape != (4, 4):
        raise ValueError(f"{path}: '{key}' has shape {list(m.shape)}, expected [4, 4] or [3, 4]")
    if not np.isfinite(m).all():
        raise ValueError(f"{path}: '{key}' contains non-finite values")
    return m


def load_idr(
    folder: str | os.PathLike,
    cameras_file: str = "cameras.npz",
    mask_threshold: float = 0.5,
    test_views: list[int] | None = None,
) -> MultiViewDataset:
    """Read an IDR/DTU scan folder.

    Args:
        folder: contains `image/`, `mask/` and `cameras_file`.
        mask_threshold: masks are grey levels > threshold (IDR thresholds at 127.5 / 255).
        test_views: view indices for the "test" split (all views are in "train").

    Raises:
        ValueError naming the file for a missing folder/file, a count mismatch between images, masks
        and cameras, a bad or singular matrix, an unreadable image or a size mismatch.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: dataset folder not found")
    images = list_files(folder / "image", "image")
    masks = list_files(folder / "mask", "mask")
    if len(images) != len(masks):
        raise ValueError(f"{folder}: {len(images)} images in image/ but {len(masks)} masks in mask/")
    cam_path = folder / cameras_file
    if not cam_path.is_file():
        raise ValueError(f"{cam_path}: camera file not found")
    try:
        npz = np.load(cam_path)
        keys = set(npz.files)
    except Exception as exc:
        raise ValueError(f"{cam_path}: cannot read ({type(exc).__name__}: {exc})") from None
    n_cams = sum(1 for k in keys if k.startswith("world_mat_") and not k.startswith("world_mat_inv"))
    if n_cams != len(images):
        raise ValueError(f"{cam_path}: {n_cams} world_mat_i entries but {len(images)} images in {folder / 'image'}")

    rgb, alpha = [], []
    for i, (ip, mp) in enumerate(zip(images, masks)):
        img = read_image(ip)
        m = read_image(mp)
        if i == 0:
            H, W = img.shape[:2]
        if img.shape[:2] != (H, W):
            raise ValueError(f"{ip}: size {img.shape[1]}x{img.shape[0]} differs from the first image's {W}x{H}")
        if m.shape[:2] != (H, W):
            raise ValueError(f"{mp}: mask size {m.shape[1]}x{m.shape[0]} differs from its image's {W}x{H}")
        rgb.append(img[..., :3] if img.shape[-1] >= 3 else np.repeat(img[..., :1], 3, -1))
        alpha.append(m[..., 0] > mask_threshold)

    world = np.stack([read_matrix(npz, f"world_mat_{i}", cam_path) for i in range(n_cams)])
    scale = np.stack(
        [read_matrix(npz, f"scale_mat_{i}", cam_path) if f"scale_mat_{i}" in keys else np.eye(4) for i in range(n_cams)]
    )
    for i in range(n_cams):
        if abs(np.linalg.det(scale[i][:3, :3])) < 1e-12:
            raise ValueError(f"{cam_path}: 'scale_mat_{i}' is singular")
    try:
        cameras = Camera.from_idr(torch.from_numpy(world), torch.from_numpy(scale), W, H)
    except ValueError as exc:
        raise ValueError(f"{cam_path}: bad camera matrices: {exc}") from None
    n = len(images)
    splits = {"train": list(range(n))}
    if test_views:
        bad = [v for v in test_views if not 0 <= v < n]
        if bad:
            raise ValueError(f"test_views: indices {bad} outside [0, {n})")
        splits["test"] = list(test_views)
    return MultiViewDataset(
        images=torch.from_numpy(np.stack(rgb)),
        masks=torch.from_numpy(np.stack(alpha)),
        cameras=cameras,
        scale_mat=torch.from_numpy(scale[0]),
        names=[p.stem for p in images],
        splits=splits,
        source=str(folder),
    )


def save_idr(dataset: MultiViewDataset, folder: str | os.PathLike) -> Path:
    """Write `dataset` as an IDR scan folder (`image/NNN.png`, `mask/NNN.png`, `cameras.npz`)."""
    folder = Path(folder)
    (folder / "image").mkdir(parents=True, exist_ok=True)
    (folder / "mask").mkdir(parents=True, exist_ok=True)
    world = dataset.cameras.to_idr(dataset.scale_mat).cpu().numpy()
    scale = dataset.scale_mat.double().cpu().numpy()
    arrays = {}
    for i in range(len(dataset)):
        write_image(folder / "image" / f"{i:03d}.png", dataset.images[i])
        write_image(folder / "mask" / f"{i:03d}.png", dataset.masks[i])
        arrays[f"world_mat_{i}"] = world[i]
        arrays[f"world_mat_inv_{i}"] = np.linalg.inv(world[i])
        arrays[f"scale_mat_{i}"] = scale
        arrays[f"scale_mat_inv_{i}"] = np.linalg.inv(scale)
    tmp = folder / ".cameras.tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, folder / "cameras.npz")
    return folder
