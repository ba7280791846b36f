"""What every DIST mode shares: the run folder (resumable per shape, refusing mixed settings), the
losses of one observed view, initial codes, and picture writing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch

from taichi_sdf.data.image_io import write_image
from taichi_sdf.train import losses
from taichi_sdf.train.checkpoint import atomic_write_bytes
from taichi_sdf.train.config import config_to_dict
from taichi_sdf.train.trainer import UserError
from taichi_sdf.viz import depth_map, normal_map

from .data import Observations
from .render import SDFImage


def view_losses(
    img: SDFImage,
    obs: Observations,
    w: losses.DISTLossWeights,
    eps: float,
    inputs=("depth", "normal", "silhouette"),
    R: torch.Tensor | None = None,  # [3, 3]
) -> dict[str, torch.Tensor]:
    """DIST's single-view terms of one rendered view against observation view 0 of `obs` (weighted by
    `w`, whose `latent` weight is the caller's;
    a term whose input is not in `inputs` or whose weight is 0 is left out). Normals are compared in
    the camera frame, as DIST does: the rendered ones rotated by `R [3, 3]` (the rendering camera's
    world-to-camera rotation, default the observation's), the observed ones by the observation's."""
    mask_gt = obs.mask[0]
    R_obs = obs.cameras.R[0].to(img.normal)
    R = R_obs if R is None else R
    out: dict[str, torch.Tensor] = {}
    if "depth" in inputs and w.depth:
        out["depth"] = w.depth * losses.dist_depth_l1(img.depth, img.mask, obs.depth[0], mask_gt)
    if "normal" in inputs and w.normal:
        n, n_gt = img.normal @ R.transpose(0, 1), obs.normal[0] @ R_obs.transpose(0, 1)
        out["normal"] = w.normal * losses.dist_normal_cos(n, img.mask, n_gt, mask_gt)
    if "silhouette" in inputs and (w.mask_gt or w.mask_out):
        m_gt, m_out = losses.dist_mask_losses(img.min_sdf, img.mask, mask_gt, eps)
        out["mask_gt"], out["mask_out"] = w.mask_gt * m_gt, w.mask_out * m_out
    return out


def initial_code(kind: str, std: float, size: int, fitted: torch.Tensor | None, mean: torch.Tensor, seed: int) -> torch.Tensor:
    """DIST's latent initialisations: "random" N(0, std^2), "perturbed" the code fitted to 3D samples
    + N(0, std^2) (`run_single_shape.py` without `--use_random_init`), "mean" the mean training code."""
    noise = torch.randn(size, generator=torch.Generator().manual_seed(seed)) * std
    if kind == "random":
        return noise.to(mean)
    if kind == "perturbed":
        if fitted is None:
            raise ValueError("init: 'perturbed' needs the shape's fitted code")
        return fitted.detach() + noise.to(fitted)
    return mean.detach().clone()


class RunFolder:
    """`<out>/<mode>[_<tag>]/`: run.json (the settings), shapes/<name>.json (one result per shape,
    written when the shape is done, so a rerun resumes), images/. Settings that differ from the
    folder's are refused unless `overwrite`."""

    def __init__(self, out: Path, mode: str, settings: dict, tag: str = "", overwrite: bool = False) -> None:
        if tag and not tag.replace("-", "").replace("_", "").isalnum():
            raise UserError(f"--tag: use letters, digits, '-' and '_' only, got {tag!r}")
        self.path = Path(out) / (mode + (f"_{tag}" if tag else ""))
        settings = json.loads(json.dumps(settings, default=str))
        run_json = self.path / "run.json"
        if run_json.is_file() and not overwrite:
            if json.loads(run_json.read_text()) != settings:
                raise UserError(f"{self.path} holds a run made with other settings; pass --overwrite to replace it, "
                                "or --tag NAME for a separate folder")  # fmt: skip
        elif overwrite and self.path.exists():
            shutil.rmtree(self.path)
        (self.path / "shapes").mkdir(parents=True, exist_ok=True)
        (self.path / "images").mkdir(exist_ok=True)
        atomic_write_bytes(run_json, json.dumps(settings, indent=1).encode())

    def done(self, name: str) -> dict | None:
        p = self.path / "shapes" / f"{name}.json"
        return json.loads(p.read_text()) if p.is_file() else None

    def save(self, name: str, row: dict) -> None:
        atomic_write_bytes(self.path / "shapes" / f"{name}.json", json.dumps(row, indent=1).encode())

    def write_json(self, name: str, data: dict) -> Path:
        p = self.path / name
        atomic_write_bytes(p, json.dumps(data, indent=1).encode())
        return p


def code_cache(cfg, model) -> Path:
    """Where the shapes' codes fitted to 3D samples are cached (per DeepSDF experiment and epoch)."""
    return Path(cfg.out) / "codes" / f"{model.experiment.name}_{model.epoch}"


def settings_of(cfg, *sections: str) -> dict:
    d = config_to_dict(cfg)
    return {k: d[k] for k in ("shapes", "views", "render", *sections, "eval", "seed")}


def depth_row(images: list[tuple[torch.Tensor, torch.Tensor]]) -> np.ndarray:
    """Depth maps `(depth [H, W], mask [H, W])` side by side with a shared range (the first's)."""
    d0, m0 = images[0]
    near = float(d0[m0].min()) if m0.any() else 0.0
    far = float(d0[m0].max()) if m0.any() else 1.0
    return np.concatenate([depth_map(d.detach().cpu(), m.cpu(), near, far).numpy() for d, m in images], 1)


def normal_row(images: list[tuple[torch.Tensor, torch.Tensor]]) -> np.ndarray:
    return np.concatenate([normal_map(n.detach().cpu(), m.cpu()).numpy() for n, m in images], 1)


def write_comparison(path: Path, rows: list[np.ndarray]) -> Path:
    """Rows of images (e.g. GT | initial | final) stacked into one PNG."""
    return write_image(path, np.concatenate(rows, 0))
