"""Typed configuration of DVR's single-view reconstruction (`python -m apps.dvr single`); presets in
configs/dvr/ (`single_view.yaml` cites DVR's `configs/default.yaml` and
`single_view_reconstruction/multi_view_supervision/ours_combined.yaml`; `single_cpu.yaml` fits 2 CPU
cores)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from taichi_sdf.models.dvr import DVRModelConfig as ModelConfig
from taichi_sdf.train.config import check

from .config import MarcherConfig, MeshConfig


@dataclass
class SingleDataConfig:
    """DVR's ShapeNet layout (`<root>/<synset>/<id>/`), or the built-in generated one when `root` is null."""

    root: str | None = None  # a DVR/OccNet ShapeNet folder; null = generate the built-in classes once
    classes: tuple[str, ...] = ("chair", "table", "airplane")  # class names or synset ids
    input_folder: str = "img_choy2016"  # DVR img_folder_input
    input_size: int = 224  # DVR img_size_input
    instances: int = 40  # built-in: objects per class
    views: int = 12  # built-in: supervision renders per object (image/, mask/, depth/)
    size: int = 64  # built-in: render size
    seed: int = 0  # built-in: shape and camera seed
    points: int = 100000  # built-in: surface points (pointcloud.npz) and occupancy points (points.npz) per object (OccNet: 100k)

    def __post_init__(self) -> None:
        check(self.root is None or self.root.strip() != "", "root", "a dataset folder or null (the built-in one)", self.root)
        check(len(self.classes) >= 1, "classes", "at least one class", self.classes)
        for key in ("input_size", "instances", "views", "size", "points"):
            check(getattr(self, key) >= 1, key, ">= 1", getattr(self, key))


@dataclass
class SingleTrainConfig:  # DVR configs/default.yaml `training` + ours_combined (lambda_depth 10)
    iterations: int = 300000
    batch_size: int = 64  # objects per step, one random supervision view each
    pixels: int = 1024  # n_training_points per image
    # not in DVR (which samples uniformly, 0): the share of each view's pixels drawn in its mask grown by
    # object_margin pixels; thin objects cover ~7% of the built-in renders, so uniform draws are mostly background
    object_fraction: float = 0.0
    object_margin: int = 2  # pixels
    lr: float = 1e-4
    lr_milestones: tuple[int, ...] = (750, 1000)  # epochs over the training objects (DVR scheduler_milestones)
    lr_factor: float = 0.5
    rgb_weight: float = 1.0  # lambda_rgb
    depth_weight: float = 10.0  # lambda_depth (ours_combined; 0 = RGB only, "ours_rgb")
    normal_weight: float = 0.05  # lambda_normal
    freespace_weight: float = 1.0  # lambda_freespace
    occupied_weight: float = 1.0  # lambda_occupied
    # Not in DVR (whose single-view model sees 2D/2.5D supervision only): OccNet's 3D occupancy loss,
    # binary cross-entropy of the logit at `points_3d` points per object drawn from its points.npz
    # (OccNet: 2048), summed over the points, mean over the objects, times occupancy_3d_weight; 0 = off
    points_3d: int = 0
    occupancy_3d_weight: float = 1.0
    box_weight: float = 1.0  # with prior_fit=box: weight of the box head's L1 on standardised boxes
    checkpoint_every: int = 1000  # iterations
    log_every: int = 10

    def __post_init__(self) -> None:
        check(self.points_3d >= 0, "points_3d", ">= 0 (0 = no 3D occupancy loss)", self.points_3d)
        check(self.occupancy_3d_weight >= 0, "occupancy_3d_weight", ">= 0", self.occupancy_3d_weight)
        check(self.box_weight >= 0, "box_weight", ">= 0", self.box_weight)
        for key in ("iterations", "batch_size", "pixels", "checkpoint_every", "log_every"):
            check(getattr(self, key) >= 1, key, ">= 1", getattr(self, key))
        for key in ("lr", "lr_factor"):
            check(getattr(self, key) > 0, key, "> 0", getattr(self, key))
        for key in ("rgb_weight", "depth_weight", "normal_weight", "freespace_weight", "occupied_weight"):
            check(getattr(self, key) >= 0, key, ">= 0", getattr(self, key))
        check(all(m >= 0 for m in self.lr_milestones), "lr_milestones", "epochs >= 0", self.lr_milestones)
        check(0 <= self.object_fraction <= 1, "object_fraction", "a share in [0, 1]", self.object_fraction)
        check(self.object_margin >= 0, "object_margin", "pixels >= 0", self.object_margin)


@dataclass
class SingleEvalConfig:  # DVR/OccNet eval_meshes.py
    split: Literal["test", "val", "train"] = "test"
    max_instances: int = 0  # per class; 0 = all
    n_points: int = 100000  # points sampled on each predicted mesh
    fscore_threshold: float = 0.01
    retrieval_baseline: bool = True  # also score the nearest training object by input image
    class_mean_baseline: bool = True  # also score the class-mean shape of the training objects

    def __post_init__(self) -> None:
        check(self.max_instances >= 0, "max_instances", ">= 0 (0 = all)", self.max_instances)
        check(self.n_points >= 1, "n_points", ">= 1", self.n_points)
        check(self.fscore_threshold > 0, "fscore_threshold", "> 0", self.fscore_threshold)


