"""Multi-view data for the reconstruction apps: a config section naming a dataset folder (IDR/DTU,
NeRF, DVR, COLMAP or nerfstudio layout) or a built-in scene, its loader with the train/test split, and its ground truth."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from taichi_sdf.data.multiview.base import MultiViewDataset
from taichi_sdf.data.multiview.colmap import is_colmap_folder, load_colmap
from taichi_sdf.data.multiview.dvr import is_dvr_folder, load_dvr
from taichi_sdf.data.multiview.idr import load_idr
from taichi_sdf.data.multiview.nerf import load_nerf
from taichi_sdf.data.multiview.nerfstudio import is_nerfstudio_folder, load_nerfstudio
from taichi_sdf.train.config import check


@dataclass
class MultiViewDataConfig:
    """Where a multi-view app's images, masks and cameras come from (the `data` section of its config)."""

    data: str | None = None  # IDR/DTU scan, NeRF, DVR, COLMAP or nerfstudio folder; None = the built-in dataset
    format: Literal["auto", "idr", "nerf", "dvr", "colmap", "nerfstudio"] = "auto"  # auto: see detect_format
    scene: str = "csg"  # built-in scene when data is None
    views: int = 48  # built-in dataset size
    size: int = 64  # built-in image width = height
    test_every: int = 8  # views 3, 11, 19, ... are held out (as in ../shared/data/spot)
    test_offset: int = 3
    # NeRF folders: the transforms_{split}.json trained on, comma-separated ("train,val" adds val);
    # transforms_test.json is held out (synthetic NeRF scenes often repeat test views in val).
    nerf_train: str = "train"

    def __post_init__(self) -> None:
        for key in ("views", "size", "test_every"):
            check(getattr(self, key) >= 1, key, ">= 1", getattr(self, key))
        check(self.test_offset >= 0, "test_offset", ">= 0", self.test_offset)
        parts = nerf_train_splits(self.nerf_train)
        check(bool(parts) and set(parts) <= {"train", "val"}, "nerf_train", "'train', 'val' or 'train,val'", self.nerf_train)
        check(self.data is None or self.data.strip() != "", "data", "a dataset folder or null (the built-in one)", self.data)
        check(self.data is not None or self.format == "auto", "format",
              "'auto' without data.data (a format names the layout of a dataset folder: set data.data=<folder> too; "
              "without it the built-in scene is used)", self.format)  # fmt: skip


def builtin_folder(d: MultiViewDataConfig) -> Path:
    """Cache folder of the built-in dataset; the name carries a hash of everything that shapes it."""
    import hashlib

    from taichi_sdf.data import builtin
    from taichi_sdf.implicit.scenes import SCENES

    key = repr((d.scene, SCENES.get(d.scene), d.views, d.size, d.test_every, d.test_offset, builtin.DATASET_VERSION))
    return Path("outputs/cache") / f"builtin_{d.scene}_{d.views}v_{d.size}px_{hashlib.sha1(key.encode()).hexdigest()[:8]}"


def detect_format(path: str | Path) -> str:
    """The layout of a dataset folder: "nerf" with transforms_train.json, "nerfstudio" with
    transforms.json, "colmap" with a sparse model in sparse/0/ or sparse/, "dvr" with image/ and a
    cameras.npz holding `camera_mat_0`, else "idr" (whose loader reports what is missing)."""
    path = Path(path)
    if (path / "transforms_train.json").is_file():
        return "nerf"
    if is_nerfstudio_folder(path):
        return "nerfstudio"
    if is_colmap_folder(path):
        return "colmap"
    return "dvr" if is_dvr_folder(path) else "idr"


def nerf_train_splits(value: str) -> list[str]:
    return [part.strip() for part in str(value).split(",") if part.strip()]


