"""DVR as one `nn.Module` ("system"): the occupancy + texture decoder, whose `forward(batch)` marches
the batch's rays and returns DVR's loss dict (`im2mesh/dvr/training.py` `compute_loss`), so a
`DistributedDataParallel` wrapper's forward is the training step's only entry to the parameters.

Frames: the multi-view datasets are normalised so the object lies in the unit sphere (IDR, NeRF and
the built-in data) or, for DVR's own folders, in the unit cube [-0.5, 0.5]^3, where DVR's decoder
lives. The system works in `x_dvr = frame_scale * x_normalised` (`frame_scale(format)`: 0.5 maps the
unit sphere into the cube, 1 for DVR folders): ray origins are scaled, directions stay unit, so ray
distances scale by the same factor and every gradient still reaches the camera."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from taichi_sdf.cameras.camera import Camera
from taichi_sdf.cameras.rays import ray_box_interval
from taichi_sdf.implicit.marchers.dvr import DVRMarcher
from taichi_sdf.implicit.normals import central_difference_normals
from taichi_sdf.implicit.wavefront import march_field
from taichi_sdf.train import losses


def frame_scale(data_format: str) -> float:
    """`x_dvr = frame_scale * x_normalised` for a dataset of `data_format` ("idr", "nerf", "dvr")."""
    return 1.0 if data_format == "dvr" else 0.5  # DVR folders are in the unit cube already; others in the unit sphere


NORMAL_NEIGHBOURHOOD = 1e-3  # DVR get_normals h_sample


class DVRSystem(nn.Module):
    """`forward(batch)` with batch = {
        "camera": Camera of the view (normalised frame), "uv": [n, 2] pixel positions, consecutive
        groups of patch_size^2 forming patches, "rgb": [n, 3] ground truth in [0, 1], "mask": [n] bool,
        "n_steps": int proposals per ray, "u_free", "u_occ": [n] uniform numbers for the freespace /
        occupancy points, "u_neighbour": [n, 3] uniform numbers for the normal loss's neighbours}
    returns {"loss", "rgb", "image_gradient", "freespace", "occupied", "normal"} (tensors; loss is the
    weighted sum with DVR's "sum" reduction over pixels, one image per batch) and the diagnostics
    {"psnr", "hit_fraction", "mask_accuracy", "evals"} (floats)."""

    def __init__(self, decoder: nn.Module, marcher: DVRMarcher, *, frame_scale: float = 0.5, patch_size: int = 2, rgb_weight: float = 1.0,
                 image_gradient_weight: float = 1.0, normal_weight: float = 0.1, freespace_weight: float = 1.0,
                 occupied_weight: float = 1.0, always_freespace: bool = True) -> None:  # fmt: skip
        super().__init__()
        self.decoder, self.marcher, self.patch_size, self.frame_scale = decoder, marcher, patch_size, frame_scale
        self.always_freespace = always_freespace
        self.weights = {"rgb": rgb_weight, "image_gradient": image_gradient_weight, "normal": normal_weight,
                        "freespace": freespace_weight, "occupied": occupied_weight, "depth": 0.0}  # fmt: skip

    # -- the field -----------------------------------------------------------------------------------

    def field(self, points: torch.Tensor) -> torch.Tensor:
        """`points [M, 3]` (DVR frame) -> `[M, 4]`: occupancy logit, RGB logits."""
        return self.decoder(points)

    def logits(self, points: torch.Tensor) -> torch.Tensor:
        """Occupancy logits `[M]` at `points [M, 3]`."""
        return self.field(points)[:, 0]

    def colors(self, points: torch.Tensor) -> torch.Tensor:
        """RGB in [0, 1] `[M, 3]` at `points [M, 3]` (DVR's texture head: sigmoid of columns 1:4)."""
        return torch.sigmoid(self.field(points)[:, 1:4])

    def rays(self, cam: Camera, uv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """DVR-frame rays `[n, 3]` (origins, unit directions) through pixel positions `uv [n, 2]`."""
        o, d = cam.pixel_rays(uv[None].contiguous())
        return o[0] * self.frame_scale, d[0]

    def trace(self, o: torch.Tensor, d: torch.Tensor, n_steps: int):
        return march_field(self.field, o, d, marcher=with_steps(self.marcher, n_steps), create_graph=False, polish_steps=0)

    # -- the loss ------------------------------------------------------------------------------------

    def forward(self, batch: dict) -> dict:
        o, d = self.rays(batch["camera"], batch["uv"])
        terms, diag = ray_losses(self.field, self.marcher, o, d, batch, patch_size=self.patch_size,
                                 always_freespace=self.always_freespace, normals=self.weights["normal"] > 0,
                                 image_gradients=self.weights["image_gradient"] > 0)  # fmt: skip
        loss = sum(self.weights[k] * v for k, v in terms.items())
        return {"loss": loss, **terms, **diag}

    @torch.no_grad()
    def render_rays(self, o: torch.Tensor, d: torch.Tensor, n_steps: int) -> dict[str, torch.Tensor]:
        """Colour in [0, 1] (black where missed), outward normals and hit mask of DVR-frame rays
        `o, d [N, 3]` (no grad)."""
        tr = self.trace(o, d, n_steps)
        rgb = torch.zeros_like(o)
        if tr.hit.any():
            rgb[tr.hit] = self.colors(tr.points[tr.hit])
        return {"rgb": rgb, "normals": -tr.normals, "hit": tr.hit}  # occupancy grows inwards: negate


def with_steps(marcher: DVRMarcher, n_steps: int) -> DVRMarcher:
    """`marcher` with `n_steps` proposals per ray (the schedule changes it during training)."""
    return marcher if marcher.n_steps == n_steps else replace(marcher, n_steps=int(n_steps))


LOSS_TERMS = ("rgb", "image_gradient", "normal", "freespace", "occupied", "depth")


def ray_losses(field, marcher: DVRMarcher, o: torch.Tensor, d: torch.Tensor, batch: dict, *, patch_size: int = 2,
               always_freespace: bool = True, normals: bool = True, image_gradients: bool = True,
               depth: bool = False) -> tuple[dict, dict]:  # fmt: skip
    """DVR's loss terms (unweighted, "sum" reduction over the rays) for one object's rays.

    Args:
        field: `points [M, 3] -> [M, 4]` (occupancy logit, RGB logits) in the DVR frame.
        o, d: `[n, 3]` DVR-frame rays (unit directions).
        batch: "rgb" `[n, 3]` in [0, 1], "mask" `[n]` bool, "n_steps", "u_free", "u_occ" `[n]`,
            "u_neighbour" `[n, 3]` uniform numbers; with `depth`, "depth" `[n]` GT ray distances in the
            DVR frame (inf where unknown) for the depth loss (L1 on the ray distance t:
            DVR's L1 on camera z-depth scaled by each ray's t per unit z) and the occupancy points.
    Returns:
        (terms: name -> scalar tensor for each of LOSS_TERMS, diagnostics: name -> float).
    """
    gt_rgb, gt_mask = batch["rgb"], batch["mask"]
    tr = march_field(field, o, d, marcher=with_steps(marcher, batch["n_steps"]), create_graph=False, polish_steps=0)
    hit = tr.hit
    zero = torch.zeros((), device=o.device)
    terms = dict.fromkeys(LOSS_TERMS, zero)
    logits = lambda x: field(x)[:, 0]  # noqa: E731
    # Photo-consistency on (predicted surface & GT mask), plus image gradients on whole patches.
    surf = hit & gt_mask
    psnr_val = float("nan")
    if surf.any():
        rgb = torch.zeros_like(gt_rgb).index_put((surf.nonzero()[:, 0],), torch.sigmoid(field(tr.points[surf])[:, 1:4]))
        terms["rgb"] = losses.dvr_rgb_l1(rgb[None], gt_rgb[None], surf[None])
        if image_gradients:
            terms["image_gradient"] = losses.image_gradient_l2(rgb[None], gt_rgb[None], surf[None], patch_size)
        with torch.no_grad():
            psnr_val = float(-10 * torch.log10((rgb[surf] - gt_rgb[surf]).square().mean().clamp_min(1e-10)))
        if normals:  # DVR get_normals: central differences (h = 1e-3) at p and a neighbour in a 1e-3 cube
            p = tr.points[surf].detach()
            neighbour = p + (batch["u_neighbour"][surf] - 0.5) * NORMAL_NEIGHBOURHOOD
            n_p, n_nb = central_difference_normals(logits, p), central_difference_normals(logits, neighbour)
            terms["normal"] = losses.normal_smoothness(n_p, n_nb, 1)
    gt_depth = batch.get("depth") if depth else None
    if gt_depth is not None:
        terms["depth"] = losses.dvr_depth_l1(tr.t[None], gt_depth[None], surf[None])
    # One random point per ray inside the unit cube (depth_range for rays that miss it).
    near, far, in_cube = ray_box_interval(o.detach(), d.detach(), 0.5)
    lo, hi = marcher.depth_range
    near = torch.where(in_cube, near, torch.full_like(near, lo))
    far = torch.where(in_cube, far, torch.full_like(far, hi))
    # Freespace: outside the GT mask, at the predicted surface point where there is one.
    free = ~gt_mask if always_freespace else (~gt_mask & hit)
    if free.any():
        t_free = near + batch["u_free"] * (far - near)
        p_free = torch.where(hit[:, None], tr.points.detach(), o.detach() + t_free[:, None] * d.detach())
        terms["freespace"] = losses.freespace_bce(logits(p_free[free])[None], torch.ones_like(free[free])[None])
    # Occupancy: inside the GT mask where no surface was found (at the GT depth when known).
    occ = gt_mask & ~hit
    if occ.any():
        t_occ = near + batch["u_occ"] * (far - near)
        if gt_depth is not None:
            t_occ = torch.where(torch.isfinite(gt_depth), gt_depth, t_occ)
        p_occ = o.detach() + t_occ[:, None] * d.detach()
        terms["occupied"] = losses.occupancy_bce(logits(p_occ[occ])[None], torch.ones_like(occ[occ])[None])
    with torch.no_grad():
        acc = float((hit == gt_mask).float().mean())
    return terms, {"psnr": psnr_val, "hit_fraction": float(hit.float().mean()), "mask_accuracy": acc,
                   "evals": tr.num_evals}  # fmt: skip
