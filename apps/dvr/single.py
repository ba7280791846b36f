"""python -m apps.dvr single [--config configs/dvr/single_cpu.yaml] [key=value ...] [--resume | --overwrite] [--eval-only]

DVR single-view reconstruction: an image encoder conditions the occupancy + texture decoder, trained
with DVR's 2.5D supervision (RGB, mask, and depth in the "combined" variant) on a ShapeNet-layout
dataset (DVR's own, or the built-in procedural classes generated on first use), then MISE meshes of
the held-out objects scored as DVR's eval_meshes (IoU, Chamfer-L1 (also x10), normal consistency,
F-score; per class and mean) beside two baselines that ignore the image's details: the nearest training object
by input image (retrieval) and the class-mean shape of the training objects.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from taichi_sdf.cameras.camera import Camera
from taichi_sdf.core.errors import app_main
from taichi_sdf.data.shapenet import ShapeNetDataset, builtin_layout_root, generate_shapenet_layout
from taichi_sdf.geometry.meshing import save_mesh
from taichi_sdf.geometry.mise import mise_extract
from taichi_sdf.implicit.marchers.dvr import DVRMarcher
from taichi_sdf.models.dvr import BoxHead, build_dvr_networks
from taichi_sdf.train import distributed as tdist
from taichi_sdf.train.checkpoint import atomic_write_bytes
from taichi_sdf.train.cli import train_and_export
from taichi_sdf.train.metrics import evaluate_occnet, write_eval_tables
from taichi_sdf.train.pixel_sampling import draw_pixels, object_pixel_lists
from taichi_sdf.train.trainer import Trainer, is_main_process

from .single_config import SingleViewConfig
from .system import LOSS_TERMS, ray_losses

DEFAULT_PRESET = "configs/dvr/single_cpu.yaml"


class SingleViewSystem(nn.Module):
    """Encoder + decoder; `forward(batch)` with batch = {"inputs": [B, 3, S, S] images in [0, 1],
    "views": list of B per-object dicts {"camera": Camera, "uv", "rgb", "mask", "depth" (ray distance,
    inf unknown), "u_free", "u_occ", "u_neighbour"} (see `ray_losses`), "n_steps": int} returns DVR's
    loss dict: each term summed over the pixels of all objects and divided by B (DVR's reduction)."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, marcher: DVRMarcher, weights: dict[str, float],
                 prior: torch.Tensor | None = None, prior_bound: float = 0.55, prior_persistent: bool = True,
                 box_head: BoxHead | None = None, prior_boxes: torch.Tensor | None = None,
                 occupancy_correction: bool = True) -> None:  # fmt: skip
        """`prior [P, R, R, R]`: optional occupancy-logit grids over [-prior_bound, prior_bound]^3 (x, y, z
        index order) added to the decoder's logit: one per class (`shape_prior=class_mean`) or one per
        training object (`shape_prior=retrieval`); each object then needs its prior's index ("prior_index"
        in each view dict). `prior_persistent=False` keeps the grids out of checkpoints (rebuilt from the
        training set: the per-object grids are large). `box_head` with `prior_boxes [P, 6]` (each prior's
        bounding box as (log extents, centre), not saved either): the prior is stretched from its own box
        to the box the head predicts from the input image (`prior_fit=box`); the batch then carries each
        object's true box ("boxes [B, 6]") for the head's L1 loss ("box"), the only loss that trains the
        head: the occupancy losses see its boxes detached (a sum over thousands of points would swamp it).
        `occupancy_correction=False`: the occupancy logit is the prior's alone (the decoder's colours stay)."""
        super().__init__()
        self.encoder, self.decoder, self.marcher, self.weights = encoder, decoder, marcher, weights
        self.prior_bound = float(prior_bound)
        grids = None if prior is None else prior.float().unsqueeze(1)  # [P, 1, R, R, R]
        self.register_buffer("prior", grids, persistent=prior_persistent)
        if (box_head is None) != (prior_boxes is None) or (box_head is not None and prior is None):
            raise ValueError("box_head: needs prior grids and prior_boxes [P, 6] (and prior_boxes a box_head)")
        if prior_boxes is not None and prior_boxes.shape != (grids.shape[0], 6):
            raise ValueError(f"prior_boxes: expected [{grids.shape[0]}, 6] (one box per prior), got {list(prior_boxes.shape)}")
        self.box_head = box_head
        if not occupancy_correction and prior is None:
            raise ValueError("occupancy_correction: False needs a prior (the decoder's logit is the whole shape without one)")
        self.occupancy_correction = bool(occupancy_correction)
        self.register_buffer("prior_boxes", None if prior_boxes is None else prior_boxes.float(), persistent=False)

    def prior_logit(self, points: torch.Tensor, index: int) -> torch.Tensor:
        """Trilinear lookup of prior `index`'s logit at `points [M, 3]` -> `[M]` (border values outside the
        grid); differentiable w.r.t. the points (normals, the implicit depth gradient)."""
        # grid_sample's last-dim coordinates (x, y, z) index the volume's (W, H, D) = the grid's (z, y, x)
        g = (points / self.prior_bound).flip(-1).view(1, -1, 1, 1, 3).to(self.prior.dtype)
        v = torch.nn.functional.grid_sample(self.prior[index : index + 1], g, mode="bilinear",
                                            padding_mode="border", align_corners=True)  # fmt: skip
        return v.view(-1).to(points.dtype)

    def field(self, code: torch.Tensor, prior_index: int | None = None, box: torch.Tensor | None = None):
        """The decoder closed over `code [c_dim]` (`points [M, 3] -> [M, 4]`), plus the logit of prior
        `prior_index` in column 0 when the system has priors; with a box head, looked up through
        `prior_warp` of the object's predicted `box [6]` (log extents, centre; see `boxes`)."""
        base = self.decoder.field(code)
        if self.prior is None:
            return base
        if prior_index is None:
            raise ValueError("prior_index: the system has a shape prior; give the object's prior (its class index, "
                             "or with shape_prior=retrieval the retrieved training object's index)")
        if self.box_head is not None and box is None:
            raise ValueError("box: the system stretches its prior to the object's box; give the box predicted "
                             "from the object's image (`boxes(images)`)")
        warp = self.prior_warp(box, prior_index)

        def with_prior(x: torch.Tensor) -> torch.Tensor:
            out = base(x)
            prior = self.prior_logit(warp(x), prior_index)[:, None]
            return torch.cat([out[:, :1] + prior if self.occupancy_correction else prior, out[:, 1:]], 1)

        return with_prior

    def prior_warp(self, box: torch.Tensor | None, prior_index: int):
        """`points [M, 3] -> [M, 3]` in the prior's frame: the identity, or with a box head the per-axis
        affine map of `box [6]` (log extents, centre) onto prior `prior_index`'s own box."""
        if self.box_head is None:
            return lambda x: x
        own = self.prior_boxes[prior_index].to(box.dtype)
        scale, centre, own_centre = torch.exp(own[:3] - box[:3]), box[3:], own[3:]
        return lambda x: own_centre + (x - centre) * scale

    def boxes(self, images: torch.Tensor) -> torch.Tensor | None:
        """The boxes `[B, 6]` (log extents, centre) the box head predicts for `images [B, 3, S, S]`, or None."""
        return None if self.box_head is None else self.box_head.box(self.box_head(images))

    def forward(self, batch: dict) -> dict:
        codes = self.encoder(batch["inputs"])
        B = codes.shape[0]
        totals = dict.fromkeys(LOSS_TERMS, 0.0)
        diag = {"psnr": [], "hit_fraction": [], "mask_accuracy": [], "evals": []}
        occupancy_3d = torch.zeros((), device=codes.device)
        box, boxes = None, [None] * B
        if self.box_head is not None:  # L1 of the standardised boxes, mean over objects and the 6 numbers
            standardised = self.box_head(batch["inputs"])
            box = (standardised - self.box_head.standardise(batch["boxes"].to(codes.dtype))).abs().mean()
            boxes = self.box_head.box(standardised).detach()  # trained by its own loss only (see __init__)
        if "points_3d" in batch:  # OccNet's loss: BCE of the logits at labelled points, summed, mean over objects
            for b, view in enumerate(batch["views"]):
                logits = self.field(codes[b], view.get("prior_index"), boxes[b])(batch["points_3d"][b])[:, 0]
                occupancy_3d = occupancy_3d + nn.functional.binary_cross_entropy_with_logits(
                    logits, batch["occupancy_3d"][b].to(logits.dtype), reduction="sum") / B
        # the terms that need no ray: OccNet's 3D loss and the box head's L1
        pointwise = self.weights.get("occupancy_3d", 0.0) * occupancy_3d
        if box is not None:
            pointwise = pointwise + self.weights.get("box", 0.0) * box
        extra = {} if box is None else {"box": box}
        if not any(self.weights[k] > 0 for k in LOSS_TERMS):  # 3D supervision only: no ray marching
            nan = float("nan")
            return {"loss": pointwise, "occupancy_3d": occupancy_3d, **extra,
                    **{k: torch.zeros((), device=codes.device) for k in LOSS_TERMS},
                    "psnr": nan, "hit_fraction": nan, "mask_accuracy": nan, "evals": 0.0}  # fmt: skip
        for b, view in enumerate(batch["views"]):
            o, d = view["camera"].pixel_rays(view["uv"][None].contiguous())
            terms, dg = ray_losses(self.field(codes[b], view.get("prior_index"), boxes[b]), self.marcher, o[0], d[0], {**view, "n_steps": batch["n_steps"]},
                                   patch_size=1, normals=self.weights["normal"] > 0, image_gradients=False,
                                   depth=self.weights["depth"] > 0)  # fmt: skip
            for k in LOSS_TERMS:
                totals[k] = totals[k] + terms[k]
            for k in diag:
                diag[k].append(dg[k])
        terms = {k: v / B if isinstance(v, torch.Tensor) else torch.zeros((), device=codes.device) for k, v in totals.items()}
        loss = sum(self.weights[k] * terms[k] for k in LOSS_TERMS) + pointwise
        if "points_3d" in batch:
            terms["occupancy_3d"] = occupancy_3d
        terms.update(extra)
        mean = lambda v: float(np.mean([x for x in v if not np.isnan(x)])) if any(not np.isnan(x) for x in v) else float("nan")  # noqa: E731
        return {"loss": loss, **terms, **{k: mean(v) if k != "evals" else float(sum(v)) for k, v in diag.items()}}


