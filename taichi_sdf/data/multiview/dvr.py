"""DVR multi-view folders (Niemeyer et al. 2020, `im2mesh/data/fields.py` ImagesField, `FAQ.md`):
`image/*.png`, `mask/*.png`, optional `depth/*.exr` and `cameras.npz` with, per view i,

- `world_mat_i` `[4, 4]`: world -> camera ("Rt", OpenCV axes: x right, y down, z forward);
- `camera_mat_i` `[4, 4]`: camera -> pixel coordinates in [-1, 1] (pixel index 0 -> -1, W-1 -> +1);
- `scale_mat_i` `[4, 4]` (optional, identity if absent): object frame (unit cube) -> world.

so that `p_cam = camera_mat @ world_mat @ scale_mat @ p_object` (then divide by z). Images are sorted
by name and matched to cameras by position, as DVR's glob does; masks are paired with images by file
stem (DVR's glob pairs by position, which a renamed mask shifts silently). Depth maps hold camera z in world units
with `inf` on the background. The dataset we return lives in the object frame (`scale_mat` = the
file's, one for all views) with our pixel convention (`Camera.from_dvr`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from taichi_sdf.cameras.camera import Camera, check_rotation
from taichi_sdf.data.exr import read_depth_exr, write_exr
from taichi_sdf.data.image_io import read_image, write_image
from taichi_sdf.data.multiview.base import MultiViewDataset
from taichi_sdf.data.multiview.files import (
    check_masks,
    check_projections,
    check_view_keys,
    list_files,
    mask_from_image,
    open_npz,
    pair_by_stem,
    read_matrix,
)

__all__ = ["is_dvr_folder", "load_dvr", "load_dvr_depth", "read_dvr_cameras", "write_dvr_cameras", "write_dvr_scene"]


def is_dvr_folder(folder: str | os.PathLike) -> bool:
    """True for a folder with `image/` and a `cameras.npz` holding DVR's `camera_mat_0` (IDR/DTU
    folders have the same layout but no `camera_mat_i`)."""
    folder = Path(folder)
    path = folder / "cameras.npz"
    if not ((folder / "image").is_dir() and path.is_file()):
        return False
    try:
        with np.load(path) as npz:
            return "camera_mat_0" in npz.files
    except Exception:  # unreadable: let the chosen loader report it
        return False


def read_dvr_cameras(path: str | os.PathLike, width: int, height: int, count: int | None = None) -> tuple[Camera, torch.Tensor]:
    """(cameras of the object frame, scale_mat `[4, 4]` float64 object -> world) from a DVR
    `cameras.npz` for images of `width` x `height` pixels.

    Raises:
        ValueError naming the file: missing file or key (`world_mat_i`, `camera_mat_i`), a count
        other than `count`, per-view `scale_mat_i` that differ, or matrices that are no pinhole camera.
    """
    path = Path(path)
    npz = open_npz(path)
    keys = set(npz.files)
    n = sum(1 for k in keys if k.startswith("world_mat_") and k[len("world_mat_") :].isdigit())
    if n == 0:
        raise ValueError(f"{path}: no 'world_mat_i' entries")
    if count is not None:
        check_view_keys(keys, "world_mat_", count, path, f"{count} images")
        n = count
    world = np.stack([read_matrix(npz, f"world_mat_{i}", path) for i in range(n)])
    camera = np.stack([read_matrix(npz, f"camera_mat_{i}", path) for i in range(n)])
    scale = np.stack([read_matrix(npz, f"scale_mat_{i}", path) if f"scale_mat_{i}" in keys else np.eye(4) for i in range(n)])
    differs = [i for i in range(n) if not np.allclose(scale[i], scale[0], rtol=1e-9, atol=1e-12)]
    if differs:
        raise ValueError(f"{path}: 'scale_mat_{differs[0]}' differs from 'scale_mat_0'; one object frame per folder is supported")
    if abs(np.linalg.det(scale[0][:3, :3])) < 1e-12:
        raise ValueError(f"{path}: 'scale_mat_0' is singular")
    check_projections(world @ scale, path)
    check_projections(camera, path, "camera_mat")
    try:
        cams = Camera.from_dvr(torch.from_numpy(camera), torch.from_numpy(world), width, height, torch.from_numpy(scale))
    except ValueError as exc:
        raise ValueError(f"{path}: bad camera matrices: {exc}") from None
    return cams, torch.from_numpy(scale[0])


def load_dvr(
    folder: str | os.PathLike,
    cameras_file: str = "cameras.npz",
    mask_threshold: float = 0.5,
    test_views: list[int] | None = None,
) -> MultiViewDataset:
    """Read a DVR folder (see the module docstring) into the object frame.

    Args:
        mask_threshold: masks are grey levels > threshold (DVR casts to bool, i.e. any non-zero
            value; the two agree on binary masks).
        test_views: view indices for the "test" split (all views are in "train").

    Raises:
        ValueError naming the file: missing folder/file/key, a count mismatch between images,
        masks and cameras, an unreadable image, or an image/mask size mismatch.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: dataset folder not found")
    images = list_files(folder / "image", "image")
    masks = list_files(folder / "mask", "mask")
    if len(images) != len(masks):
        raise ValueError(f"{folder}: {len(images)} images in image/ but {len(masks)} masks in mask/")
    rgb, alpha = [], []
    for i, (ip, mp) in enumerate(pair_by_stem(images, masks)):
        img, m = read_image(ip), read_image(mp)
        if i == 0:
            H, W = img.shape[:2]
        if img.shape[:2] != (H, W):
            raise ValueError(f"{ip}: size {img.shape[1]}x{img.shape[0]} differs from the first image's {W}x{H}")
        if m.shape[:2] != (H, W):
            raise ValueError(f"{mp}: mask size {m.shape[1]}x{m.shape[0]} differs from its image's {W}x{H}")
        rgb.append(img[..., :3] if img.shape[-1] >= 3 else np.repeat(img[..., :1], 3, -1))
        alpha.append(mask_from_image(m, mp, mask_threshold))
    check_masks(alpha, [p.name for p in masks], str(folder / "mask"))
    cameras, scale_mat = read_dvr_cameras(folder / cameras_file, W, H, len(images))
    n = len(images)
    splits = {"train": list(range(n))}
    if test_views:
        bad = [v for v in test_views if not 0 <= v < n]
        if bad:
            raise ValueError(f"test_views: indices {bad} outside [0, {n})")
        splits["test"] = list(test_views)
    return MultiViewDataset(
        images=torch.from_numpy(np.stack(rgb)), masks=torch.from_numpy(np.stack(alpha)), cameras=cameras,
        scale_mat=scale_mat, names=[p.stem for p in images], splits=splits, source=str(folder),
    )  # fmt: skip


