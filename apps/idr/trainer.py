"""IDR training, evaluation and export on taichi-sdf's wavefront sphere tracer."""

from __future__ import annotations

import json
import time

import torch

from taichi_sdf.cameras import camera as C
from taichi_sdf.geometry.meshing import extract_mesh, save_mesh
from taichi_sdf.implicit.marchers.idr import IDRMarcher
from taichi_sdf.models.idr import build_idr_networks
from taichi_sdf.train import distributed as tdist
from taichi_sdf.train.checkpoint import atomic_write_bytes
from taichi_sdf.train.multiview import EpochSchedule, MultiViewExport
from taichi_sdf.train.pixel_sampling import draw_pixels, object_pixel_lists
from taichi_sdf.train.trainer import Trainer, is_main_process

from .config import IDRConfig
from .system import IDRSystem


class IDRTrainer(EpochSchedule, MultiViewExport, Trainer):
    """Construct, `step()` repeatedly (or `train()`), then `export()`; checkpoints resume exactly.
    The loss is `self.system(batch)` (an `IDRSystem`), never the networks' methods."""

    name = "idr"
    keep_last = 3  # numbered checkpoints (ckpt_<iteration>.pt) kept besides latest.pt

    def __init__(self, cfg: IDRConfig, resume: bool = False, mode: str | None = None) -> None:
        mode = mode or ("resume" if resume else "new")
        self.info = self.start_runtime(cfg)  # torchrun job, Taichi, torch threads
        super().__init__(cfg, cfg.out, cfg.seed, mode)
        self.device = self.info.device
        self.load_views(cfg.data)
        self.object_pixels = object_pixel_lists(self.masks, cfg.train.object_margin) if cfg.train.object_fraction > 0 else None
        implicit, rendering = build_idr_networks(cfg.model)
        tracer = IDRMarcher(eps=cfg.tracer.eps, sphere_tracing_iters=cfg.tracer.sphere_tracing_iters,
                           line_step_iters=cfg.tracer.line_step_iters, n_steps=cfg.tracer.n_steps,
                           n_secant_steps=cfg.tracer.n_secant_steps, min_sdf_samples=cfg.tracer.min_sdf_samples)  # fmt: skip
        t = cfg.train
        self.system = IDRSystem(implicit, rendering, tracer, len(self.data), t.train_cameras, t.rgb_weight,
                                t.eikonal_weight, t.mask_weight).to(self.device)  # fmt: skip
        self.implicit, self.rendering, self.poses = self.system.implicit, self.system.rendering, self.system.poses
        # A rank whose rays hit no surface inside the mask leaves the rendering network without a gradient.
        self.model = self.wrap_ddp(self.system, find_unused_parameters=True)
        self.my_share(t.pixels, "train.pixels")  # every rank needs a pixel
        params = list(self.implicit.parameters()) + list(self.rendering.parameters())
        self.optimizer = torch.optim.Adam(params, lr=t.lr)
        self.pose_optimizer = torch.optim.Adam(self.poses.parameters(), lr=t.camera_lr) if self.poses else None
        self.tracer = tracer
        self.log_every = max(1, t.log_every)
        self.samples_per_step = t.pixels  # rays per iteration
        self.keep_every = 10 * self.checkpoint_interval  # and every 10th checkpoint
        self.start(mode)

    # -- schedule (epochs, checkpoints and lr milestones: EpochSchedule) ---------------------------

    def alpha(self, epoch: int | None = None) -> float:
        e = self.epoch if epoch is None else epoch
        t = self.cfg.train
        return t.alpha * t.alpha_factor ** sum(e >= m for m in t.alpha_milestones)

    # -- one iteration -----------------------------------------------------------------------------

    def camera(self, i: int) -> C.Camera:
        return self.system.camera(self.cams[i], i)

    def sample_batch(self):
        ids = self.train_ids
        i = ids[int(torch.randint(len(ids), (1,), generator=self.gen))]
        H, W = self.data.height, self.data.width
        t = self.cfg.train
        near = None if self.object_pixels is None else self.object_pixels[i]
        flat = draw_pixels(H * W, t.pixels, near, t.object_fraction, self.gen).to(self.device)
        rows, cols = flat // W, flat % W
        return i, rows, cols

    def make_batch(self, i: int, rows: torch.Tensor, cols: torch.Tensor) -> dict:
        """The system's input for view `i` and pixels (rows, cols); draws the eikonal points."""
        eik = torch.rand(self.cfg.train.eikonal_points, 3, generator=self.gen).to(self.device) * 2 - 1
        return {"view": i, "camera": self.cams[i], "uv": torch.stack([cols, rows], -1).float() + 0.5,
                "rgb": self.images[i, rows, cols] * 2 - 1,  # IDR works in [-1, 1]
                "mask": self.masks[i, rows, cols], "eikonal_points": eik, "alpha": self.alpha()}  # fmt: skip

    def losses(self, i: int, rows: torch.Tensor, cols: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.system(self.make_batch(i, rows, cols))

    def share_batch(self, batch: dict) -> dict:
        """This rank's share of the global batch (all of it in one process): a contiguous share of the
        pixels and of the eikonal points, with the global counts the losses divide by."""
        if not self.dist.distributed:
            return batch
        n, m = batch["uv"].shape[0], batch["eikonal_points"].shape[0]
        px = self.my_share(n, "train.pixels")
        ek = tdist.shard_indices(m, self.dist.rank, self.dist.world_size)
        mine = {k: batch[k][px.start : px.stop] for k in ("uv", "rgb", "mask")}
        return batch | mine | {"eikonal_points": batch["eikonal_points"][ek.start : ek.stop], "num_rays": n, "num_eikonal": n + m}

    def train_step(self) -> dict[str, float]:
        """One optimiser step (the base's `step()` counts it). Under torchrun every rank draws the same
        global batch and traces its share of the pixels; its losses are divided by the global counts,
        so they are shares of the batch's and x ranks makes DDP's average the single-process gradient."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.cfg.train.lr * self.lr_scale()
        i, rows, cols = self.sample_batch()
        batch = self.share_batch(self.make_batch(i, rows, cols))
        with tdist.peer_failures("the gradient all-reduce"):
            terms = self.model(batch)
            self.optimizer.zero_grad(set_to_none=True)
            if self.pose_optimizer:
                self.pose_optimizer.zero_grad(set_to_none=True)
            (terms["loss"] * self.dist.world_size if self.dist.distributed else terms["loss"]).backward()
        row = {k: float(v.detach()) if isinstance(v, torch.Tensor) else float(v) for k, v in terms.items()}
        row = self.reduce_row(row, sums=("loss", "rgb", "eikonal", "mask", "evals"))  # psnr, hit_fraction: mean of the ranks
        self.check_loss(row)  # the reduced loss: every rank raises, before the step
        self.optimizer.step()
        if self.pose_optimizer:
            self.pose_optimizer.step()
        return row

    def postfix(self, row: dict) -> dict:
        return {"loss": f"{row['loss']:.4f}", "psnr": f"{row['psnr']:.1f}", "epoch": self.epoch, "alpha": self.alpha(),
                "rays": self.throughput()}  # fmt: skip

    # -- checkpoints -------------------------------------------------------------------------------

    def state(self) -> dict:
        return {
            "implicit": self.implicit.state_dict(),
            "rendering": self.rendering.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "poses": self.poses.state_dict() if self.poses else None,
            "pose_optimizer": self.pose_optimizer.state_dict() if self.pose_optimizer else None,
        }

    def load_state(self, s: dict) -> None:
        self.implicit.load_state_dict(s["implicit"])
        self.rendering.load_state_dict(s["rendering"])
        self.optimizer.load_state_dict(s["optimizer"])
        if self.poses is not None and s.get("poses") is not None:
            self.poses.load_state_dict(s["poses"])
            self.pose_optimizer.load_state_dict(s["pose_optimizer"])

    # -- evaluation and export ---------------------------------------------------------------------

    def render_rays(self, o: torch.Tensor, d: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.system.render_rays(o, d)

    def view_camera(self, i: int) -> C.Camera:
        return self.camera(i)  # refined when train_cameras

    def mesh(self, resolution: int | None = None, progress: bool = False):
        """Marching cubes of the SDF, largest component, in world units (via the dataset's scale_mat)."""
        res = resolution or self.cfg.mesh_resolution
        self.implicit.eval()
        return extract_mesh(self.implicit.sdf, resolution=res, bound=((-1, -1, -1), (1, 1, 1)), device=self.device,
                            largest_component=True, T_world_field=self.data.scale_mat.numpy(),
                            narrow_band=self.cfg.mesh_narrow_band or None,
                            progress=progress and is_main_process())  # fmt: skip

    def export(self, progress: bool = True) -> dict:
        """Write renders of held-out views, a turntable, mesh.ply and metrics.json to `out`; each phase
        reports itself (a line before and after, a bar inside)."""
        out = self.out
        t0 = time.time()
        test_ids = self.data.splits.get("test", [])
        metrics: dict = {"iterations": self.iteration, "epochs": self.epoch}
        with self.locked():
            if test_ids:
                with self.phase(f"rendering {len(test_ids)} held-out views"):
                    metrics["test"] = self.evaluate_views(test_ids, out / "renders", progress)
            with self.phase(f"meshing at {self.cfg.mesh_resolution}^3"):
                mesh = self.mesh(progress=progress)
                if is_main_process():
                    save_mesh(mesh, out / "mesh.ply")
            metrics["mesh_faces"] = int(len(mesh.faces))
            metrics |= self.geometry_metrics(mesh)
            with self.phase(f"turntable of {self.cfg.turntable_frames} frames"):
                self.turntable(out / "turntable.gif", progress)
            metrics["export_seconds"] = time.time() - t0
            if is_main_process():
                atomic_write_bytes(out / "metrics.json", json.dumps(metrics, indent=2, default=float).encode())
        return metrics