def class_prior_logits(train_set: ShapeNetDataset, resolution: int, floor: float = 0.01) -> torch.Tensor:
    """`[C, R, R, R]` occupancy logits of each class's mean training occupancy (`geometry.class_mean`, over
    [-0.55, 0.55]^3), shifted so that 0 falls at the class's IoU-best threshold: the prior alone is the
    class-mean shape. Shares are clamped to [floor, 1 - floor] (logits within +-4.6)."""
    import trimesh

    from taichi_sdf.geometry.class_mean import best_threshold, occupancy_grids

    def logit(p):
        return np.log(p / (1 - p))

    grids = []
    for k in range(len(train_set.class_names)):
        meshes = [trimesh.load(train_set.mesh_path(i), force="mesh", process=False) for i, m in enumerate(train_set.models) if m[2] == k]
        if not meshes:
            raise ValueError(f"data: class {train_set.class_names[k]!r} has no training objects for its shape prior")
        occ = occupancy_grids(meshes, resolution)
        t = best_threshold(occ)[0]
        share = np.clip(occ.mean(0), floor, 1 - floor)
        grids.append(torch.from_numpy((logit(share) - logit(t)).astype(np.float32)))
    return torch.stack(grids)


def object_prior_logits(train_set: ShapeNetDataset, resolution: int, floor: float = 0.01,
                        kind: str = "occupancy") -> torch.Tensor:  # fmt: skip
    """`[N, R, R, R]` logits of each training object's own shape at the corners of a grid over
    [-0.55, 0.55]^3, within +-logit(1 - floor), the priors of `shape_prior=retrieval`. `kind`
    "occupancy": inside +4.6, outside -4.6 (floor 0.01; trilinear lookups put the zero set halfway
    between corners); "distance": -logit(1 - floor) * sdf / (2 * spacing), clamped (the zero set on the
    mesh's surface to within its curvature; the sign from the mesh's winding number)."""
    import trimesh

    from taichi_sdf.geometry.class_mean import occupancy_grids

    meshes = [trimesh.load(train_set.mesh_path(i), force="mesh", process=False) for i in range(len(train_set))]
    limit = float(np.log((1 - floor) / floor))
    if kind == "distance":
        from taichi_sdf.geometry.class_mean import grid_corners
        from taichi_sdf.geometry.mesh_sdf import MeshSDF

        points, _, _ = grid_corners(resolution, 0.55)
        spacing = 1.1 / (resolution - 1)
        out = torch.empty(len(meshes), resolution, resolution, resolution)
        for k, mesh in enumerate(meshes):
            sdf = MeshSDF(mesh.vertices, mesh.faces).signed_distance(points).cpu()  # sign: winding number
            out[k] = (-sdf * (limit / (2 * spacing))).clamp(-limit, limit).reshape(resolution, resolution, resolution)
        return out
    share = np.clip(occupancy_grids(meshes, resolution).astype(np.float32), floor, 1 - floor)
    return torch.from_numpy(np.log(share / (1 - share)))


