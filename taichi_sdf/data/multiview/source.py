"""Multi-view data for the reconstruction apps: a config section naming a dataset folder (IDR/DTU,
NeRF or DVR layout) or a built-in scene, its loader with the train/test split, and its ground truth."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from taichi_sdf.data.multiview.base import MultiViewDataset
from taichi_sdf.data.multiview.dvr import is_dvr_folder, load_dvr
from taichi_sdf.data.multiview.idr import load_idr
from taichi_sdf.data.multiview.nerf import load_nerf
from taichi_sdf.train.config import check


@dataclass
class MultiViewDataConfig:
    """Where a multi-view app's images, masks and cameras come from (the `data` section of its config)."""

    data: str | None = None  # IDR/DTU scan, NeRF or DVR folder; None = the built-in dataset
    format: Literal["auto", "idr", "nerf", "dvr"] = "auto"  # auto: see detect_format
    scene: str = "csg"  # built-in scene when data is None
    views: int = 48  # built-in dataset size
    size: int = 64  # built-in image width = height
    test_every: int = 8  # views 3, 11, 19, ... are held out (as in ../shared/data/spot)
    test_offset: int = 3

    def __post_init__(self) -> None:
        for key in ("views", "size", "test_every"):
            check(getattr(self, key) >= 1, key, ">= 1", getattr(self, key))
        check(self.test_offset >= 0, "test_offset", ">= 0", self.test_offset)
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
    """The layout of a dataset folder: "nerf" with transforms_train.json, "dvr" with image/ and a
    cameras.npz holding `camera_mat_0`, else "idr" (whose loader reports what is missing)."""
    path = Path(path)
    if (path / "transforms_train.json").is_file():
        return "nerf"
    return "dvr" if is_dvr_folder(path) else "idr"


def load_multiview(d: MultiViewDataConfig) -> MultiViewDataset:
    """The configured dataset; the built-in one is rendered once and cached under outputs/cache/."""
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
        ds = load_nerf(path)
        if "test" not in ds.splits:
            ds.splits["test"] = list(range(d.test_offset, len(ds), d.test_every))
        ds.splits["train"] = [i for i in range(len(ds)) if i not in ds.splits["test"]]
        return ds
    if fmt not in ("idr", "dvr"):
        raise ValueError(f"data.format: expected auto, idr, nerf or dvr, got {fmt!r}")
    ds = load_idr(path) if fmt == "idr" else load_dvr(path)
    splits_file = path / "splits.json"
    test = (
        json.loads(splits_file.read_text())["test"]
        if splits_file.is_file()
        else list(range(d.test_offset, len(ds), d.test_every))
    )
    ds.splits = {"train": [i for i in range(len(ds)) if i not in test], "test": test}
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
