"""COLMAP scene folders: a sparse model (`sparse/0/` or `sparse/`, text or binary), `images/` and
optional `masks/`, read into a `MultiViewDataset` normalised to the unit sphere, and written back.

Layout (what `colmap mapper` / `colmap image_undistorter` leave):
    <scene>/sparse/0/{cameras,images,points3D}.{bin,txt}   (or <scene>/sparse/...)
    <scene>/images/<NAME>                                  NAME as listed in images.txt / images.bin
    <scene>/masks/<NAME stem>.png | <NAME>.png             optional, white (> 0.5) = object

Only registered images are read (files in images/ the model does not list are ignored), in the order
of their names. Cameras: SIMPLE_PINHOLE, PINHOLE, SIMPLE_RADIAL, RADIAL, OPENCV; the distortion of the
last three is undone by resampling the images (and masks) to the pinhole camera with the same K
(`distortion="undistort"`, default) or refused (`distortion="refuse"`). Fisheye and other models
are refused by name (`colmap image_undistorter` turns them into PINHOLE).

Normalisation (`scale_mat`, normalised -> COLMAP's world, as IDR's `scale_mat_i`): the masks' visual
hull when masks exist, else the sparse points seen in at least `min_track` images, bounded at a
percentile (stray points and far background beyond it are left out); neither is a named error.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch

from taichi_sdf.cameras.camera import Camera
from taichi_sdf.data.image_io import read_image, write_image
from taichi_sdf.data.multiview.base import MultiViewDataset
from taichi_sdf.data.multiview.colmap_model import (
    CAMERA_MODELS,
    ColmapCamera,
    ColmapImage,
    ColmapModel,
    ColmapPoints,
    model_format,
    qvec_to_rotmat,
    read_colmap_model,
    rotmat_to_qvec,
    write_colmap_model,
)
from taichi_sdf.data.multiview.distortion import undistort_views
from taichi_sdf.data.multiview.files import IMAGE_EXTS, check_masks, mask_from_image
from taichi_sdf.data.multiview.normalize import (
    estimate_normalization,
    given_scale_mat,
    look_at_point,
    normalization_from_points,
    normalized_cameras,
    warn_cameras_inside,
)

__all__ = ["SUPPORTED_MODELS", "find_model_folder", "is_colmap_folder", "colmap_cameras", "load_colmap", "save_colmap"]

SUPPORTED_MODELS = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV")
MODEL_FOLDERS = ("sparse/0", "sparse")


def find_model_folder(scene: str | os.PathLike) -> Path | None:
    """`<scene>/sparse/0` or `<scene>/sparse`, whichever holds a complete model (text or binary)."""
    for sub in MODEL_FOLDERS:
        if model_format(Path(scene) / sub) is not None:
            return Path(scene) / sub
    return None


def is_colmap_folder(scene: str | os.PathLike) -> bool:
    return find_model_folder(scene) is not None


def pinhole_and_distortion(camera: ColmapCamera, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(K `[3, 3]`, OpenCV coefficients (k1, k2, p1, p2, k3) `[5]`) of a camera of SUPPORTED_MODELS."""
    p = camera.params
    if camera.model not in SUPPORTED_MODELS:
        raise ValueError(
            f"{where}: camera {camera.id} uses the {camera.model} model; supported: {', '.join(SUPPORTED_MODELS)} "
            "(run `colmap image_undistorter` to get a PINHOLE model and undistorted images)"
        )
    fx, fy, cx, cy = (p[0], p[0], p[1], p[2]) if camera.model in ("SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL") else p[:4]
    coeffs = np.zeros(5)
    if camera.model == "SIMPLE_RADIAL":
        coeffs[0] = p[3]
    elif camera.model == "RADIAL":
        coeffs[:2] = p[3:5]
    elif camera.model == "OPENCV":
        coeffs[:4] = p[4:8]
    if not (fx > 0 and fy > 0):
        raise ValueError(f"{where}: camera {camera.id} has focal lengths {fx}, {fy}; expected positive values")
    return np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]]), coeffs


