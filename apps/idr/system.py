"""IDR as one `nn.Module` ("system"): the implicit and rendering networks and the optional per-view
pose refinement, whose `forward(batch)` traces the batch's rays and returns the loss dict, so a
`DistributedDataParallel` wrapper's forward is the training step's only entry to the parameters."""

from __future__ import annotations

import torch
from torch import nn

from taichi_sdf.cameras import camera as C
from taichi_sdf.cameras.pose import PoseRefinement
from taichi_sdf.implicit.marchers.idr import IDRMarcher
from taichi_sdf.implicit.wavefront import march_field
from taichi_sdf.train import losses


class IDRSystem(nn.Module):
    """`forward(batch)` with batch = {
        "view": int, "camera": Camera (unrefined) of that view, "uv": [n, 2] pixel centres,
        "rgb": [n, 3] ground truth in [-1, 1], "mask": [n] bool, "eikonal_points": [m, 3], "alpha": float,
        optional "num_rays", "num_eikonal": the counts the losses divide by (default n and m + n; a share
        of a larger batch under DDP passes the batch's)}
    returns {"loss", "rgb", "eikonal", "mask"} (tensors; loss = weighted sum, IDR's IDRLoss) and the
    diagnostics {"psnr", "hit_fraction", "evals"} (floats)."""

    def __init__(self, implicit: nn.Module, rendering: nn.Module, tracer: IDRMarcher, num_views: int = 0,
                 train_cameras: bool = False, rgb_weight: float = 1.0, eikonal_weight: float = 0.1,
                 mask_weight: float = 100.0) -> None:  # fmt: skip
        super().__init__()
        self.implicit, self.rendering, self.tracer = implicit, rendering, tracer
        self.poses = PoseRefinement(num_views) if train_cameras else None
        self.weights = {"rgb": rgb_weight, "eikonal": eikonal_weight, "mask": mask_weight}

    def camera(self, cam: C.Camera, view: int) -> C.Camera:
        if self.poses is None:
            return cam
        return self.poses.refine(cam, torch.tensor([view], device=cam.K.device))

    def forward(self, batch: dict) -> dict:
        uv, gt_rgb, gt_mask, alpha = batch["uv"], batch["rgb"], batch["mask"], batch["alpha"]
        n = batch.get("num_rays", uv.shape[0])
        o, d = self.camera(batch["camera"], batch["view"]).pixel_rays(uv[None].contiguous())
        o, d = o[0], d[0]
        tr = march_field(self.implicit.sdf, o, d, marcher=self.tracer, create_graph=True)
        surf = tr.hit & gt_mask
        rgb_loss = torch.zeros((), device=o.device)
        psnr_val = float("nan")
        if surf.any():
            pts = tr.points[surf]
            feat = self.implicit(pts)[:, 1:]
            rgb = self.rendering(pts, d[surf], tr.normals[surf], feat)
            rgb_loss = losses.rgb_l1(rgb, gt_rgb[surf], n)
            with torch.no_grad():
                mse = ((rgb - gt_rgb[surf]) / 2).square().mean()
                psnr_val = float(-10 * torch.log10(mse.clamp_min(1e-10)))
        out = ~surf
        mask_loss = losses.mask_bce(tr.min_sdf[out], gt_mask[out], alpha, n)
        # Eikonal on uniform points of the bounding cube plus the (detached) ray points.
        eik_pts = torch.cat([batch["eikonal_points"], tr.points.detach()]).requires_grad_(True)
        g = torch.autograd.grad(self.implicit.sdf(eik_pts).sum(), eik_pts, create_graph=True)[0]
        eik_loss = losses.eikonal(g, batch.get("num_eikonal"))
        w = self.weights
        loss = w["rgb"] * rgb_loss + w["eikonal"] * eik_loss + w["mask"] * mask_loss
        return {"loss": loss, "rgb": rgb_loss, "eikonal": eik_loss, "mask": mask_loss, "psnr": psnr_val,
                "hit_fraction": float(tr.hit.float().mean()), "evals": tr.num_evals}  # fmt: skip

    @torch.no_grad()
    def render_rays(self, o: torch.Tensor, d: torch.Tensor) -> dict[str, torch.Tensor]:
        """Colour in [0, 1] (black where missed), normals and hit mask of rays `o, d [N, 3]` (no grad)."""
        tr = march_field(self.implicit.sdf, o, d, marcher=self.tracer, create_graph=False)
        rgb = torch.zeros_like(o)
        if tr.hit.any():
            pts = tr.points[tr.hit]
            feat = self.implicit(pts)[:, 1:]
            rgb[tr.hit] = (self.rendering(pts, d[tr.hit], tr.normals[tr.hit], feat) + 1) / 2
        return {"rgb": rgb, "normals": tr.normals, "hit": tr.hit}
