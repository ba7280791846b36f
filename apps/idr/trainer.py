"""IDR training, evaluation and export on taichi-sdf's wavefront sphere tracer."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import taichi_sdf
from taichi_sdf.cameras import camera as C
from taichi_sdf.cameras.pose import PoseRefinement
from taichi_sdf.data.image_io import to_uint8, write_image
from taichi_sdf.data.multiview import MultiViewDataset
from taichi_sdf.data.multiview.source import default_ground_truth, load_multiview
from taichi_sdf.geometry.meshing import extract_mesh, save_mesh
from taichi_sdf.implicit.wavefront import IDRTracer, sphere_trace_mlp
from taichi_sdf.models.idr import build_idr_networks
from taichi_sdf.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from taichi_sdf.train.config import config_to_dict, save_config
from taichi_sdf.train.metrics import evaluate_mesh, mask_iou, psnr

from .config import IDRConfig


def load_dataset(cfg: IDRConfig) -> MultiViewDataset:
    return load_multiview(cfg.data)


def default_gt(cfg: IDRConfig) -> tuple[str | None, str]:
    return default_ground_truth(cfg.data, cfg.gt, cfg.gt_frame)


class IDRTrainer:
    """Construct, `step()` repeatedly (or `train()`), then `export()`; checkpoints resume exactly."""

    def __init__(self, cfg: IDRConfig, resume: bool = False) -> None:
        self.cfg = cfg
        self.info = taichi_sdf.init(cfg.arch)
        taichi_sdf.core.runtime.set_torch_threads(cfg.torch_threads)
        self.device = self.info.device
        torch.manual_seed(cfg.seed)
        self.gen = torch.Generator().manual_seed(cfg.seed)  # all sampling goes through this: resumable
        self.data = load_dataset(cfg)
        self.train_ids = self.data.splits["train"]
        if not self.train_ids:
            raise ValueError("data: no training views (all held out?)")
        self.images = self.data.images.to(self.device)
        self.masks = self.data.masks.to(self.device)
        self.cams = self.data.cameras.to(self.device, torch.float32)
        self.implicit, self.rendering = (net.to(self.device) for net in build_idr_networks(cfg.model))
        params = list(self.implicit.parameters()) + list(self.rendering.parameters())
        self.optimizer = torch.optim.Adam(params, lr=cfg.train.lr)
        self.poses = PoseRefinement(len(self.data)).to(self.device) if cfg.train.train_cameras else None
        self.pose_optimizer = torch.optim.Adam(self.poses.parameters(), lr=cfg.train.camera_lr) if self.poses else None
        self.tracer = IDRTracer(eps=cfg.tracer.eps, sphere_tracing_iters=cfg.tracer.sphere_tracing_iters,
                                line_step_iters=cfg.tracer.line_step_iters, n_steps=cfg.tracer.n_steps,
                                n_secant_steps=cfg.tracer.n_secant_steps, min_sdf_samples=cfg.tracer.min_sdf_samples)  # fmt: skip
        self.iteration = 0
        self.out = Path(cfg.out)
        self.ckpt_dir = self.out / "checkpoints"
        if resume:
            self.resume()

    # -- schedule --------------------------------------------------------------------------------

    @property
    def epoch(self) -> int:
        return self.iteration // len(self.train_ids)

    @property
    def total_iterations(self) -> int:
        return self.cfg.train.epochs * len(self.train_ids)

    def alpha(self, epoch: int | None = None) -> float:
        e = self.epoch if epoch is None else epoch
        t = self.cfg.train
        return t.alpha * t.alpha_factor ** sum(e >= m for m in t.alpha_milestones)

    def lr_scale(self) -> float:
        t = self.cfg.train
        return t.lr_factor ** sum(self.epoch >= m for m in t.lr_milestones)

    # -- one iteration -----------------------------------------------------------------------------

    def camera(self, i: int) -> C.Camera:
        cam = self.cams[i]
        if self.poses is not None:
            cam = self.poses.refine(cam, torch.tensor([i], device=self.device))
        return cam

    def sample_batch(self):
        ids = self.train_ids
        i = ids[int(torch.randint(len(ids), (1,), generator=self.gen))]
        H, W = self.data.height, self.data.width
        flat = torch.randint(H * W, (self.cfg.train.pixels,), generator=self.gen).to(self.device)
        rows, cols = flat // W, flat % W
        return i, rows, cols

    def losses(self, i: int, rows: torch.Tensor, cols: torch.Tensor) -> dict[str, torch.Tensor]:
        cfg = self.cfg.train
        n = rows.shape[0]
        uv = torch.stack([cols, rows], -1).float() + 0.5
        o, d = self.camera(i).pixel_rays(uv[None].contiguous())
        o, d = o[0], d[0]
        gt_rgb = self.images[i, rows, cols] * 2 - 1  # IDR works in [-1, 1]
        gt_mask = self.masks[i, rows, cols]
        tr = sphere_trace_mlp(self.implicit.sdf, o, d, tracer=self.tracer, create_graph=True)
        surf = tr.hit & gt_mask
        rgb_loss = torch.zeros((), device=self.device)
        psnr_val = float("nan")
        if surf.any():
            pts = tr.points[surf]
            feat = self.implicit(pts)[:, 1:]
            rgb = self.rendering(pts, d[surf], tr.normals[surf], feat)
            rgb_loss = (rgb - gt_rgb[surf]).abs().sum() / n
            with torch.no_grad():
                mse = ((rgb - gt_rgb[surf]) / 2).square().mean()
                psnr_val = float(-10 * torch.log10(mse.clamp_min(1e-10)))
        out = ~surf
        alpha = self.alpha()
        mask_loss = F.binary_cross_entropy_with_logits(-alpha * tr.min_sdf[out], gt_mask[out].float(), reduction="sum") / (alpha * n)
        # Eikonal on uniform points of the bounding cube plus the (detached) ray points.
        eik_pts = torch.rand(cfg.eikonal_points, 3, generator=self.gen).to(self.device) * 2 - 1
        eik_pts = torch.cat([eik_pts, tr.points.detach()]).requires_grad_(True)
        g = torch.autograd.grad(self.implicit.sdf(eik_pts).sum(), eik_pts, create_graph=True)[0]
        eik_loss = (g.norm(dim=-1) - 1).square().mean()
        loss = cfg.rgb_weight * rgb_loss + cfg.eikonal_weight * eik_loss + cfg.mask_weight * mask_loss
        return {"loss": loss, "rgb": rgb_loss, "eikonal": eik_loss, "mask": mask_loss, "psnr": psnr_val,
                "hit_fraction": float(tr.hit.float().mean()), "evals": tr.num_evals}  # fmt: skip

    def step(self) -> dict[str, float]:
        for group in self.optimizer.param_groups:
            group["lr"] = self.cfg.train.lr * self.lr_scale()
        i, rows, cols = self.sample_batch()
        terms = self.losses(i, rows, cols)
        loss = terms["loss"]
        if not torch.isfinite(loss):
            raise FloatingPointError(f"iteration {self.iteration}: loss is {float(loss)}; last checkpoint kept in {self.ckpt_dir}")
        self.optimizer.zero_grad(set_to_none=True)
        if self.pose_optimizer:
            self.pose_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.pose_optimizer:
            self.pose_optimizer.step()
        self.iteration += 1
        return {k: float(v.detach()) if isinstance(v, torch.Tensor) else float(v) for k, v in terms.items()}

    # -- checkpoints -------------------------------------------------------------------------------

    def state(self) -> dict:
        return {
            "iteration": self.iteration,
            "implicit": self.implicit.state_dict(),
            "rendering": self.rendering.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "poses": self.poses.state_dict() if self.poses else None,
            "pose_optimizer": self.pose_optimizer.state_dict() if self.pose_optimizer else None,
            "generator": self.gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "config": config_to_dict(self.cfg),
        }

    def save(self) -> Path:
        path = self.ckpt_dir / f"ckpt_{self.iteration:08d}.pt"
        save_checkpoint(path, self.state())
        save_checkpoint(self.ckpt_dir / "latest.pt", self.state())
        return path

    def resume(self, path: str | Path | None = None) -> bool:
        path = path or (self.ckpt_dir / "latest.pt" if (self.ckpt_dir / "latest.pt").is_file() else latest_checkpoint(self.ckpt_dir))
        if path is None:
            return False
        s = load_checkpoint(path, map_location=self.device)
        self.implicit.load_state_dict(s["implicit"])
        self.rendering.load_state_dict(s["rendering"])
        self.optimizer.load_state_dict(s["optimizer"])
        if self.poses is not None and s.get("poses") is not None:
            self.poses.load_state_dict(s["poses"])
            self.pose_optimizer.load_state_dict(s["pose_optimizer"])
        self.gen.set_state(s["generator"])
        torch.set_rng_state(s["torch_rng"])
        self.iteration = int(s["iteration"])
        return True

    # -- training loop -----------------------------------------------------------------------------

    def train(self, iterations: int | None = None, progress: bool = True) -> dict[str, float]:
        from tqdm import tqdm

        self.out.mkdir(parents=True, exist_ok=True)
        save_config(self.cfg, self.out / "config.yaml")
        end = self.total_iterations if iterations is None else min(self.total_iterations, self.iteration + iterations)
        per_epoch = len(self.train_ids)
        every = max(1, self.cfg.train.checkpoint_every * per_epoch)
        bar = tqdm(total=end, initial=self.iteration, disable=not progress, dynamic_ncols=True, desc="idr")
        last: dict[str, float] = {}
        try:
            while self.iteration < end:
                last = self.step()
                bar.update(1)
                if self.iteration % self.cfg.train.log_every == 0:
                    bar.set_postfix(loss=f"{last['loss']:.4f}", psnr=f"{last['psnr']:.1f}", epoch=self.epoch, alpha=self.alpha())
                if self.iteration % every == 0:
                    self.save()
        except KeyboardInterrupt:
            bar.write(f"interrupted: saving a checkpoint at iteration {self.iteration}")
            self.save()
            raise
        finally:
            bar.close()
        self.save()
        return last

    # -- evaluation and export ---------------------------------------------------------------------

    @torch.no_grad()
    def render(self, cam: C.Camera, chunk: int = 4096) -> dict[str, torch.Tensor]:
        """RGB `[H, W, 3]` in [0, 1] (black background), normal map, hit mask of one camera."""
        o, d = cam.image_rays()
        o, d = o.reshape(-1, 3), d.reshape(-1, 3)
        rgb = torch.zeros_like(o)
        normals = torch.zeros_like(o)
        hit = torch.zeros(o.shape[0], dtype=torch.bool, device=o.device)
        for s in range(0, o.shape[0], chunk):
            tr = sphere_trace_mlp(self.implicit.sdf, o[s : s + chunk], d[s : s + chunk], tracer=self.tracer, create_graph=False)
            h = tr.hit
            hit[s : s + chunk] = h
            normals[s : s + chunk] = tr.normals
            if h.any():
                pts = tr.points[h]
                feat = self.implicit(pts)[:, 1:]
                rgb[s : s + chunk][h] = (self.rendering(pts, d[s : s + chunk][h], tr.normals[h], feat) + 1) / 2
        H, W = cam.height, cam.width
        return {"rgb": rgb.reshape(H, W, 3), "normals": torch.where(hit[:, None], 0.5 + 0.5 * normals, 0.0).reshape(H, W, 3),
                "hit": hit.reshape(H, W)}  # fmt: skip

    def evaluate_views(self, ids: list[int], write_dir: Path | None = None) -> dict[str, float]:
        psnrs, ious = [], []
        for i in ids:
            r = self.render(self.camera(i))
            gt_mask = self.masks[i]
            psnrs.append(psnr(r["rgb"].cpu(), self.images[i].cpu(), gt_mask.cpu()) if gt_mask.any() else float("nan"))
            ious.append(mask_iou(r["hit"].cpu(), gt_mask.cpu()))
            if write_dir is not None:
                write_image(write_dir / f"{self.data.names[i]}_rgb.png", r["rgb"])
                write_image(write_dir / f"{self.data.names[i]}_normals.png", r["normals"])
                write_image(write_dir / f"{self.data.names[i]}_gt.png", self.images[i])
        return {"psnr_masked": float(np.nanmean(psnrs)), "mask_iou": float(np.mean(ious)), "views": len(ids)}

    def mesh(self, resolution: int | None = None):
        """Marching cubes of the SDF, largest component, in world units (via the dataset's scale_mat)."""
        res = resolution or self.cfg.mesh_resolution
        self.implicit.eval()
        return extract_mesh(self.implicit.sdf, resolution=res, bound=((-1, -1, -1), (1, 1, 1)), device=self.device,
                            largest_component=True, T_world_field=self.data.scale_mat.numpy())  # fmt: skip

    def export(self) -> dict:
        """Write renders of held-out views, a turntable, mesh.ply and metrics.json to `out`."""
        out = self.out
        t0 = time.time()
        test_ids = self.data.splits.get("test", [])
        metrics: dict = {"iterations": self.iteration, "epochs": self.epoch}
        if test_ids:
            metrics["test"] = self.evaluate_views(test_ids, out / "renders")
        mesh = self.mesh()
        save_mesh(mesh, out / "mesh.ply")
        metrics["mesh_faces"] = int(len(mesh.faces))
        gt, frame = default_gt(self.cfg)
        if gt is not None and Path(gt).is_file():
            from taichi_sdf.train.metrics import load_geometry

            S = self.data.scale_mat.numpy()
            pred_n = mesh.copy()
            pred_n.apply_transform(np.linalg.inv(S))  # metrics in the normalised frame
            gt_geom = load_geometry(gt, None if frame == "normalized" else np.linalg.inv(S))
            metrics["geometry"] = evaluate_mesh(pred_n, gt_geom, thresholds=(self.cfg.fscore_threshold,))
            metrics["geometry"]["frame"] = "normalized (unit sphere)"
            metrics["gt"] = gt
        self.turntable(out / "turntable.gif")
        metrics["export_seconds"] = time.time() - t0
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float))
        return metrics

    def turntable(self, path: Path) -> None:
        import imageio.v3 as iio

        size = self.cfg.render_size or self.data.width
        fov = math.degrees(2 * math.atan(0.5 * self.data.width / float(self.cams.K[0, 0, 0])))
        dist = float(self.cams.centers.norm(dim=-1).mean())
        orbit = C.orbit_cameras(self.cfg.turntable_frames, dist, 20.0, size, size, fov).to(self.device, torch.float32)
        frames = [to_uint8(self.render(orbit[k])["rgb"]) for k in range(len(orbit))]
        path.parent.mkdir(parents=True, exist_ok=True)
        iio.imwrite(path, np.stack(frames), duration=80, loop=0)
