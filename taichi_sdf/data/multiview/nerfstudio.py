"""nerfstudio folders: one `transforms.json` (what `ns-process-data` writes) with images, optional
masks and an optional sparse point cloud, read into a `MultiViewDataset` normalised to the unit sphere.

The file: intrinsics `fl_x, fl_y, cx, cy, w, h` (pixels; pixel centres at +0.5 as in COLMAP) given
once at the top level or per frame (a frame's keys override the top level's), `camera_model`
(SIMPLE_PINHOLE, PINHOLE, SIMPLE_RADIAL, RADIAL, OPENCV; default OPENCV), distortion `k1 k2 k3 p1 p2`,
and `frames`: `file_path` (relative to the folder), `transform_matrix` (camera-to-world, OpenGL axes:
x right, y up, z back, as NeRF's blender scenes), optional `mask_path`. `applied_transform` (`[3, 4]`)
is the rigid transform ns-process-data applied to COLMAP's world to get the file's frame;
`ply_file_path` names a point cloud in the file's frame.

Unlike the blender scenes, these are not in the unit sphere; `scale_mat` (normalised -> world) is
estimated from the masks' visual hull, else the point cloud (a percentile bound), else the point the
cameras look at (the largest sphere about it that every camera sees whole). "World" is the file's
frame, or COLMAP's with `frame="colmap"` (`applied_transform` undone, so meshes overlay the sparse
model).
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from taichi_sdf.cameras.camera import Camera, invert_rigid
from taichi_sdf.data.image_io import read_image, write_image
from taichi_sdf.data.multiview.base import MultiViewDataset
from taichi_sdf.data.multiview.distortion import COEFFS, undistort_views
from taichi_sdf.data.multiview.files import check_masks, mask_from_image
from taichi_sdf.data.multiview.normalize import (
    estimate_normalization,
    given_scale_mat,
    look_at_point,
    normalization_from_cameras,
    normalization_from_points,
    normalized_cameras,
    warn_cameras_inside,
)

__all__ = ["TRANSFORMS", "is_nerfstudio_folder", "load_nerfstudio", "save_nerfstudio"]

TRANSFORMS = "transforms.json"
PINHOLE_MODELS = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV")
INTRINSICS = ("fl_x", "fl_y", "cx", "cy", "w", "h")
_GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])


def is_nerfstudio_folder(folder: str | os.PathLike) -> bool:
    return (Path(folder) / TRANSFORMS).is_file()


def _number(value, path: Path, where: str, key: str, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or (positive and not value > 0):
        kind = "a positive number" if positive else "a finite number"
        raise ValueError(f"{path}: {where}'{key}' must be {kind}, got {json.dumps(value)}")
    return float(value)


def _matrix(raw, path: Path, where: str, key: str) -> np.ndarray:
    """A rigid `[4, 4]` from a `[4, 4]` or `[3, 4]` JSON matrix whose 3x3 block is a rotation."""
    m = np.asarray(raw) if isinstance(raw, list) else np.zeros(0)
    if m.dtype.kind not in "iuf" or m.shape not in ((4, 4), (3, 4)) or not np.isfinite(m).all():
        raise ValueError(f"{path}: {where}'{key}' must be a finite 4x4 or 3x4 matrix of numbers")
    out = np.eye(4)
    out[:3] = m[:3].astype(np.float64)
    R = out[:3, :3]
    if not np.allclose(R.T @ R, np.eye(3), atol=1e-4) or not np.linalg.det(R) > 0:
        raise ValueError(f"{path}: {where}'{key}' is no rigid transform (its 3x3 block is no rotation)")
    return out


def _intrinsics(meta: dict, frame: dict, path: Path, i: int) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """(K `[3, 3]`, coefficients (k1, k2, p1, p2, k3) `[5]`, (w, h)) of frame i, frame keys first."""

    def get(key, default=None):
        return frame.get(key, meta.get(key, default))

    model = get("camera_model", "OPENCV")
    if model not in PINHOLE_MODELS:
        raise ValueError(
            f"{path}: frame {i} has camera_model {model!r}; supported: {', '.join(PINHOLE_MODELS)} "
            "(fisheye and equirectangular captures need undistorting first)"
        )
    where = f"frame {i}: "
    missing = [k for k in ("fl_x", "cx", "cy", "w", "h") if get(k) is None]
    if missing:
        raise ValueError(f"{path}: {where}missing {', '.join(repr(k) for k in missing)} (at the top level or in the frame)")
    fx = _number(get("fl_x"), path, where, "fl_x", positive=True)
    fy = _number(get("fl_y", get("fl_x")), path, where, "fl_y", positive=True)
    cx, cy = (_number(get(k), path, where, k) for k in ("cx", "cy"))
    w, h = (_number(get(k), path, where, k, positive=True) for k in ("w", "h"))
    if w != int(w) or h != int(h):
        raise ValueError(f"{path}: {where}'w', 'h' must be whole numbers of pixels, got {w}, {h}")
    coeffs = np.array([_number(get(k, 0.0), path, where, k) for k in COEFFS])
    if get("k4", 0.0) != 0.0:
        raise ValueError(f"{path}: {where}'k4' is a fisheye coefficient; expected 0 for camera_model {model}")
    return np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]]), coeffs, (int(w), int(h))


def _file(folder: Path, frame: dict, key: str, path: Path, i: int) -> Path:
    rel = frame.get(key)
    if not isinstance(rel, str) or not rel:
        raise ValueError(f"{path}: frame {i} has no '{key}' (a path relative to {folder})")
    return Path(rel) if os.path.isabs(rel) else folder / rel


def _read_points(path: Path, json_path: Path) -> np.ndarray:
    """`[P, 3]` vertices of the PLY point cloud named by `ply_file_path`."""
    import trimesh

    if not path.is_file():
        raise ValueError(f"{json_path}: 'ply_file_path' names {path}, which does not exist")
    try:
        cloud = trimesh.load(path, process=False)
    except Exception as exc:  # trimesh raises many types for a malformed file
        raise ValueError(f"{path}: cannot read the point cloud ({type(exc).__name__}: {exc}); expected a PLY file") from None
    vertices = np.asarray(getattr(cloud, "vertices", np.zeros((0, 3))), np.float64)
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise ValueError(f"{path}: expected a PLY point cloud with x, y, z vertices")
    return vertices


def load_nerfstudio(
    folder: str | os.PathLike,
    transforms: str = TRANSFORMS,
    mask_threshold: float = 0.5,
    scale_mat: np.ndarray | torch.Tensor | str | None = "auto",
    distortion: str = "undistort",
    frame: str = "transforms",
    percentile: float = 99.0,
    margin: float = 1.1,
) -> MultiViewDataset:
    """Read a nerfstudio folder (see the module docstring).

    Args:
        scale_mat: normalised -> world `[4, 4]`; "auto" estimates it (masks, else the point cloud,
            else the cameras' look-at point); None keeps the world frame.
        distortion: "undistort" resamples distorted views to their pinhole K; "refuse" raises.
        frame: "transforms" (world = the file's frame) or "colmap" (world = COLMAP's frame before
            `applied_transform`; the transform is folded into `scale_mat`).

    Raises:
        ValueError naming the file: malformed JSON, missing intrinsics, an unsupported camera model,
        a pose that is not rigid, a missing image or mask, differing image sizes, masks on some
        frames only. Without masks every mask is all ones (a warning says so).
    """
    if distortion not in ("undistort", "refuse"):
        raise ValueError(f"distortion: expected 'undistort' or 'refuse', got {distortion!r}")
    if frame not in ("transforms", "colmap"):
        raise ValueError(f"frame: expected 'transforms' or 'colmap', got {frame!r}")
    folder = Path(folder)
    path = folder / transforms
    if not folder.is_dir():
        raise ValueError(f"{folder}: dataset folder not found")
    if not path.is_file():
        raise ValueError(f"{path}: file not found")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: malformed JSON ({exc})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("frames"), list) or not meta["frames"]:
        raise ValueError(f"{path}: expected an object with a non-empty 'frames' list")
    frames = meta["frames"]
    if any(not isinstance(f, dict) for f in frames):
        raise ValueError(f"{path}: every entry of 'frames' must be an object")
    with_mask = [i for i, f in enumerate(frames) if "mask_path" in f]
    if with_mask and len(with_mask) != len(frames):
        lacking = [i for i in range(len(frames)) if i not in set(with_mask)]
        raise ValueError(f"{path}: frames {lacking[:5]} have no 'mask_path' while {len(with_mask)} others do; give all or none")
    K, coeffs, c2w, rgb, alpha, names, size = [], [], [], [], [], [], None
    for i, f in enumerate(frames):
        k, c, wh = _intrinsics(meta, f, path, i)
        if size is None:
            size = wh
        if wh != size:
            raise ValueError(f"{path}: frame {i} is {wh[0]}x{wh[1]}, frame 0 {size[0]}x{size[1]}; expected one image size")
        if distortion == "refuse" and np.abs(c).max() > 0:
            raise ValueError(f"{path}: frame {i} has lens distortion (k1 k2 k3 p1 p2 not all 0) and distortion='refuse'")
        if "transform_matrix" not in f:
            raise ValueError(f"{path}: frame {i} has no 'transform_matrix'")
        c2w.append(_matrix(f["transform_matrix"], path, f"frame {i} ", "transform_matrix"))
        img_path = _file(folder, f, "file_path", path, i)
        img = read_image(img_path)
        if img.shape[:2] != (size[1], size[0]):
            raise ValueError(
                f"{img_path}: size {img.shape[1]}x{img.shape[0]} differs from the 'w', 'h' {size[0]}x{size[1]} of {path}"
            )
        rgb.append(img[..., :3] if img.shape[-1] >= 3 else np.repeat(img[..., :1], 3, -1))
        if with_mask:
            mask_path = _file(folder, f, "mask_path", path, i)
            m = read_image(mask_path)
            if m.shape[:2] != img.shape[:2]:
                raise ValueError(
                    f"{mask_path}: mask size {m.shape[1]}x{m.shape[0]} differs from its image's {img.shape[1]}x{img.shape[0]}"
                )
            alpha.append(mask_from_image(m, mask_path, mask_threshold))
        K.append(k), coeffs.append(c), names.append(img_path.stem)
    W, H = size
    T_world_cam = torch.from_numpy(np.stack(c2w) @ _GL_TO_CV)
    cams = Camera(torch.from_numpy(np.stack(K)), invert_rigid(T_world_cam), W, H)
    images = torch.from_numpy(np.stack(rgb).astype(np.float32))
    if with_mask:
        check_masks(alpha, names, str(path))
        masks = torch.from_numpy(np.stack(alpha))
    else:
        masks = torch.ones(len(frames), H, W, dtype=torch.bool)
        warnings.warn(f"{path}: no 'mask_path' in the frames; every mask is all ones (the whole image is the object), "
                      "so mask losses are meaningless", UserWarning, stacklevel=2)  # fmt: skip
    coeffs = np.stack(coeffs)
    if np.abs(coeffs).max() > 0:
        images, undistorted = undistort_views(images, masks if with_mask else None, cams.K, torch.from_numpy(coeffs))
        masks = undistorted if with_mask else masks
    S = _scale_mat(scale_mat, meta, folder, path, cams, masks if with_mask else None, percentile, margin)
    normalized = normalized_cameras(cams, S)
    warn_cameras_inside(normalized, str(folder))
    if frame == "colmap" and "applied_transform" in meta:
        A = torch.from_numpy(_matrix(meta["applied_transform"], path, "", "applied_transform"))
        # x_file = A x_colmap: the normalised frame maps to COLMAP's by inv(A) @ S (still a similarity).
        return _dataset(images, masks, normalized, torch.linalg.inv(A) @ S, names, folder)
    return _dataset(images, masks, normalized, S, names, folder)


def _dataset(images, masks, cameras, S, names, folder) -> MultiViewDataset:
    return MultiViewDataset(images=images, masks=masks, cameras=cameras, scale_mat=S, names=names,
                            splits={"train": list(range(len(names)))}, source=str(folder))  # fmt: skip


def _scale_mat(scale_mat, meta: dict, folder: Path, path: Path, cams: Camera, masks, percentile, margin) -> torch.Tensor:
    given = given_scale_mat(scale_mat)
    if given is not None:
        return given
    if masks is not None:
        try:
            centre = look_at_point(cams)
        except ValueError:
            centre = None
        return estimate_normalization(cams, masks, margin=margin, centre=centre)
    ply = meta.get("ply_file_path")
    if isinstance(ply, str) and ply:
        return normalization_from_points(torch.from_numpy(_read_points(folder / ply, path)), percentile, margin)
    try:
        return normalization_from_cameras(cams)
    except ValueError as exc:
        raise ValueError(
            f"{path}: cannot normalise to the unit sphere: no 'mask_path' in the frames, no 'ply_file_path', and {exc}"
        ) from None


def save_nerfstudio(dataset: MultiViewDataset, folder: str | os.PathLike, points: np.ndarray | None = None,
                    per_frame_intrinsics: bool | None = None, applied_transform: np.ndarray | None = None,
                    masks: bool = True) -> Path:  # fmt: skip
    """Write `dataset` as a nerfstudio folder: `images/frame_00001.png ...`, `masks/` (when `masks`),
    `transforms.json` (camera_model OPENCV with zero distortion, world units), and `sparse_pc.ply` from
    `points [P, 3]` (world units) when given. Intrinsics go at the top level when every view shares
    them, else per frame (`per_frame_intrinsics` forces either). `applied_transform` (`[3, 4]` or
    `[4, 4]` rigid, default identity) is applied to poses and points and recorded, as ns-process-data does."""
    folder = Path(folder)
    S = dataset.scale_mat.double()
    world = normalized_cameras(dataset.cameras.to(dtype=torch.float64), torch.linalg.inv(S))
    A = np.eye(4)
    if applied_transform is not None:
        A[:3] = np.asarray(applied_transform, np.float64)[:3]
    c2w = A @ world.T_world_cam.numpy() @ _GL_TO_CV
    K = world.K.numpy()
    shared = bool(np.allclose(K, K[:1], rtol=0, atol=1e-12)) if per_frame_intrinsics is None else not per_frame_intrinsics

    def intrinsics(k):
        return {"fl_x": float(k[0, 0]), "fl_y": float(k[1, 1]), "cx": float(k[0, 2]), "cy": float(k[1, 2]),
                "w": dataset.width, "h": dataset.height}  # fmt: skip

    meta = {"camera_model": "OPENCV", **(intrinsics(K[0]) if shared else {}), "k1": 0.0, "k2": 0.0, "p1": 0.0, "p2": 0.0}
    (folder / "images").mkdir(parents=True, exist_ok=True)
    if masks:
        (folder / "masks").mkdir(parents=True, exist_ok=True)
    frames = []
    for i in range(len(dataset)):
        name = f"frame_{i + 1:05d}.png"
        write_image(folder / "images" / name, dataset.images[i])
        entry = {"file_path": f"images/{name}", "transform_matrix": c2w[i].tolist()}
        if masks:
            write_image(folder / "masks" / name, dataset.masks[i])
            entry["mask_path"] = f"masks/{name}"
        frames.append(entry if shared else {**intrinsics(K[i]), **entry})
    meta["frames"] = frames
    meta["applied_transform"] = A[:3].tolist()
    if points is not None:
        import trimesh

        pts = np.asarray(points, np.float64).reshape(-1, 3) @ A[:3, :3].T + A[:3, 3]
        trimesh.PointCloud(pts).export(folder / "sparse_pc.ply")
        meta["ply_file_path"] = "sparse_pc.ply"
    tmp = folder / f".{TRANSFORMS}.tmp"
    tmp.write_text(json.dumps(meta, indent=2))
    os.replace(tmp, folder / TRANSFORMS)
    return folder
