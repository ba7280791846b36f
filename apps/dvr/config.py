"""Typed configuration of the DVR app; YAML presets live in configs/dvr/ (`dtu.yaml` cites DVR's
`configs/multi_view_reconstruction/*/ours_rgb.yaml` on top of `configs/default.yaml`, `cpu.yaml` is
small enough for 2 CPU cores)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from taichi_sdf.data.multiview.source import MultiViewDataConfig as DataConfig
from taichi_sdf.models.dvr import DVRModelConfig as ModelConfig
from taichi_sdf.train.config import check


@dataclass
class MarcherConfig:  # DVR im2mesh/dvr/models/depth_function.py DepthModule
    init_steps: int = 16  # init_resolution: proposals per ray at the start of training ...
    step_milestones: tuple[int, ...] = (50000, 100000, 250000)  # ... doubled at these iterations (16 -> 128)
    eval_steps: int = 128  # n_steps for evaluation ([128, 129])
    render_steps: int = 1024  # n_steps for renders and turntables (DVR rendering: [1024, 1025])
    n_secant_steps: int = 8
    method: Literal["secant", "bisection"] = "secant"
    depth_range: tuple[float, float] = (0.0, 2.4)  # t range (DVR frame) of rays that miss the cube
    coarse_stride: int = 1  # 1 = DVR's exact search; k > 1: coarse-to-fine over every k-th proposal (faster, >= 99.9% of DVR's masks measured)
    refine_margin: float = 8.0  # coarse search: intervals with an end within this many logits of the surface are searched finely

    def __post_init__(self) -> None:
        for key in ("init_steps", "eval_steps", "render_steps"):
            check(getattr(self, key) >= 2, key, ">= 2", getattr(self, key))
        check(self.n_secant_steps >= 0, "n_secant_steps", ">= 0", self.n_secant_steps)
        check(self.coarse_stride >= 1, "coarse_stride", ">= 1 (1 = DVR's exact search)", self.coarse_stride)
        check(self.refine_margin >= 0, "refine_margin", ">= 0 (logits)", self.refine_margin)
        check(all(m >= 0 for m in self.step_milestones), "step_milestones", "iterations >= 0", self.step_milestones)
        check(len(self.depth_range) == 2 and 0 <= self.depth_range[0] < self.depth_range[1], "depth_range",
              "(near, far) with 0 <= near < far", self.depth_range)  # fmt: skip


@dataclass
class TrainConfig:  # DVR im2mesh/dvr/training.py Trainer + configs/default.yaml, multi-view overrides
    # The RGB + mask variant ("ours_rgb"): the multi-view datasets carry no depth maps.
    epochs: int = 6000  # an epoch is one pass over the training images, one image per iteration
    pixels: int = 2048  # n_training_points (multi-view configs)
    patch_size: int = 2  # pixels are sampled as patch_size x patch_size patches (image-gradient loss)
    lr: float = 1e-4
    lr_milestones: tuple[int, ...] = (3000, 5000)  # epochs (scheduler_milestones, multi-view)
    lr_factor: float = 0.5  # scheduler_gamma
    rgb_weight: float = 1.0  # lambda_rgb
    image_gradient_weight: float = 1.0  # lambda_image_gradients (multi-view)
    normal_weight: float = 0.1  # lambda_normal (multi-view; 0.05 in default.yaml)
    freespace_weight: float = 1.0  # lambda_freespace
    occupied_weight: float = 1.0  # lambda_occupied
    always_freespace: bool = True
    checkpoint_every: int = 100  # epochs
    log_every: int = 10  # iterations

    def __post_init__(self) -> None:
        for key in ("epochs", "pixels", "patch_size", "checkpoint_every", "log_every"):
            check(getattr(self, key) >= 1, key, ">= 1", getattr(self, key))
        check(self.pixels % (self.patch_size**2) == 0, "pixels", f"a multiple of patch_size^2 = {self.patch_size**2}",
              self.pixels)  # fmt: skip
        for key in ("lr", "lr_factor"):
            check(getattr(self, key) > 0, key, "> 0", getattr(self, key))
        for key in ("rgb_weight", "image_gradient_weight", "normal_weight", "freespace_weight", "occupied_weight"):
            check(getattr(self, key) >= 0, key, ">= 0", getattr(self, key))
        check(self.image_gradient_weight == 0 or self.patch_size > 1, "image_gradient_weight",
              "0 when patch_size is 1 (the image-gradient loss needs patches)", self.image_gradient_weight)  # fmt: skip
        check(all(m >= 0 for m in self.lr_milestones), "lr_milestones", "epochs >= 0", self.lr_milestones)


@dataclass
class MeshConfig:  # DVR configs/default.yaml `generation` (multi-view: upsampling_steps 4)
    resolution_0: int = 32
    upsampling_steps: int = 4
    refinement_steps: int = 30
    threshold: float = 0.5  # occupancy probability of the surface (tau)

    def __post_init__(self) -> None:
        check(self.resolution_0 >= 2, "resolution_0", ">= 2", self.resolution_0)
        check(self.upsampling_steps >= 0, "upsampling_steps", ">= 0", self.upsampling_steps)
        check(self.refinement_steps >= 0, "refinement_steps", ">= 0", self.refinement_steps)
        check(0 < self.threshold < 1, "threshold", "a probability in (0, 1)", self.threshold)


@dataclass
class DVRConfig:
    model: ModelConfig = field(default_factory=lambda: ModelConfig(c_dim=0, encoder="none"))  # per scene: no code
    marcher: MarcherConfig = field(default_factory=MarcherConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    mesh: MeshConfig = field(default_factory=MeshConfig)
    out: str = "outputs/dvr"  # run folder
    viewer: bool = False  # serve a live browser view while training (needs viser: pip install .[viewer])
    viewer_host: str = "127.0.0.1"  # where the live view listens (127.0.0.1: this machine / SSH port-forward only)
    viewer_port: int = 8080  # the live view's port (the next free one if taken)
    arch: Literal["auto", "cpu", "cuda", "vulkan", "metal", "opengl"] = "auto"  # Taichi backend
    torch_threads: int = 0  # 0 = auto: the idle cores at start on <= 4 cores (see taichi_sdf.core.runtime.auto_torch_threads)
    dist_timeout_s: float = 300.0  # under torchrun: seconds a collective waits for the other ranks (a dead rank)
    seed: int = 0
    render_size: int = 0  # 0 = dataset resolution
    turntable_frames: int = 24
    gt: str | None = None  # ground-truth mesh or point cloud for Chamfer / F-score
    gt_frame: Literal["world", "normalized"] = "world"  # world (file units) | normalized (the dataset's unit-sphere frame)
    fscore_threshold: float = 0.01  # metrics are computed in the normalised (unit-sphere) frame

    def __post_init__(self) -> None:
        check(self.out.strip() != "", "out", "a run folder (an empty one would write into the current folder)", self.out)
        check(1 <= self.viewer_port <= 65535, "viewer_port", "a TCP port in 1..65535", self.viewer_port)
        check(self.torch_threads >= 0, "torch_threads", ">= 0 (0 = auto)", self.torch_threads)
        check(self.dist_timeout_s > 0, "dist_timeout_s", "> 0 seconds", self.dist_timeout_s)
        check(self.render_size >= 0, "render_size", ">= 0 (0 = dataset resolution)", self.render_size)
        check(self.turntable_frames >= 1, "turntable_frames", ">= 1", self.turntable_frames)
        check(self.fscore_threshold > 0, "fscore_threshold", "> 0", self.fscore_threshold)
        check(self.model.c_dim == 0, "model.c_dim", "0 for multi-view (per-scene, no encoder)", self.model.c_dim)