def colmap_cameras(model: ColmapModel, image_ids: list[int] | None = None) -> tuple[Camera, np.ndarray]:
    """(cameras of COLMAP's world frame for `image_ids` (default: all, sorted by name), distortion
    coefficients `[N, 5]`). Every image must have the same size."""
    ids = image_ids if image_ids is not None else sorted(model.images, key=lambda i: model.images[i].name)
    where = model.source or "model"
    K, T, coeffs, sizes = [], [], [], set()
    for iid in ids:
        im = model.images[iid]
        if im.camera_id not in model.cameras:
            raise ValueError(
                f"{where}: image {iid} ({im.name}) refers to camera {im.camera_id}, which the cameras file does not list"
            )
        cam = model.cameras[im.camera_id]
        k, c = pinhole_and_distortion(cam, where)
        pose = np.eye(4)
        pose[:3, :3], pose[:3, 3] = qvec_to_rotmat(im.qvec), im.tvec
        K.append(k), T.append(pose), coeffs.append(c), sizes.add((cam.width, cam.height))
    if len(sizes) > 1:
        raise ValueError(f"{where}: the images have different sizes {sorted(sizes)}; expected one size (one camera resolution)")
    if not ids:
        raise ValueError(f"{where}: the model has no registered images")
    W, H = sizes.pop()
    return Camera(torch.from_numpy(np.stack(K)), torch.from_numpy(np.stack(T)), W, H), np.stack(coeffs)


def _mask_file(masks: Path, name: str) -> Path | None:
    """COLMAP names a mask `<NAME>.png`; IDR-style folders use the image's stem with any image suffix."""
    rel = Path(name)
    for cand in (masks / f"{name}.png", *(masks / rel.with_suffix(ext) for ext in IMAGE_EXTS)):
        if cand.is_file():
            return cand
    return None


def _listing(paths: list[str], limit: int = 3) -> str:
    return ", ".join(paths[:limit]) + (f" (+{len(paths) - limit} more)" if len(paths) > limit else "")


