"""Multi-view mesh fitting (DIB-R / SoftRas style) on the project's soft rasterizer: training with
coarse-to-fine subdivision on loss plateaus, exact resume, and the export (mesh with colours or
texture, held-out renders and metrics, turntable, geometry metrics)."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import torch
import trimesh

import taichi_sdf
from taichi_sdf.cameras import camera as C
from taichi_sdf.train.checkpoint import atomic_write_bytes
from taichi_sdf.train.multiview import MultiViewExport
from taichi_sdf.train.trainer import Trainer, is_main_process

from .config import FitConfig
from .system import MeshFitSystem
from .template import make_template


class FitTrainer(MultiViewExport, Trainer):
    """Construct, `step()` repeatedly (or `train()`), then `export()`; checkpoints resume exactly, also
    across a subdivision (the checkpoint holds the mesh at its level). The loss is `self.system(batch)`."""

    name = "dibr-fit"
    keep_last = 3

    def __init__(self, cfg: FitConfig, mode: str = "new") -> None:
        self.info = taichi_sdf.init(cfg.arch)
        taichi_sdf.core.runtime.set_torch_threads(cfg.torch_threads)
        super().__init__(cfg, cfg.out, cfg.seed, mode)
        self.device = self.info.device
        self.load_views(cfg.data)
        m, r, t = cfg.model, cfg.render, cfg.train
        template = make_template(m.template, m.icosphere_subdivisions, m.template_radius)
        raster = (
            {"sigmainv": r.sigmainv, "boxlen": r.boxlen, "knum": r.knum}
            if r.mode == "dibr"
            else {"sigma": r.sigma, "gamma": r.gamma}
        )
        weights = {"image": t.image_weight, "iou": t.iou_weight, "laplacian": t.laplacian_weight,
                   "flatten": t.flatten_weight, "edge": t.edge_weight, "normal": t.normal_weight}  # fmt: skip
        self.system = MeshFitSystem(template, num_views=len(self.data), albedo=m.albedo, texture_size=m.texture_size,
                                    init_color=m.init_color, mode=r.mode, shading=r.shading, learn_light=r.learn_light,
                                    raster=raster, train_cameras=t.train_cameras, weights=weights,
                                    laplacian=t.laplacian).to(self.device)  # fmt: skip
        self.make_optimizer()
        self.plateau = {"ema": math.nan, "best": math.inf, "best_at": 0, "level_start": 0}
        self.remeshed_at: list[int] = []  # iterations at which the mesh was subdivided
        self.log_every = t.log_every
        self.samples_per_step = min(t.views_per_step, len(self.train_ids))  # views per iteration
        self.start(mode)

    @property
    def total_iterations(self) -> int:
        return self.cfg.train.iterations

    def checkpoint_due(self) -> bool:
        return self.iteration % self.cfg.train.checkpoint_every == 0

    def make_optimizer(self) -> None:
        t = self.cfg.train
        scale = self.cfg.remesh.lr_factor**self.system.level
        groups = self.system.param_groups(t.lr, t.color_lr, t.light_lr, t.camera_lr, scale)
        self.optimizer = torch.optim.Adam(groups, betas=tuple(t.betas))

    # -- one iteration -----------------------------------------------------------------------------

    def sample_views(self) -> torch.Tensor:
        """`[B]` distinct training view indices (B = train.views_per_step, at most all)."""
        ids = torch.tensor(self.train_ids)
        return ids[torch.randperm(len(ids), generator=self.gen)[: self.samples_per_step]]

    def batch(self, views: torch.Tensor) -> dict:
        return {"views": views.to(self.device), "cameras": self.cams[views.to(self.device)],
                "images": self.images[views], "masks": self.masks[views].float()}  # fmt: skip

    def train_step(self) -> dict[str, float]:
        terms = self.system(self.batch(self.sample_views()))
        loss = terms["loss"]
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"iteration {self.iteration}: loss is {float(loss)}; last checkpoint kept in {self.ckpt_dir}"
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        row = {k: float(v.detach()) if isinstance(v, torch.Tensor) else float(v) for k, v in terms.items()}
        row["level"] = float(self.system.level)
        self.watch_plateau(row["loss"])
        return row

    def watch_plateau(self, loss: float) -> bool:
        """Track the smoothed loss; subdivide (and rebuild the optimiser) when it has not improved by
        `remesh.min_improvement` (relative) for `remesh.patience` iterations, after at least
        `remesh.min_iterations` at this level and while fewer than `remesh.max_levels` were done."""
        r, p = self.cfg.remesh, self.plateau
        it = self.iteration + 1  # iterations done once this step is counted
        p["ema"] = loss if math.isnan(p["ema"]) else r.ema * p["ema"] + (1 - r.ema) * loss
        if p["ema"] < p["best"] * (1 - r.min_improvement):
            p["best"], p["best_at"] = p["ema"], it
        due = (self.system.level < r.max_levels and it - p["level_start"] >= r.min_iterations
               and it - p["best_at"] >= r.patience and it < self.total_iterations)  # fmt: skip
        if due:
            self.remesh()
            self.plateau = {"ema": math.nan, "best": math.inf, "best_at": it, "level_start": it}
            self.remeshed_at.append(it)
        return due

    def remesh(self) -> None:
        self.system.subdivide(self.cfg.remesh.method)
        self.make_optimizer()

    def postfix(self, row: dict) -> dict:
        return {"loss": f"{row['loss']:.4f}", "iou": f"{row['mask_iou']:.3f}", "psnr": f"{row['psnr']:.1f}",
                "V": int(row["vertices"]), "views": self.throughput()}  # fmt: skip

    # -- checkpoints -------------------------------------------------------------------------------

    def state(self) -> dict:
        return {"system": self.system.state_dict(), "level": self.system.level, "optimizer": self.optimizer.state_dict(),
                "plateau": dict(self.plateau), "remeshed_at": list(self.remeshed_at)}  # fmt: skip

    def load_state(self, s: dict) -> None:
        self.system.resize_like(s["system"])
        self.system.load_state_dict(s["system"])
        self.system.level = int(s["level"])
        self.make_optimizer()
        self.optimizer.load_state_dict(s["optimizer"])
        self.plateau = dict(s["plateau"])
        self.remeshed_at = list(s["remeshed_at"])

    # -- evaluation and export ---------------------------------------------------------------------

    def view_camera(self, i: int) -> C.Camera:
        cam = self.cams[i]
        return cam if self.system.poses is None else self.system.camera(cam, torch.tensor([i], device=self.device))

    @torch.no_grad()
    def render(self, cam: C.Camera) -> dict[str, torch.Tensor]:
        """Hard rasterization of the fitted mesh by one camera: RGB `[H, W, 3]` (black background), normal
        map `[H, W, 3]`, coverage `[H, W]` (MultiViewExport's contract; no rays involved)."""
        out = self.system.render(cam, mode="hard")
        hit = out.face_id[0] >= 0
        return {"rgb": out.rgb[0].clamp(0, 1), "normals": torch.where(hit[..., None], 0.5 + 0.5 * out.normals[0], 0.0),
                "hit": hit}  # fmt: skip

    def mesh(self) -> trimesh.Trimesh:
        """The fitted mesh in world units (via the dataset's scale_mat), vertex colours when it has them."""
        with torch.no_grad():
            v = self.data.to_world(self.system.vertices.double().cpu()).numpy()
            f = self.system.faces.long().cpu().numpy()
            c = self.system.colors()
        colors = None if c is None else (np.clip(c.cpu().numpy(), 0, 1) * 255).round().astype(np.uint8)
        return trimesh.Trimesh(v, f, vertex_colors=colors, process=False)

    def save_meshes(self, mesh: trimesh.Trimesh) -> list[str]:
        from taichi_sdf.mesh.export import save_obj, save_ply

        s = self.system
        with torch.no_grad():
            colors = s.colors()
            save_ply(self.out / "mesh.ply", mesh.vertices, mesh.faces, colors=None if colors is None else colors.cpu().numpy())
            if s.albedo != "texture":
                return ["mesh.ply"]
            save_obj(self.out / "mesh.obj", mesh.vertices, mesh.faces, uv=s.uv.cpu().numpy(), uv_faces=s.uv_faces.cpu().numpy(),
                     texture=s.texture().cpu().numpy())  # fmt: skip
        return ["mesh.ply", "mesh.obj"]

    def export(self, progress: bool = True) -> dict:
        """Write renders of held-out views, a turntable, mesh.ply (vertex colours; mesh.obj + texture when
        textured) and metrics.json to `out`; each phase reports itself."""
        out = self.out
        t0 = time.time()
        test_ids = self.data.splits.get("test", [])
        s = self.system
        metrics: dict = {"iterations": self.iteration, "vertices": int(s.base.shape[0]), "faces": int(s.faces.shape[0]),
                         "subdivisions": s.level, "remeshed_at": list(self.remeshed_at)}  # fmt: skip
        with self.locked():
            if test_ids:
                with self.phase(f"rendering {len(test_ids)} held-out views"):
                    metrics["test"] = self.evaluate_views(test_ids, out / "renders", progress)
            mesh = self.mesh()
            if is_main_process():
                with self.phase("writing the mesh"):
                    metrics["mesh_files"] = self.save_meshes(mesh)
            metrics |= self.geometry_metrics(mesh)
            with self.phase(f"turntable of {self.cfg.turntable_frames} frames"):
                self.turntable(out / "turntable.gif", progress)
            metrics["export_seconds"] = time.time() - t0
            if is_main_process():
                atomic_write_bytes(out / "metrics.json", json.dumps(metrics, indent=2, default=float).encode())
        return metrics