@dataclass
class SingleViewConfig:
    model: ModelConfig = field(default_factory=ModelConfig)  # DVR: ResNet-18 encoder, c_dim 256, hidden 512
    marcher: MarcherConfig = field(default_factory=MarcherConfig)
    train: SingleTrainConfig = field(default_factory=SingleTrainConfig)
    data: SingleDataConfig = field(default_factory=SingleDataConfig)
    mesh: MeshConfig = field(default_factory=lambda: MeshConfig(upsampling_steps=3))
    eval: SingleEvalConfig = field(default_factory=SingleEvalConfig)
    out: str = "outputs/dvr_single"
    viewer: bool = False  # serve a live browser view while training (needs viser: pip install .[viewer])
    viewer_host: str = "127.0.0.1"  # where the live view listens (127.0.0.1: this machine / SSH port-forward only)
    viewer_port: int = 8080  # the live view's port (the next free one if taken)
    arch: Literal["auto", "cpu", "cuda", "vulkan", "metal", "opengl"] = "auto"
    torch_threads: int = 0  # 0 = auto
    dist_timeout_s: float = 300.0  # under torchrun: seconds a collective waits for the other ranks (a dead rank)
    seed: int = 0
    # Not in DVR ("none": DVR as published): the decoder's logit is added to a shape prior's logit, so the
    # network learns the object's difference from it. "class_mean": the logit of the class's mean training
    # occupancy (its zero set the class-mean shape), picked by the object's class label. "retrieval": the
    # occupancy of the training object whose input image is nearest (L2) to the object's input image (the
    # retrieval baseline's shape); in training, the nearest OTHER training object
    shape_prior: Literal["none", "class_mean", "retrieval"] = "none"
    prior_resolution: int = 64  # grid corners per axis of the prior over [-0.55, 0.55]^3
    # the prior's occupancy shares are clamped to [prior_floor, 1 - prior_floor]: its logits lie within
    # +-log((1 - floor) / floor) (0.01: +-4.6, a near-binary prior the decoder can hardly move; 0.25: +-1.1)
    prior_floor: float = 0.01
    # retrieval's per-object prior at the grid corners: "occupancy" (+-the floor's logit: the surface
    # lies halfway between corners, quantised to the grid's 0.0175 spacing at 64^3) or "distance" (the
    # signed distance to the object's mesh, scaled so the logit saturates 2 corners from the surface:
    # trilinear lookups then put the zero set on the surface, to within its curvature)
    prior_logits: Literal["occupancy", "distance"] = "occupancy"
    # Not in DVR: "box" adds a head that predicts the object's bounding box (log extents, centre) from
    # the image code, trained by L1 on the training objects' boxes (train.box_weight), and stretches the
    # retrieved prior from its own box to the predicted one per axis: retrieval finds a shape of the
    # right kind, the box gives it the proportions the image shows. "none": the prior as retrieved
    prior_fit: Literal["none", "box"] = "none"
    # false: the occupancy is the prior's alone (stretched to the predicted box with prior_fit=box), the
    # decoder gives colours only. Not a model setting: `--eval-only occupancy_correction=false` scores a
    # trained run's prior without its learned correction (on the built-in classes the correction trades
    # Chamfer and F-score for IoU: the README's DVR single-view row)
    occupancy_correction: bool = True

    def __post_init__(self) -> None:
        check(self.out.strip() != "", "out", "a run folder (an empty one would write into the current folder)", self.out)
        check(1 <= self.viewer_port <= 65535, "viewer_port", "a TCP port in 1..65535", self.viewer_port)
        check(self.torch_threads >= 0, "torch_threads", ">= 0 (0 = auto)", self.torch_threads)
        check(self.dist_timeout_s > 0, "dist_timeout_s", "> 0 seconds", self.dist_timeout_s)
        check(self.prior_resolution >= 8, "prior_resolution", ">= 8", self.prior_resolution)
        check(self.prior_fit == "none" or self.shape_prior == "retrieval", "prior_fit",
              "'none' unless shape_prior=retrieval (the box is fitted to a retrieved object's prior)", self.prior_fit)
        check(self.occupancy_correction or self.shape_prior != "none", "occupancy_correction",
              "true unless there is a shape prior (without one the decoder's logit is the whole shape)", self.occupancy_correction)
        check(0.0 < self.prior_floor < 0.5, "prior_floor", "a share in (0, 0.5)", self.prior_floor)
        check(self.model.c_dim > 0, "model.c_dim", "> 0 with an encoder (single-view DVR conditions on the image)",
              self.model.c_dim)  # fmt: skip