def similarity_scale(scale_mat: torch.Tensor, name: str = "scale_mat") -> float:
    """The uniform scale s of a similarity `[4, 4]` (`scale_mat[:3, :3] = s Q`, Q a rotation);
    ValueError for anything else (non-uniform scales, shears, reflections)."""
    S = torch.as_tensor(scale_mat, dtype=torch.float64)
    if tuple(S.shape) != (4, 4):
        raise ValueError(f"{name}: expected shape [4, 4], got {list(S.shape)}")
    det = float(torch.linalg.det(S[:3, :3]))
    if not det > 0:
        raise ValueError(f"{name}: expected a similarity with positive scale, got det {det:.3g}")
    s = det ** (1.0 / 3.0)
    check_rotation(name, S[:3, :3] / s, atol=1e-6)
    return s


def load_dvr_depth(folder: str | os.PathLike, frame: str = "object", depth_folder: str = "depth") -> torch.Tensor:
    """Depth maps `[N, H, W]` float32 of a DVR folder: camera z (not ray length), `inf` on the
    background. frame "world" keeps the file's units; "object" divides by the scale of `scale_mat_0`
    (the z of the dataset's object-frame cameras). Files are matched to views by sorted position."""
    if frame not in ("object", "world"):
        raise ValueError(f"frame: expected 'object' or 'world', got {frame!r}")
    folder = Path(folder)
    files = list_files(folder / depth_folder, "depth", (".exr",))
    maps = [read_depth_exr(f) for f in files]
    for f, m in zip(files, maps):
        if m.shape != maps[0].shape:
            raise ValueError(f"{f}: size {m.shape[1]}x{m.shape[0]} differs from the first depth map's")
    depth = torch.from_numpy(np.stack(maps))
    if frame == "object":
        cam_path = folder / "cameras.npz"
        with np.load(cam_path) as npz:
            S = read_matrix(npz, "scale_mat_0", cam_path) if "scale_mat_0" in npz.files else np.eye(4)
        depth = depth / similarity_scale(torch.from_numpy(S), f"{cam_path}: scale_mat_0")
    return depth