def read_splits_file(path: Path, n: int) -> dict[str, list[int]]:
    """`{"train": [...], "test": [...]}` from a `splits.json` of a folder with `n` views: "test" is
    required, "train" defaults to the other views. Indices must be ints in [0, n), each listed once,
    and no view may be in both; anything else is a ValueError naming the file and the key."""
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: malformed JSON ({exc})") from None
    if not isinstance(raw, dict) or "test" not in raw:
        raise ValueError(f'{path}: expected an object with a "test" list of view indices, e.g. {{"test": [3, 11]}}')
    out = {}
    for key in ("train", "test"):
        if key not in raw:
            continue
        idx = raw[key]
        if not isinstance(idx, list) or any(isinstance(i, bool) or not isinstance(i, int) for i in idx):
            raise ValueError(f"{path}: '{key}' must be a list of integer view indices, got {json.dumps(idx)[:80]}")
        bad = [i for i in idx if not 0 <= i < n]
        if bad:
            raise ValueError(f"{path}: '{key}' has indices {bad[:5]} outside [0, {n}) (the folder has {n} views)")
        dup = sorted({i for i in idx if idx.count(i) > 1})
        if dup:
            raise ValueError(f"{path}: '{key}' lists views {dup[:5]} more than once")
        out[key] = list(idx)
    if "train" not in out:
        out["train"] = [i for i in range(n) if i not in set(out["test"])]
    both = sorted(set(out["train"]) & set(out["test"]))
    if both:
        raise ValueError(f"{path}: views {both[:5]} are in both 'train' and 'test'")
    return out


def describe_views(ds: MultiViewDataset, fmt: str, how: str) -> str:
    """One line saying which views train and which are held out."""
    return (
        f"data: {ds.source} ({fmt}, {len(ds)} views of {ds.width}x{ds.height}): "
        f"{len(ds.splits['train'])} train, {len(ds.splits['test'])} test ({how})"
    )


def load_multiview(d: MultiViewDataConfig, log: Callable[[str], None] | None = print) -> MultiViewDataset:
    """The configured dataset; the built-in one is rendered once and cached under outputs/cache/.

    Splits: NeRF folders train on `d.nerf_train` and hold out `transforms_test.json` (else every
    `test_every`-th training view); IDR/DVR/COLMAP/nerfstudio folders use their `splits.json` when present, else
    every `test_every`-th view from `test_offset`. `log` gets one line saying which views were used.
    """
    if d.data is None:
        from taichi_sdf.data.builtin import render_scene_dataset, write_dataset

        folder = builtin_folder(d)
        if not (folder / "cameras.npz").is_file():
            ds = render_scene_dataset(d.scene, d.views, d.size, test_every=d.test_every, test_offset=d.test_offset)
            write_dataset(ds, folder, "idr", d.scene)
        path, fmt = folder, "idr"
    else:
        path = Path(d.data)
        fmt = d.format if d.format != "auto" else detect_format(path)
    if fmt == "nerf":
        parts = nerf_train_splits(d.nerf_train)
        ds = load_nerf(path, splits=(*parts, "test"))
        missing = [part for part in parts if part not in ds.splits]
        if missing:
            raise ValueError(f"data.nerf_train: {path / f'transforms_{missing[0]}.json'} not found")
        train = [i for part in parts for i in ds.splits[part]]
        if "test" in ds.splits:
            test, how = ds.splits["test"], f"{'+'.join(f'transforms_{p}.json' for p in parts)} / transforms_test.json"
        else:
            test = train[d.test_offset :: d.test_every]
            how = f"no transforms_test.json: every {d.test_every}th training view from {d.test_offset} held out"
        ds.splits = {"train": [i for i in train if i not in set(test)], "test": list(test)}
    elif fmt in ("idr", "dvr", "colmap", "nerfstudio"):
        loaders = {"idr": load_idr, "dvr": load_dvr, "colmap": load_colmap, "nerfstudio": load_nerfstudio}
        ds = loaders[fmt](path)
        splits_file = path / "splits.json"
        if splits_file.is_file():
            ds.splits, how = read_splits_file(splits_file, len(ds)), str(splits_file)
        else:
            test = list(range(d.test_offset, len(ds), d.test_every))
            ds.splits = {"train": [i for i in range(len(ds)) if i not in test], "test": test}
            how = f"every {d.test_every}th view from {d.test_offset} held out"
    else:
        raise ValueError(f"data.format: expected auto, idr, nerf, dvr, colmap or nerfstudio, got {fmt!r}")
    if not ds.splits["train"]:
        raise ValueError(f"data: no training views in {path} ({how}); hold out fewer views")
    if log is not None:
        log(describe_views(ds, fmt, how))
    return ds


def default_ground_truth(d: MultiViewDataConfig, gt: str | None = None, gt_frame: str = "world") -> tuple[str | None, str]:
    """(path, frame) of the ground truth: `gt` when given, else the built-in dataset's or a
    `gt_points.npy` in the data folder (world units)."""
    if gt is not None:
        return gt, gt_frame
    if d.data is None:
        return str(builtin_folder(d) / "gt_points.npy"), "world"
    guess = Path(d.data) / "gt_points.npy"
    return (str(guess), "world") if guess.is_file() else (None, "world")
