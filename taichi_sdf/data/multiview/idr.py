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
from taichi_sdf.data.multiview.files import (
    IMAGE_EXTS,
    check_masks,
    check_projections,
    check_view_keys,
    list_files,
    mask_from_image,
    open_npz,
    pair_by_stem,
    read_matrix,
)

__all__ = ["IMAGE_EXTS", "list_files", "read_matrix", "load_idr", "save_idr"]


def load_idr(
    folder: str | os.PathLike,
    cameras_file: str = "cameras.npz",
    mask_threshold: float = 0.5,
    test_views: list[int] | None = None,
) -> MultiViewDataset:
    """Read an IDR/DTU scan folder.

    Args:
        folder: contains `image/`, `mask/` and `cameras_file`.
        mask_threshold: masks are grey levels > threshold (IDR thresholds at 127.5 / 255); masks
            stored as 0/1 labels are read as values > 0.
        test_views: view indices for the "test" split (all views are in "train").

    Images and masks are paired by file stem (digit-only stems by number: DTU's `000000.png` and
    `000.png`); camera i is the i-th image in sorted order, as in IDR.

    Raises:
        ValueError naming the file for a missing folder/file, an image without a mask (or the
        reverse), a missing `world_mat_i`, a bad or singular matrix, an unreadable image, a size
        mismatch or all-empty masks. Empty masks of some views are a warning naming them.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: dataset folder not found")
    images = list_files(folder / "image", "image")
    masks = list_files(folder / "mask", "mask")
    if len(images) != len(masks):
        raise ValueError(f"{folder}: {len(images)} images in image/ but {len(masks)} masks in mask/")
    pairs = pair_by_stem(images, masks)
    cam_path = folder / cameras_file
    npz = open_npz(cam_path)
    keys = set(npz.files)
    check_view_keys(keys, "world_mat_", len(images), cam_path, f"{len(images)} images in {folder / 'image'}")
    n_cams = len(images)

    rgb, alpha = [], []
    for i, (ip, mp) in enumerate(pairs):
        img = read_image(ip)
        m = read_image(mp)
        if i == 0:
            H, W = img.shape[:2]
        if img.shape[:2] != (H, W):
            raise ValueError(f"{ip}: size {img.shape[1]}x{img.shape[0]} differs from the first image's {W}x{H}")
        if m.shape[:2] != (H, W):
            raise ValueError(f"{mp}: mask size {m.shape[1]}x{m.shape[0]} differs from its image's {W}x{H}")
        rgb.append(img[..., :3] if img.shape[-1] >= 3 else np.repeat(img[..., :1], 3, -1))
        alpha.append(mask_from_image(m, mp, mask_threshold))
    check_masks(alpha, [p.name for p in masks], str(folder / "mask"))

    world = np.stack([read_matrix(npz, f"world_mat_{i}", cam_path) for i in range(n_cams)])
    scale = np.stack(
        [read_matrix(npz, f"scale_mat_{i}", cam_path) if f"scale_mat_{i}" in keys else np.eye(4) for i in range(n_cams)]
    )
    for i in range(n_cams):
        if abs(np.linalg.det(scale[i][:3, :3])) < 1e-12:
            raise ValueError(f"{cam_path}: 'scale_mat_{i}' is singular")
    check_projections(world @ scale, cam_path)
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