def nearest_objects(queries: torch.Tensor, inputs: torch.Tensor, exclude: torch.Tensor | None = None) -> torch.Tensor:
    """Retrieval by input image: for each of `queries [Q, 3, S, S]` the training object whose input
    images `inputs [N, V, 3, S, S]` hold the nearest one (squared L2 over pixels) -> `[Q]` object indices.
    `exclude [Q]`: an object index per query that may not be returned (leave-one-out on training inputs)."""
    N, V = inputs.shape[:2]
    x = inputs.flatten(2).flatten(0, 1).double()  # [N * V, D]
    q = queries.flatten(1).double()  # [Q, D]
    dist = q.square().sum(1)[:, None] + x.square().sum(1)[None] - 2 * q @ x.T  # [Q, N * V]
    if exclude is not None:
        owner = torch.arange(N * V, device=x.device) // V
        dist = dist.masked_fill(owner[None] == exclude.to(x.device)[:, None], float("inf"))
    return dist.argmin(1) // V


def builtin_root(cfg: SingleViewConfig) -> Path:
    d = cfg.data
    return builtin_layout_root(d.classes, d.instances, d.views, d.size, d.points, d.seed)


def load_split(cfg: SingleViewConfig, split: str) -> ShapeNetDataset:
    d = cfg.data
    if d.root is None:
        root = builtin_root(cfg)
        if not (root / "generator.json").is_file() or split == "train":  # resumable: finished objects are skipped
            generate_shapenet_layout(root, classes=tuple(d.classes), n_per_class=d.instances, views=d.views,
                                     input_views=d.views, image_size=d.size, seed=d.seed, n_pointcloud=d.points,
                                     n_points=d.points, progress=is_main_process())  # fmt: skip
        return ShapeNetDataset(root, split, d.classes, d.input_folder, d.input_size, random_view=False, with_depth=True)
    return ShapeNetDataset(d.root, split, d.classes, d.input_folder, d.input_size, random_view=False, with_depth=True)