def load_colmap(
    folder: str | os.PathLike,
    mask_threshold: float = 0.5,
    scale_mat: np.ndarray | torch.Tensor | str | None = "auto",
    distortion: str = "undistort",
    min_track: int = 2,
    percentile: float = 99.0,
    margin: float = 1.1,
) -> MultiViewDataset:
    """Read a COLMAP scene folder (see the module docstring for the layout).

    Args:
        mask_threshold: masks are grey levels > threshold (0/1 label masks as values > 0).
        scale_mat: normalised -> world `[4, 4]`; "auto" estimates it (masks' visual hull, else the
            sparse points), None keeps COLMAP's frame.
        distortion: "undistort" resamples distorted views to their pinhole K; "refuse" raises.
        min_track, percentile, margin: the point-based bound: points seen in >= `min_track` images,
            `percentile`% of them inside the sphere of radius 1 / `margin`.

    Raises:
        ValueError naming the file for a missing model file or images folder, a malformed or
        truncated model, an unsupported camera model, an image listed but missing, a size mismatch,
        a mask missing for some image, or no way to normalise (no masks, no usable points).
        Without masks/ every mask is all ones (a warning says so).
    """
    if distortion not in ("undistort", "refuse"):
        raise ValueError(f"distortion: expected 'undistort' or 'refuse', got {distortion!r}")
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: dataset folder not found")
    model_dir = find_model_folder(folder)
    if model_dir is None:
        sparse = next((folder / s for s in MODEL_FOLDERS if (folder / s).is_dir()), None)
        if sparse is not None:
            read_colmap_model(sparse)  # raises naming the files it found and those missing
        raise ValueError(
            f"{folder}: no COLMAP model; expected cameras, images and points3D (.bin or .txt) in sparse/0/ or sparse/"
        )
    model = read_colmap_model(model_dir)
    image_dir = folder / "images"
    if not image_dir.is_dir():
        raise ValueError(f"{image_dir}: images folder not found (expected the images the model in {model_dir} lists)")
    ids = sorted(model.images, key=lambda i: model.images[i].name)
    cams, coeffs = colmap_cameras(model, ids)
    if distortion == "refuse" and np.abs(coeffs).max(initial=0) > 0:
        bad = sorted({model.images[i].camera_id for i, c in zip(ids, coeffs) if np.abs(c).max() > 0})
        raise ValueError(
            f"{model_dir}: camera(s) {bad[:5]} have lens distortion and distortion='refuse'; undistort the images "
            "(`colmap image_undistorter`) or read with distortion='undistort'"
        )
    names = [model.images[i].name for i in ids]
    missing = [n for n in names if not (image_dir / n).is_file()]
    if missing:
        raise ValueError(f"{image_dir}: {len(missing)} image(s) the model lists are missing: {_listing(missing)}")
    mask_dir = folder / "masks"
    mask_files = None
    if mask_dir.is_dir():
        mask_files = [_mask_file(mask_dir, n) for n in names]
        lonely = [n for n, m in zip(names, mask_files) if m is None]
        if lonely:
            raise ValueError(
                f"{mask_dir}: no mask for {len(lonely)} image(s): {_listing(lonely)} "
                "(expected masks/<NAME>.png or masks/<NAME stem>.png beside each image)"
            )
    rgb, alpha = [], []
    for k, n in enumerate(names):
        img = read_image(image_dir / n)
        if img.shape[:2] != (cams.height, cams.width):
            raise ValueError(
                f"{image_dir / n}: size {img.shape[1]}x{img.shape[0]} differs from its camera's "
                f"{cams.width}x{cams.height} in {model_dir}"
            )
        rgb.append(img[..., :3] if img.shape[-1] >= 3 else np.repeat(img[..., :1], 3, -1))
        if mask_files is not None:
            m = read_image(mask_files[k])
            if m.shape[:2] != img.shape[:2]:
                raise ValueError(
                    f"{mask_files[k]}: mask size {m.shape[1]}x{m.shape[0]} differs from its image's {img.shape[1]}x{img.shape[0]}"
                )
            alpha.append(mask_from_image(m, mask_files[k], mask_threshold))
    view_names = [Path(n).with_suffix("").as_posix().replace("/", "_") for n in names]
    if mask_files is not None:
        check_masks(alpha, view_names, str(mask_dir))
        masks = torch.from_numpy(np.stack(alpha))
    else:
        masks = torch.ones(len(names), cams.height, cams.width, dtype=torch.bool)
        warnings.warn(
            f"{folder}: no masks/ folder; every mask is all ones (the whole image is the object), so mask losses "
            "are meaningless: give masks/<image stem>.png for IDR-style training",
            UserWarning,
            stacklevel=2,
        )
    images = torch.from_numpy(np.stack(rgb).astype(np.float32))
    if np.abs(coeffs).max(initial=0) > 0:
        images, undistorted = undistort_views(images, masks if mask_files is not None else None, cams.K, torch.from_numpy(coeffs))
        masks = undistorted if undistorted is not None else masks
    S = _scale_mat(scale_mat, model, model_dir, cams, masks if mask_files is not None else None, min_track, percentile, margin)
    normalized = normalized_cameras(cams, S)
    warn_cameras_inside(normalized, str(folder))
    return MultiViewDataset(
        images=images,
        masks=masks,
        cameras=normalized,
        scale_mat=S,
        names=view_names,
        splits={"train": list(range(len(names)))},
        source=str(folder),
    )


def _scale_mat(
    scale_mat, model: ColmapModel, model_dir: Path, cams: Camera, masks, min_track, percentile, margin
) -> torch.Tensor:
    given = given_scale_mat(scale_mat)
    if given is not None:
        return given
    pts = model.points
    usable = pts.xyz[pts.track_lengths >= min_track] if len(pts) else np.zeros((0, 3))
    if masks is not None:
        try:
            centre = look_at_point(cams)
        except ValueError:
            centre = torch.from_numpy(np.median(usable, 0)) if len(usable) else None
        return estimate_normalization(cams, masks, margin=margin, centre=centre)
    if len(usable) >= 4:
        return normalization_from_points(torch.from_numpy(usable), percentile, margin)
    raise ValueError(
        f"{model_dir}: cannot normalise to the unit sphere: points3D has {len(usable)} point(s) seen in >= {min_track} "
        f"images (expected at least 4) and there is no masks/ folder beside images/; give masks or a model with "
        "triangulated points"
    )


# -- writing ---------------------------------------------------------------------------------------


