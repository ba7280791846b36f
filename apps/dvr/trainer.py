"""DVR multi-view training (per scene, no encoder), evaluation and export on taichi-sdf's occupancy
ray marcher, MISE meshing and the shared multi-view data loaders."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from taichi_sdf.data.multiview.source import detect_format
from taichi_sdf.geometry.meshing import save_mesh
from taichi_sdf.geometry.mise import mise_extract
from taichi_sdf.implicit.marchers.dvr import DVRMarcher
from taichi_sdf.models.dvr import build_dvr_networks
from taichi_sdf.train import distributed as tdist
from taichi_sdf.train.checkpoint import atomic_write_bytes
from taichi_sdf.train.multiview import EpochSchedule, MultiViewExport
from taichi_sdf.train.trainer import Trainer, is_main_process

from .config import DVRConfig
from .system import LOSS_TERMS, DVRSystem, frame_scale


class DVRTrainer(EpochSchedule, MultiViewExport, Trainer):
    """Construct, `step()` repeatedly (or `train()`), then `export()`; checkpoints resume exactly.
    The loss is `self.system(batch)` (a `DVRSystem`)."""

    name = "dvr"
    keep_last = 3

    def __init__(self, cfg: DVRConfig, mode: str = "new") -> None:
        self.info = self.start_runtime(cfg)  # torchrun job, Taichi, torch threads
        super().__init__(cfg, cfg.out, cfg.seed, mode)
        self.device = self.info.device
        self.load_views(cfg.data)
        p = cfg.train.patch_size
        if min(self.data.height, self.data.width) < p:
            raise ValueError(f"train.patch_size: expected at most the image size {self.data.width}x{self.data.height}, got {p}")
        decoder, _ = build_dvr_networks(cfg.model)
        m, t = cfg.marcher, cfg.train
        marcher = DVRMarcher(n_steps=m.init_steps, n_secant_steps=m.n_secant_steps, method=m.method,
                             depth_range=tuple(m.depth_range), coarse_stride=m.coarse_stride,
                             refine_margin=m.refine_margin)  # fmt: skip
        fmt = "idr" if cfg.data.data is None else cfg.data.format if cfg.data.format != "auto" else detect_format(cfg.data.data)
        self.system = DVRSystem(decoder, marcher, frame_scale=frame_scale(fmt), patch_size=p, rgb_weight=t.rgb_weight,
                                image_gradient_weight=t.image_gradient_weight, normal_weight=t.normal_weight,
                                freespace_weight=t.freespace_weight, occupied_weight=t.occupied_weight,
                                always_freespace=t.always_freespace).to(self.device)  # fmt: skip
        self.decoder = self.system.decoder
        self.model = self.wrap_ddp(self.system)
        self.my_share(t.pixels // (p * p), "train.pixels")  # every rank needs a patch
        self.optimizer = torch.optim.Adam(self.decoder.parameters(), lr=t.lr)
        self.log_every = max(1, t.log_every)
        self.samples_per_step = t.pixels
        self.keep_every = 10 * self.checkpoint_interval
        self.start(mode)

    # -- schedule (epochs, checkpoints and lr milestones: EpochSchedule) ---------------------------

    def n_steps(self, iteration: int | None = None) -> int:
        """Proposals per ray at `iteration` (DVR's schedule: init_steps, doubled at each milestone)."""
        it = self.iteration if iteration is None else iteration
        m = self.cfg.marcher
        return m.init_steps * 2 ** sum(it >= s for s in m.step_milestones)

    # -- one iteration -----------------------------------------------------------------------------

    def sample_batch(self) -> tuple[int, torch.Tensor, torch.Tensor]:
        """A training view and `pixels` pixel (rows, cols), as patch_size^2 consecutive pixels per patch
        (DVR `sample_patch_points`: patch corners uniform over the image)."""
        ids = self.train_ids
        i = ids[int(torch.randint(len(ids), (1,), generator=self.gen))]
        H, W, p = self.data.height, self.data.width, self.cfg.train.patch_size
        n_patches = self.cfg.train.pixels // (p * p)
        r0 = torch.randint(H - p + 1, (n_patches, 1), generator=self.gen)
        c0 = torch.randint(W - p + 1, (n_patches, 1), generator=self.gen)
        dr, dc = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
        rows = (r0 + dr.reshape(1, -1)).reshape(-1).to(self.device)
        cols = (c0 + dc.reshape(1, -1)).reshape(-1).to(self.device)
        return i, rows, cols

    def make_batch(self, i: int, rows: torch.Tensor, cols: torch.Tensor) -> dict:
        n = rows.shape[0]
        u = torch.rand(n, 5, generator=self.gen).to(self.device)
        return {"camera": self.cams[i], "uv": torch.stack([cols, rows], -1).float() + 0.5,
                "rgb": self.images[i, rows, cols], "mask": self.masks[i, rows, cols], "n_steps": self.n_steps(),
                "u_free": u[:, 0], "u_occ": u[:, 1], "u_neighbour": u[:, 2:].contiguous()}  # fmt: skip

    def share_batch(self, batch: dict) -> dict:
        """This rank's contiguous share of the batch's patches (all of it in one process)."""
        if not self.dist.distributed:
            return batch
        p2 = self.cfg.train.patch_size**2
        mine = self.my_share(batch["uv"].shape[0] // p2, "train.pixels")
        rows = slice(mine.start * p2, mine.stop * p2)
        return batch | {k: batch[k][rows] for k in ("uv", "rgb", "mask", "u_free", "u_occ", "u_neighbour")}

    def train_step(self) -> dict[str, float]:
        """One optimiser step. Under torchrun every rank draws the same global batch and marches its share
        of the patches; DVR's losses are sums over the rays, so a share's losses are shares of the batch's
        and x ranks makes DDP's average the single-process gradient."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.cfg.train.lr * self.lr_scale()
        i, rows, cols = self.sample_batch()
        batch = self.share_batch(self.make_batch(i, rows, cols))
        with tdist.peer_failures("the gradient all-reduce"):
            terms = self.model(batch)
            self.optimizer.zero_grad(set_to_none=True)
            (terms["loss"] * self.dist.world_size if self.dist.distributed else terms["loss"]).backward()
        row = {k: float(v.detach()) if isinstance(v, torch.Tensor) else float(v) for k, v in terms.items()}
        row = self.reduce_row(row, sums=("loss", "evals", *LOSS_TERMS))  # psnr, hit_fraction, mask_accuracy: mean of the ranks
        self.check_loss(row)  # the reduced loss: every rank raises, before the step
        self.optimizer.step()
        return row

    def postfix(self, row: dict) -> dict:
        return {"loss": f"{row['loss']:.3f}", "psnr": f"{row['psnr']:.1f}", "mask": f"{row['mask_accuracy']:.3f}",
                "steps": self.n_steps(), "epoch": self.epoch, "rays": self.throughput()}  # fmt: skip

    # -- checkpoints -------------------------------------------------------------------------------

    def state(self) -> dict:
        return {"decoder": self.decoder.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state(self, s: dict) -> None:
        self.decoder.load_state_dict(s["decoder"])
        self.optimizer.load_state_dict(s["optimizer"])

    # -- evaluation and export ---------------------------------------------------------------------

    render_chunk = 8192

    def render_rays(self, o: torch.Tensor, d: torch.Tensor) -> dict[str, torch.Tensor]:
        """Marched with `marcher.render_steps` proposals (DVR renders with 1024)."""
        return self.system.render_rays(o * self.system.frame_scale, d, self.cfg.marcher.render_steps)

    def evaluate_views(self, ids: list[int], write_dir: Path | None = None, progress: bool = False) -> dict[str, float]:
        return super().evaluate_views(ids, write_dir, progress) | {"render_steps": self.cfg.marcher.render_steps}

    def mesh(self, progress: bool = False):
        """MISE mesh of the occupancy field with vertex colours, in world units (DVR frame -> normalised
        frame -> world via the dataset's scale_mat)."""
        m = self.cfg.mesh
        self.decoder.eval()
        res = mise_extract(self.system.field, resolution_0=m.resolution_0, upsampling_steps=m.upsampling_steps,
                           threshold=m.threshold, refinement_steps=m.refinement_steps, color_fn=self.system.colors,
                           seed=self.cfg.seed)  # fmt: skip
        self.decoder.train()
        mesh = res.mesh
        T = self.data.scale_mat.numpy() @ np.diag([1 / self.system.frame_scale] * 3 + [1.0])
        mesh.apply_transform(T)
        return mesh, res.num_queries

    def export(self, progress: bool = True) -> dict:
        """Write renders of held-out views, a turntable, mesh.ply and metrics.json to `out`."""
        out = self.out
        t0 = time.time()
        test_ids = self.data.splits.get("test", [])
        metrics: dict = {"iterations": self.iteration, "epochs": self.epoch, "n_steps": self.n_steps()}
        with self.locked():
            if test_ids:
                with self.phase(f"rendering {len(test_ids)} held-out views"):
                    metrics["test"] = self.evaluate_views(test_ids, out / "renders", progress)
            m = self.cfg.mesh
            with self.phase(f"MISE meshing ({m.resolution_0}^3 x 2^{m.upsampling_steps})"):
                mesh, queries = self.mesh(progress)
                if is_main_process():
                    save_mesh(mesh, out / "mesh.ply")
            metrics["mesh_faces"] = int(len(mesh.faces))
            metrics["mise_queries"] = int(queries)
            metrics |= self.geometry_metrics(mesh)
            with self.phase(f"turntable of {self.cfg.turntable_frames} frames"):
                self.turntable(out / "turntable.gif", progress)
            metrics["export_seconds"] = time.time() - t0
            if is_main_process():
                atomic_write_bytes(out / "metrics.json", json.dumps(metrics, indent=2, default=float).encode())
        return metrics