class SingleViewTrainer(Trainer):
    """Training views are read once into memory (the built-in set is small); a step draws
    `batch_size` objects, one supervision view and one input view each, and `pixels` pixels per view."""

    name = "dvr-single"
    keep_last = 3

    def __init__(self, cfg: SingleViewConfig, mode: str = "new") -> None:
        self.info = self.start_runtime(cfg)  # torchrun job, Taichi, torch threads
        super().__init__(cfg, cfg.out, cfg.seed, mode)
        self.device = self.info.device
        self.train_set = load_split(cfg, "train")
        self.views = self.train_set.stacked_views(("inputs", "image", "mask", "depth", "K", "T_cam_world"), self.device)
        t = cfg.train
        # [N * V] flat pixel lists of the grown masks, object-major (entry i * V + k: object i, view k), kept on
        # the CPU where the batch's pixels are drawn
        self.object_pixels = (object_pixel_lists(self.views["mask"].flatten(0, 1).bool().cpu(), t.object_margin)
                              if t.object_fraction > 0 else None)  # fmt: skip
        decoder, encoder = build_dvr_networks(cfg.model)
        m, t = cfg.marcher, cfg.train
        marcher = DVRMarcher(n_steps=m.init_steps, n_secant_steps=m.n_secant_steps, method=m.method,
                             depth_range=tuple(m.depth_range), coarse_stride=m.coarse_stride,
                             refine_margin=m.refine_margin)  # fmt: skip
        weights = {"rgb": t.rgb_weight, "image_gradient": 0.0, "normal": t.normal_weight, "freespace": t.freespace_weight,
                   "occupied": t.occupied_weight, "depth": t.depth_weight,
                   "occupancy_3d": t.occupancy_3d_weight if t.points_3d > 0 else 0.0}  # fmt: skip
        if t.points_3d > 0:  # every training object's labelled points (points.npz), on the CPU where they are drawn
            pts = [self.train_set.occupancy_points(i) for i in range(len(self.train_set))]
            self.points_3d = [p for p, _ in pts]
            self.occupancy_3d = [o for _, o in pts]
        self.categories = [c for _, _, c in self.train_set.models]
        prior = None
        if cfg.shape_prior == "class_mean":
            prior = class_prior_logits(self.train_set, cfg.prior_resolution, cfg.prior_floor)
        elif cfg.shape_prior == "retrieval":
            prior = object_prior_logits(self.train_set, cfg.prior_resolution, cfg.prior_floor, cfg.prior_logits)
            N, V = self.views["inputs"].shape[:2]
            # each training (object, input view) is paired with the nearest OTHER training object, as a test
            # image is with its nearest training object: the network learns to correct a retrieved shape
            owner = torch.arange(N, device=self.device).repeat_interleave(V)
            self.retrieved = nearest_objects(self.views["inputs"].flatten(0, 1), self.views["inputs"], owner).view(N, V)
        box_head = prior_boxes = None
        if cfg.prior_fit == "box":  # every training object's box, from its surface points (pointcloud.npz)
            self.boxes = torch.stack([BoxHead.boxes_of(self.train_set.pointcloud(i)[0].float()) for i in range(len(self.train_set))])
            # its own encoder of the model's kind; a floor on the spread (1% of the unit cube), since the
            # boxes' centres are all ~0 (objects are centred) and would otherwise be standardised by ~0
            box_head = BoxHead(build_dvr_networks(cfg.model)[1], cfg.model.c_dim, self.boxes.mean(0),
                               self.boxes.std(0).clamp_min(0.01))  # fmt: skip
            prior_boxes = self.boxes
            weights["box"] = t.box_weight
        self.system = SingleViewSystem(encoder, decoder, marcher, weights, prior,
                                       prior_persistent=cfg.shape_prior != "retrieval", box_head=box_head,
                                       prior_boxes=prior_boxes, occupancy_correction=cfg.occupancy_correction).to(self.device)  # fmt: skip
        self.model = self.wrap_ddp(self.system)
        self.my_share(t.batch_size)  # every rank needs an object of the batch
        self.optimizer = torch.optim.Adam(self.system.parameters(), lr=t.lr)
        self.log_every = t.log_every
        self.samples_per_step = t.batch_size * t.pixels
        self.start(mode)

    @property
    def total_iterations(self) -> int:
        return self.cfg.train.iterations

    def checkpoint_due(self) -> bool:
        return self.iteration % self.cfg.train.checkpoint_every == 0

    def n_steps(self, iteration: int | None = None) -> int:
        it = self.iteration if iteration is None else iteration
        m = self.cfg.marcher
        return m.init_steps * 2 ** sum(it >= s for s in m.step_milestones)

    @property
    def epoch(self) -> int:
        return self.iteration * self.cfg.train.batch_size // len(self.train_set)

    def lr_scale(self) -> float:
        t = self.cfg.train
        return t.lr_factor ** sum(self.epoch >= m for m in t.lr_milestones)

    def make_batch(self) -> dict:
        t, v = self.cfg.train, self.views
        N, V, H, W = v["image"].shape[:4]
        objs = torch.randint(N, (t.batch_size,), generator=self.gen)
        sup = torch.randint(V, (t.batch_size,), generator=self.gen)
        inp = torch.randint(V, (t.batch_size,), generator=self.gen)
        if self.object_pixels is None:  # DVR: uniform
            flat = torch.randint(H * W, (t.batch_size, t.pixels), generator=self.gen)
        else:  # a share of each view's pixels near its object
            flat = torch.stack([draw_pixels(H * W, t.pixels, self.object_pixels[int(objs[b]) * V + int(sup[b])],
                                            t.object_fraction, self.gen) for b in range(t.batch_size)])  # fmt: skip
        u = torch.rand(t.batch_size, t.pixels, 5, generator=self.gen)
        views = []
        for b in range(t.batch_size):
            i, k = int(objs[b]), int(sup[b])
            rows, cols = (flat[b] // W).to(self.device), (flat[b] % W).to(self.device)
            cam = Camera(v["K"][i, k : k + 1], v["T_cam_world"][i, k : k + 1], W, H)
            uv = torch.stack([cols, rows], -1).float() + 0.5
            z = v["depth"][i, k, rows, cols]
            # GT camera z -> ray distance t along the unit ray through the pixel
            _, d = cam.pixel_rays(uv[None])
            z_per_t = (d[0] * cam.R[0, 2]).sum(-1)
            ub = u[b].to(self.device)
            views.append({"camera": cam, "uv": uv, "rgb": v["image"][i, k, rows, cols], "mask": v["mask"][i, k, rows, cols],
                          "depth": z / z_per_t, "u_free": ub[:, 0], "u_occ": ub[:, 1], "u_neighbour": ub[:, 2:].contiguous(),
                          "prior_index": self.prior_index(i, int(inp[b]))})  # fmt: skip
        batch = {"inputs": v["inputs"][objs, inp], "views": views, "n_steps": self.n_steps()}
        if self.cfg.prior_fit == "box":
            batch["boxes"] = self.boxes[objs].to(self.device)
        if t.points_3d > 0:
            pick = [torch.randint(len(self.points_3d[int(i)]), (t.points_3d,), generator=self.gen) for i in objs]
            batch["points_3d"] = torch.stack([self.points_3d[int(i)][k] for i, k in zip(objs, pick)]).to(self.device)
            batch["occupancy_3d"] = torch.stack([self.occupancy_3d[int(i)][k] for i, k in zip(objs, pick)]).to(self.device)
        return batch

    def prior_index(self, obj: int, input_view: int) -> int | None:
        """The shape prior of training object `obj` seen through its input view `input_view`: its class
        (class_mean), the nearest other training object by that input image (retrieval), or None."""
        if self.cfg.shape_prior == "class_mean":
            return self.categories[obj]
        if self.cfg.shape_prior == "retrieval":
            return int(self.retrieved[obj, input_view])
        return None

    def train_step(self) -> dict[str, float]:
        """One step on the global batch of `make_batch`; under torchrun this rank computes its share of the
        objects. The system divides by the objects it sees (B_r), so the loss is scaled by B_r / B x ranks:
        DDP's gradient average is then the single-process gradient of the whole batch."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.cfg.train.lr * self.lr_scale()
        batch = self.make_batch()
        B = len(batch["views"])
        mine = self.my_share(B)
        if self.dist.distributed:
            batch = {k: v[mine.start : mine.stop] if k != "n_steps" else v for k, v in batch.items()}
        share = len(mine) / B
        with tdist.peer_failures("the gradient all-reduce"):
            terms = self.model(batch)
            self.optimizer.zero_grad(set_to_none=True)
            (terms["loss"] * (share * self.dist.world_size) if self.dist.distributed else terms["loss"]).backward()
        row = {k: float(v.detach()) if isinstance(v, torch.Tensor) else float(v) for k, v in terms.items()}
        if self.dist.distributed:  # the loss terms are this rank's share of the batch's; diagnostics: mean of the ranks
            row = {k: v * share if k in ("loss", "occupancy_3d", "box") or k in LOSS_TERMS else v for k, v in row.items()}
        row = self.reduce_row(row, sums=("loss", "evals", "occupancy_3d", "box", *LOSS_TERMS))
        self.check_loss(row)  # the reduced loss: every rank raises, before the step
        self.optimizer.step()
        return row

    def postfix(self, row: dict) -> dict:
        return {"loss": f"{row['loss']:.3f}", "mask": f"{row['mask_accuracy']:.3f}", "steps": self.n_steps(),
                "epoch": self.epoch, "rays": self.throughput()}  # fmt: skip

    def state(self) -> dict:
        return {"system": self.system.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state(self, s: dict) -> None:
        self.system.load_state_dict(s["system"])
        self.optimizer.load_state_dict(s["optimizer"])

    # -- generation and evaluation ---------------------------------------------------------------------

    def _eval_objects(self, ds: ShapeNetDataset) -> list[int]:
        cap = self.cfg.eval.max_instances
        seen: dict[int, int] = {}
        keep = []
        for i, (_, _, c) in enumerate(ds.models):
            if cap == 0 or seen.get(c, 0) < cap:
                keep.append(i)
                seen[c] = seen.get(c, 0) + 1
        return keep

    @torch.no_grad()
    def reconstruct(self, image: torch.Tensor, prior_index: int | None = None):
        """MISE mesh (unit-cube frame, vertex colours) of the decoder conditioned on `image [3, S, S]`, with
        shape prior `prior_index` (needed with a shape prior: see `prior_index`)."""
        m = self.cfg.mesh
        self.system.eval()
        code = self.system.encoder(image[None].to(self.device))[0]
        boxes = self.system.boxes(image[None].to(self.device))
        field = self.system.field(code, prior_index, None if boxes is None else boxes[0])
        with torch.enable_grad():  # the vertex refinement differentiates the field w.r.t. the points
            res = mise_extract(field, resolution_0=m.resolution_0, upsampling_steps=m.upsampling_steps,
                               threshold=m.threshold, refinement_steps=m.refinement_steps,
                               color_fn=lambda x: torch.sigmoid(field(x)[:, 1:4]), seed=self.cfg.seed)  # fmt: skip
        self.system.train()
        return res

    def export(self, progress: bool = True) -> dict:
        """Meshes of the held-out objects (generation/<synset>/<id>.ply), eval_meshes tables for the
        model and the retrieval baseline, and metrics.json with the per-class means."""
        import trimesh
        from tqdm import tqdm

        e = self.cfg.eval
        ds = load_split(self.cfg, e.split)
        ids = self._eval_objects(ds)
        t0 = time.time()
        rows, base_rows, mean_rows = [], [], []
        class_means = self.train_set.class_mean_meshes() if e.class_mean_baseline else {}
        with self.locked():
            bar = tqdm(
                ids,
                desc="dvr-single: generation + eval",
                unit="object",
                disable=not (progress and is_main_process()),
                leave=False,
            )
            for i in bar:
                item = ds.get(i, view=0, input_view=0)
                cls = ds.class_names[item["category"]]
                pts, nrm = ds.pointcloud(i)
                occ_pts, occ = ds.occupancy_points(i)
                j = int(nearest_objects(item["inputs"][None].to(self.device), self.views["inputs"])[0])  # retrieval
                prior = {"class_mean": self.train_set.class_names.index(cls), "retrieval": j}.get(self.cfg.shape_prior)
                res = self.reconstruct(item["inputs"], prior)
                if is_main_process():
                    save_mesh(res.mesh, self.out / "generation" / f"{item['model']}.ply")
                    from taichi_sdf.data.image_io import write_image

                    write_image(self.out / "generation" / f"{item['model']}_input.png", item["inputs"].permute(1, 2, 0))
                scores = evaluate_occnet(res.mesh, pts.numpy(), nrm.numpy(), occ_pts.numpy(), occ.numpy(), n_points=e.n_points,
                                         seed=self.cfg.seed, thresholds=(e.fscore_threshold,))  # fmt: skip
                rows.append({"class": cls, "model": item["model"], **scores})
                if e.retrieval_baseline:
                    mesh = trimesh.load(self.train_set.mesh_path(j), force="mesh", process=False)
                    scores = evaluate_occnet(mesh, pts.numpy(), nrm.numpy(), occ_pts.numpy(), occ.numpy(), n_points=e.n_points,
                                             seed=self.cfg.seed, thresholds=(e.fscore_threshold,))  # fmt: skip
                    base_rows.append({"class": cls, "model": item["model"], "retrieved": self.train_set.models[j][1], **scores})
                if e.class_mean_baseline:
                    mean_shape = class_means[self.train_set.class_names.index(cls)]
                    scores = evaluate_occnet(mean_shape, pts.numpy(), nrm.numpy(), occ_pts.numpy(), occ.numpy(), n_points=e.n_points,
                                             seed=self.cfg.seed, thresholds=(e.fscore_threshold,))  # fmt: skip
                    mean_rows.append({"class": cls, "model": item["model"], "threshold": mean_shape.metadata["threshold"], **scores})
            metrics: dict = {"iterations": self.iteration, "split": e.split, "objects": len(ids)}
            if is_main_process():
                write_eval_tables(rows, self.out, "eval_meshes")
                metrics["model"] = json.loads((self.out / "eval_meshes.json").read_text())
                if base_rows:
                    write_eval_tables(base_rows, self.out, "eval_meshes_retrieval")
                    metrics["retrieval_baseline"] = json.loads((self.out / "eval_meshes_retrieval.json").read_text())
                if mean_rows:
                    write_eval_tables(mean_rows, self.out, "eval_meshes_class_mean")
                    metrics["class_mean_baseline"] = json.loads((self.out / "eval_meshes_class_mean.json").read_text())
                metrics["export_seconds"] = time.time() - t0
                atomic_write_bytes(self.out / "metrics.json", json.dumps(metrics, indent=2, default=float).encode())
        return metrics


@app_main("python -m apps.dvr single")
def main(argv=None) -> dict:
    return train_and_export(argv, prog="python -m apps.dvr single", name="dvr single", description=__doc__.split("\n\n")[1].replace("\n", " "),
                            config_cls=SingleViewConfig, make_trainer=SingleViewTrainer, default_preset=DEFAULT_PRESET,
                            outputs="generation/, eval_meshes*.csv/json, metrics.json, log.csv, log.png, checkpoints/")  # fmt: skip