def write_dvr_cameras(path: str | os.PathLike, cameras: Camera, scale_mat=None) -> Path:
    """Write object-frame `cameras` as DVR's `cameras.npz` (atomically): `camera_mat_i` (K to [-1, 1]
    pixels), `world_mat_i` (rigid world -> camera in world units) and `scale_mat_i` (`scale_mat`
    `[4, 4]`, a similarity object -> world; identity by default, as for DVR's ShapeNet data)."""
    if not isinstance(cameras, Camera):
        raise TypeError(f"cameras: expected a taichi_sdf Camera, got {type(cameras).__name__}")
    S = torch.eye(4, dtype=torch.float64) if scale_mat is None else torch.as_tensor(scale_mat, dtype=torch.float64).cpu()
    s = similarity_scale(S)
    camera_mat, T_cam_object = cameras.to_dvr()
    # world_mat @ S = s [R | t]: the same projection, with z in world units (DVR's depth files).
    world = s * T_cam_object.cpu() @ torch.linalg.inv(S)
    world[:, 3] = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64)
    arrays = {}
    for i in range(len(cameras)):
        arrays[f"camera_mat_{i}"] = camera_mat[i].cpu().numpy()
        arrays[f"world_mat_{i}"] = world[i].numpy()
        arrays[f"scale_mat_{i}"] = S.numpy()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    return path


def write_dvr_scene(
    folder: str | os.PathLike,
    dataset: MultiViewDataset,
    depth: torch.Tensor | None = None,  # [N, H, W]
    depth_frame: str = "object",
) -> Path:
    """Write `dataset` as a DVR folder: `image/NNNN.png`, `mask/NNNN.png`, `cameras.npz` and, given
    `depth` (camera z in the `depth_frame`, "object" or "world"), `depth/NNNN.exr` in world units
    with `inf` wherever the mask is off or the depth is not positive (the rasterizer's 0 background).
    Returns the folder."""
    folder = Path(folder)
    n = len(dataset)
    if depth is not None:
        depth = torch.as_tensor(depth)
        if tuple(depth.shape) != (n, dataset.height, dataset.width):
            raise ValueError(f"depth: expected shape [{n}, {dataset.height}, {dataset.width}], got {list(depth.shape)}")
        if depth_frame not in ("object", "world"):
            raise ValueError(f"depth_frame: expected 'object' or 'world', got {depth_frame!r}")
        scale = similarity_scale(dataset.scale_mat) if depth_frame == "object" else 1.0
        depth = (depth.double().cpu() * scale).float()
        depth = torch.where(dataset.masks.cpu() & (depth > 0), depth, torch.full_like(depth, float("inf")))
    for i in range(n):
        write_image(folder / "image" / f"{i:04d}.png", dataset.images[i])
        write_image(folder / "mask" / f"{i:04d}.png", dataset.masks[i])
        if depth is not None:
            write_exr(folder / "depth" / f"{i:04d}.exr", depth[i].numpy())
    write_dvr_cameras(folder / "cameras.npz", dataset.cameras, dataset.scale_mat)
    return folder
