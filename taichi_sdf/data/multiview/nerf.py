"""NeRF-synthetic folders: `transforms_{split}.json` (OpenGL camera-to-world, `camera_angle_x`) and
RGBA images. The alpha channel is the mask; RGB is composited over `background`."""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from taichi_sdf.cameras.camera import Camera
from taichi_sdf.data.image_io import read_image, write_image
from taichi_sdf.data.multiview.base import MultiViewDataset
from taichi_sdf.data.multiview.files import check_masks
from taichi_sdf.data.multiview.normalize import estimate_normalization

SPLITS = ("train", "val", "test")


def _read_transforms(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: malformed JSON ({exc})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("frames"), list) or not meta["frames"]:
        raise ValueError(f"{path}: expected an object with a non-empty 'frames' list")
    if "camera_angle_x" not in meta and "fl_x" not in meta:
        raise ValueError(f"{path}: missing 'camera_angle_x' (or 'fl_x')")
    _check_number(meta, "camera_angle_x", path, "radians in (0, pi)", lambda v: 0 < v < math.pi)
    _check_number(meta, "fl_x", path, "a focal length in pixels > 0", lambda v: v > 0)
    return meta


def _check_number(meta: dict, key: str, path: Path, expected: str, ok) -> None:
    """`meta[key]`, when present, must be a JSON number (not a string, list, null or bool) with `ok(value)`."""
    if key not in meta:
        return
    v = meta[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not ok(v):
        hint = " (degrees?)" if key == "camera_angle_x" and isinstance(v, (int, float)) and 3.2 <= v <= 180 else ""
        raise ValueError(f"{path}: '{key}' must be a number, {expected}; got {json.dumps(v)}{hint}")


def _pose(raw) -> np.ndarray | None:
    """A finite `[4, 4]` or `[3, 4]` matrix of JSON numbers as float64, else None."""
    m = np.asarray(raw) if isinstance(raw, list) else np.zeros(0)
    if m.dtype.kind not in "iuf" or m.shape not in ((4, 4), (3, 4)) or not np.isfinite(m).all():
        return None
    return m.astype(np.float64)


def _frame_image(folder: Path, frame: dict, path: Path, index: int) -> Path:
    rel = frame.get("file_path") if isinstance(frame, dict) else None
    if not isinstance(rel, str):
        raise ValueError(f"{path}: frame {index} has no 'file_path'")
    p = (folder / rel).resolve() if not os.path.isabs(rel) else Path(rel)
    if p.suffix.lower() not in (".png", ".jpg", ".jpeg", ".exr"):
        p = p.with_name(p.name + ".png")
    return p


def load_nerf(
    folder: str | os.PathLike,
    splits: tuple[str, ...] = SPLITS,
    background: tuple[float, float, float] = (0.0, 0.0, 0.0),
    scale_mat: np.ndarray | torch.Tensor | str | None = "auto",
    mask_threshold: float = 0.5,
) -> MultiViewDataset:
    """Read a NeRF-synthetic folder into one dataset (all given splits, in order).

    Args:
        splits: which `transforms_{split}.json` to read; missing files are an error unless none of
            the others exist either (at least "train" must exist).
        background: colour composited under transparent pixels.
        mask_threshold: masks are alpha > threshold. Images without alpha get all-ones masks (a
            warning says so); all-empty masks are an error, empty masks of some views a warning.
        scale_mat: normalised -> world similarity `[4, 4]`; "auto" estimates the bounding sphere from
            the masks and cameras (visual hull), None keeps the file's frame (identity).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: dataset folder not found")
    if not (folder / "transforms_train.json").is_file():
        raise ValueError(f"{folder / 'transforms_train.json'}: file not found")
    names, rgb, alpha, c2w, split_idx, no_alpha = [], [], [], [], {}, []
    angle, size, focal = None, None, None
    for split in splits:
        path = folder / f"transforms_{split}.json"
        if not path.is_file():
            continue
        meta = _read_transforms(path)
        split_idx[split] = []
        for i, frame in enumerate(meta["frames"]):
            img_path = _frame_image(folder, frame, path, i)
            img = read_image(img_path)
            if size is None:
                size = img.shape[:2]
            if img.shape[:2] != size:
                raise ValueError(f"{img_path}: size {img.shape[1]}x{img.shape[0]} differs from {size[1]}x{size[0]}")
            if img.shape[-1] in (2, 4):  # grey + alpha, RGB + alpha
                a = img[..., -1:]
                colour = img[..., :3] if img.shape[-1] == 4 else np.repeat(img[..., :1], 3, -1)
                rgb.append(colour * a + np.asarray(background, np.float32) * (1 - a))
                alpha.append(a[..., 0] > mask_threshold)
            else:
                rgb.append(img[..., :3] if img.shape[-1] == 3 else np.repeat(img, 3, -1))
                alpha.append(np.ones(img.shape[:2], bool))
                no_alpha.append(img_path.name)
            m = _pose(frame.get("transform_matrix"))
            if m is None:
                raise ValueError(f"{path}: frame {i} 'transform_matrix' must be a finite 4x4 or 3x4 matrix of numbers")
            if not np.allclose(m[:3, :3].T @ m[:3, :3], np.eye(3), atol=1e-4) or not np.linalg.det(m[:3, :3]) > 0:
                raise ValueError(
                    f"{path}: frame {i} 'transform_matrix' is no rigid camera-to-world pose (its 3x3 is no rotation)"
                )
            c2w.append(m[:3, :4])
            split_idx[split].append(len(names))
            names.append(f"{split}_{Path(img_path).stem}")
        a = float(meta["camera_angle_x"]) if "camera_angle_x" in meta else None
        f = float(meta["fl_x"]) if "fl_x" in meta else None
        if angle is None and focal is None:
            angle, focal = a, f
        elif (a is not None and angle is not None and not math.isclose(a, angle, rel_tol=1e-6)) or (
            f is not None and focal is not None and not math.isclose(f, focal, rel_tol=1e-6)
        ):
            raise ValueError(f"{path}: field of view differs from the other splits'")
    if no_alpha:
        warnings.warn(
            f"{folder}: {len(no_alpha)} of {len(names)} images have no alpha channel ({no_alpha[0]}, ...); their masks "
            "are all ones (the whole image is the object), so give RGBA images for mask losses and normalisation",
            UserWarning,
            stacklevel=2,
        )
    check_masks(alpha, names, str(folder))
    H, W = size
    c2w_t = torch.from_numpy(np.stack(c2w))
    try:
        cameras = Camera.from_nerf(c2w_t, W, H, camera_angle_x=None if focal else angle, focal=focal)
    except ValueError as exc:
        raise ValueError(f"{folder}: bad camera in transforms: {exc}") from None
    masks = torch.from_numpy(np.stack(alpha))
    if isinstance(scale_mat, str):
        if scale_mat != "auto":
            raise ValueError(f"scale_mat: expected a [4, 4] matrix, 'auto' or None, got {scale_mat!r}")
        S = estimate_normalization(cameras, masks)
    elif scale_mat is None:
        S = torch.eye(4, dtype=torch.float64)
    else:
        S = torch.as_tensor(scale_mat, dtype=torch.float64)
        if tuple(S.shape) != (4, 4):
            raise ValueError(f"scale_mat: expected shape [4, 4], got {list(S.shape)}")
    cameras = Camera.from_projection(cameras.projection() @ S.to(cameras.dtype), W, H)
    return MultiViewDataset(
        images=torch.from_numpy(np.stack(rgb).astype(np.float32)),
        masks=masks,
        cameras=cameras,
        scale_mat=S,
        names=names,
        splits=split_idx,
        source=str(folder),
    )


def save_nerf(dataset: MultiViewDataset, folder: str | os.PathLike, splits: dict[str, list[int]] | None = None) -> Path:
    """Write `dataset` as a NeRF-synthetic folder (RGBA PNGs, cameras in world units).

    The intrinsics must be a centred pinhole with square pixels (what `camera_angle_x` can express);
    anything else raises ValueError.
    """
    folder = Path(folder)
    splits = splits or dataset.splits
    # Cameras in world units: P_world = P_normalised @ inv(scale_mat).
    world = Camera.from_projection(
        dataset.cameras.projection().double() @ torch.linalg.inv(dataset.scale_mat.double()), dataset.width, dataset.height
    )
    K = world.K
    W, H = dataset.width, dataset.height
    if not (
        torch.allclose(K[:, 0, 0], K[:, 1, 1], rtol=1e-6)
        and torch.allclose(K[:, 0, 2], torch.full_like(K[:, 0, 2], W / 2), atol=1e-6)
        and torch.allclose(K[:, 1, 2], torch.full_like(K[:, 1, 2], H / 2), atol=1e-6)
        and torch.allclose(K[:, 0, 0], K[0, 0, 0].expand(len(K)), rtol=1e-6)
        and (K[:, 0, 1].abs() < 1e-9).all()
    ):
        raise ValueError("dataset: the NeRF format needs one centred pinhole with square pixels and no skew")
    c2w = world.to_nerf().cpu().numpy()
    angle = float(world.camera_angle_x[0])
    for split, idx in splits.items():
        (folder / split).mkdir(parents=True, exist_ok=True)
        frames = []
        for k, i in enumerate(idx):
            rgba = torch.cat([dataset.images[i], dataset.masks[i, ..., None].float()], -1)
            write_image(folder / split / f"r_{k}.png", rgba)
            frames.append({"file_path": f"./{split}/r_{k}", "transform_matrix": c2w[i].tolist()})
        tmp = folder / f".transforms_{split}.json.tmp"
        tmp.write_text(json.dumps({"camera_angle_x": angle, "frames": frames}, indent=2))
        os.replace(tmp, folder / f"transforms_{split}.json")
    return folder
