"""What the trainers of multi-view reconstruction apps (IDR, DVR, DIB-R) share: loading the dataset onto
the device, and at export time rendering a camera in chunks, held-out view metrics and pictures, and a
turntable."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from taichi_sdf.cameras import camera as C
from taichi_sdf.data.image_io import to_uint8, write_image

from .metrics import evaluate_mesh, load_geometry, mask_iou, psnr
from .trainer import is_main_process


class MultiViewExport:
    """Mixin for a `Trainer` of a multi-view app. The trainer provides `render_rays(o, d)` (rays
    `[N, 3]` of the dataset's normalised frame -> {"rgb" `[N, 3]` in [0, 1], black where missed,
    "normals" `[N, 3]` unit, outward, "hit" `[N]` bool}, no grad), and the attributes `data`
    (`MultiViewDataset`), `images` `[N, H, W, 3]`, `masks` `[N, H, W]` and `cams` on the device, `device`,
    `name`, and `cfg.render_size` / `cfg.turntable_frames`."""

    render_chunk = 4096  # rays per `render_rays` call

    def load_views(self, data_cfg) -> None:
        """Read the `data` section's dataset (`MultiViewDataConfig`) into `data`, `train_ids`, and
        `images`, `masks`, `cams` (float32) on `self.device`; no training view is a named error."""
        from taichi_sdf.data.multiview.source import load_multiview

        self.data = load_multiview(data_cfg)
        self.train_ids = self.data.splits["train"]
        if not self.train_ids:
            raise ValueError("data: no training views (all held out?)")
        self.images = self.data.images.to(self.device)
        self.masks = self.data.masks.to(self.device)
        self.cams = self.data.cameras.to(self.device, torch.float32)

    def render_rays(self, o: torch.Tensor, d: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def view_camera(self, i: int) -> C.Camera:
        """The camera used to render view `i` (a trainer that refines poses returns the refined one)."""
        return self.cams[i]

    @torch.no_grad()
    def render(self, cam: C.Camera) -> dict[str, torch.Tensor]:
        """RGB `[H, W, 3]` in [0, 1] (black background), normal map `[H, W, 3]`, hit mask `[H, W]` of one camera."""
        o, d = cam.image_rays()
        o, d = o.reshape(-1, 3), d.reshape(-1, 3)
        rgb = torch.zeros_like(o)
        normals = torch.zeros_like(o)
        hit = torch.zeros(o.shape[0], dtype=torch.bool, device=o.device)
        chunk = self.render_chunk
        for s in range(0, o.shape[0], chunk):
            r = self.render_rays(o[s : s + chunk].contiguous(), d[s : s + chunk].contiguous())
            rgb[s : s + chunk], normals[s : s + chunk], hit[s : s + chunk] = r["rgb"], r["normals"], r["hit"]
        H, W = cam.height, cam.width
        return {"rgb": rgb.reshape(H, W, 3), "normals": torch.where(hit[:, None], 0.5 + 0.5 * normals, 0.0).reshape(H, W, 3),
                "hit": hit.reshape(H, W)}  # fmt: skip

    def live_render(self, cam: C.Camera) -> dict[str, torch.Tensor]:
        """The live browser view's images of one camera (`taichi_sdf.train.live`): "color" (the model's
        RGB) and "normals", `[H, W, 3]` in [0, 1]."""
        r = self.render(cam.to(self.device, torch.float32))
        return {"color": r["rgb"], "normals": r["normals"]}

    def evaluate_views(self, ids: list[int], write_dir: Path | None = None, progress: bool = False) -> dict[str, float]:
        """Masked PSNR and mask IoU of the views `ids` (means); with `write_dir`, `<name>_{rgb,normals,gt}.png`."""
        from tqdm import tqdm

        psnrs, ious = [], []
        bar = tqdm(
            ids, desc=f"{self.name}: held-out views", unit="view", disable=not (progress and is_main_process()), leave=False
        )
        for i in bar:
            r = self.render(self.view_camera(i))
            gt_mask = self.masks[i]
            psnrs.append(psnr(r["rgb"].cpu(), self.images[i].cpu(), gt_mask.cpu()) if gt_mask.any() else float("nan"))
            ious.append(mask_iou(r["hit"].cpu(), gt_mask.cpu()))
            if write_dir is not None and is_main_process():
                write_image(write_dir / f"{self.data.names[i]}_rgb.png", r["rgb"])
                write_image(write_dir / f"{self.data.names[i]}_normals.png", r["normals"])
                write_image(write_dir / f"{self.data.names[i]}_gt.png", self.images[i])
        return {"psnr_masked": float(np.nanmean(psnrs)), "mask_iou": float(np.mean(ious)), "views": len(ids)}

    def geometry_metrics(self, mesh) -> dict:
        """{"geometry": Chamfer-L1 / normal consistency / F-score of `mesh` (world units) in the dataset's
        normalised frame, "gt": path} against the configured ground truth (`cfg.data`, `cfg.gt`,
        `cfg.gt_frame`, `cfg.fscore_threshold`); {} when there is none or the mesh is empty."""
        from taichi_sdf.data.multiview.source import default_ground_truth

        gt, frame = default_ground_truth(self.cfg.data, self.cfg.gt, self.cfg.gt_frame)
        if gt is None or not Path(gt).is_file() or len(mesh.faces) == 0:
            return {}
        with self.phase("geometry metrics"):
            S_inv = np.linalg.inv(self.data.scale_mat.numpy())
            pred_n = mesh.copy()
            pred_n.apply_transform(S_inv)  # metrics in the normalised frame
            gt_geom = load_geometry(gt, None if frame == "normalized" else S_inv)
            geometry = evaluate_mesh(pred_n, gt_geom, thresholds=(self.cfg.fscore_threshold,))
        return {"geometry": geometry | {"frame": "normalized (unit sphere)"}, "gt": gt}

    def turntable(self, path: Path, progress: bool = False) -> None:
        """A GIF of `cfg.turntable_frames` views orbiting at the cameras' mean distance, 20 degrees up."""
        import imageio.v3 as iio
        from tqdm import tqdm

        size = self.cfg.render_size or self.data.width
        fov = math.degrees(2 * math.atan(0.5 * self.data.width / float(self.cams.K[0, 0, 0])))
        dist = float(self.cams.centers.norm(dim=-1).mean())
        orbit = C.orbit_cameras(self.cfg.turntable_frames, dist, 20.0, size, size, fov).to(self.device, torch.float32)
        bar = tqdm(
            range(len(orbit)),
            desc=f"{self.name}: turntable",
            unit="frame",
            disable=not (progress and is_main_process()),
            leave=False,
        )
        frames = [to_uint8(self.render(orbit[k])["rgb"]) for k in bar]
        if is_main_process():
            path.parent.mkdir(parents=True, exist_ok=True)
            iio.imwrite(path, np.stack(frames), duration=80, loop=0)


class EpochSchedule:
    """Mixin for a `Trainer` of a multi-view app that trains on one image per iteration: an epoch is
    one pass over `train_ids`, and `cfg.train.epochs`, `checkpoint_every` and `lr_milestones` count
    epochs (IDR's and DVR's convention); the learning rate is scaled by `lr_factor` at each milestone."""

    @property
    def epoch(self) -> int:
        return self.iteration // len(self.train_ids)

    @property
    def total_iterations(self) -> int:
        return self.cfg.train.epochs * len(self.train_ids)

    @property
    def checkpoint_interval(self) -> int:
        return max(1, self.cfg.train.checkpoint_every * len(self.train_ids))

    def checkpoint_due(self) -> bool:
        return self.iteration % self.checkpoint_interval == 0

    def lr_scale(self) -> float:
        t = self.cfg.train
        return t.lr_factor ** sum(self.epoch >= m for m in t.lr_milestones)