def _tracks(cams: Camera, masks: torch.Tensor, points: np.ndarray):
    """For each point `[P, 3]` (world), the views whose mask holds its projection (in front of the
    camera) and the pixel there: (uv `[N, P, 2]`, seen `[N, P]` bool)."""
    uv, z = cams.project(torch.from_numpy(points).to(cams.dtype))
    col, row = torch.floor(uv[..., 0]).long(), torch.floor(uv[..., 1]).long()
    inside = (z > 0) & (col >= 0) & (col < cams.width) & (row >= 0) & (row < cams.height)
    seen = torch.zeros_like(inside)
    for i in range(len(cams)):
        seen[i, inside[i]] = masks[i][row[i, inside[i]], col[i, inside[i]]]
    return uv.double().numpy(), seen.numpy()


def dataset_to_colmap(dataset: MultiViewDataset, points: np.ndarray | None = None, colors: np.ndarray | None = None,
                      names: list[str] | None = None) -> ColmapModel:  # fmt: skip
    """A COLMAP model of `dataset` in world units (`scale_mat` applied): one PINHOLE camera per distinct
    K (SIMPLE_PINHOLE when fx == fy), images named `names` (default `<name>.png`), and `points [P, 3]`
    (world units, `colors [P, 3]` uint8) with tracks = the views whose mask holds the point's
    projection (no occlusion test: a synthetic track, not a matcher's)."""
    S = dataset.scale_mat.double()
    world = normalized_cameras(dataset.cameras.to(dtype=torch.float64), torch.linalg.inv(S))
    names = names or [f"{n}.png" for n in dataset.names]
    cameras, key_to_id, images = {}, {}, {}
    for i in range(len(dataset)):
        K = world.K[i].numpy()
        key = tuple(np.round(K[[0, 1, 0, 1], [0, 1, 2, 2]], 12))
        if key not in key_to_id:
            cid = len(cameras) + 1
            fx, fy, cx, cy = (float(v) for v in key)
            simple = fx == fy
            cameras[cid] = ColmapCamera(cid, "SIMPLE_PINHOLE" if simple else "PINHOLE", dataset.width, dataset.height,
                                        np.array([fx, cx, cy] if simple else [fx, fy, cx, cy]))  # fmt: skip
            key_to_id[key] = cid
        T = world.T_cam_world[i].numpy()
        images[i + 1] = ColmapImage(i + 1, rotmat_to_qvec(T[:3, :3]), T[:3, 3].copy(), key_to_id[key], names[i])
    pts = ColmapPoints()
    if points is not None and len(points):
        points = np.asarray(points, np.float64).reshape(-1, 3)
        uv, seen = _tracks(world, dataset.masks.cpu(), points)
        colors = np.full((len(points), 3), 128, np.uint8) if colors is None else np.asarray(colors, np.uint8)
        tracks = [[] for _ in points]
        for i in range(len(dataset)):
            idx = np.nonzero(seen[i])[0]
            im = images[i + 1]
            im.xys, im.point3D_ids = uv[i, idx], idx.astype(np.int64) + 1
            for k, p in enumerate(idx):
                tracks[p].append((i + 1, k))
        pts = ColmapPoints(np.arange(1, len(points) + 1), points, colors, np.full(len(points), 0.5),
                           [np.asarray(t, np.int64).reshape(-1, 2) for t in tracks])  # fmt: skip
    return ColmapModel(cameras, images, pts)


def save_colmap(dataset: MultiViewDataset, folder: str | os.PathLike, binary: bool = False,
                points: np.ndarray | None = None, colors: np.ndarray | None = None, masks: bool = True) -> Path:  # fmt: skip
    """Write `dataset` as a COLMAP scene folder: `images/<name>.png`, `masks/<name>.png` (when `masks`),
    and `sparse/0/` in text (default) or binary form, in world units (`scale_mat` applied), with the
    sparse `points [P, 3]` (world units) when given (see `dataset_to_colmap`)."""
    folder = Path(folder)
    model = dataset_to_colmap(dataset, points, colors)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    if masks:
        (folder / "masks").mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(model.images.values()):
        write_image(folder / "images" / im.name, dataset.images[i])
        if masks:
            write_image(folder / "masks" / im.name, dataset.masks[i])
    write_colmap_model(model, folder / "sparse" / "0", binary=binary)
    return folder


__all__ += ["CAMERA_MODELS", "dataset_to_colmap", "read_colmap_model", "write_colmap_model"]
