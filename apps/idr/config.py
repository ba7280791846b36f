"""Typed configuration of the IDR app; YAML presets live in configs/idr/ (`dtu.yaml` cites the
original `confs/dtu_fixed_cameras.conf`, `cpu.yaml` is small enough for 2 CPU cores)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from taichi_sdf.data.multiview.source import MultiViewDataConfig as DataConfig
from taichi_sdf.models.idr import IDRModelConfig as ModelConfig
from taichi_sdf.train.config import check


@dataclass
class TracerConfig:  # IDR ray_tracer conf
    eps: float = 5e-5  # sdf_threshold
    sphere_tracing_iters: int = 10
    line_step_iters: int = 3
    n_steps: int = 100
    n_secant_steps: int = 8
    min_sdf_samples: int = 100  # the mask loss's minimum-SDF search on rays that miss

    def __post_init__(self) -> None:
        check(self.eps > 0, "eps", "> 0", self.eps)
        for key in ("sphere_tracing_iters", "n_steps", "min_sdf_samples"):
            check(getattr(self, key) >= 1, key, ">= 1", getattr(self, key))
        for key in ("line_step_iters", "n_secant_steps"):
            check(getattr(self, key) >= 0, key, ">= 0", getattr(self, key))


@dataclass
class TrainConfig:
    epochs: int = 2000  # an epoch is one pass over the training images, one image per iteration
    pixels: int = 2048  # random pixels per iteration (IDR: num_pixels 2048)
    # Share of each iteration's pixels drawn inside the view's mask grown by object_margin pixels, the
    # rest uniform over the image. 0 = IDR's uniform sampling. Objects that fill a fifth of the frame
    # (a turntable capture) otherwise spend ~80% of the rays on background, which only the mask loss uses.
    object_fraction: float = 0.0
    object_margin: int = 4  # pixels
    lr: float = 1e-4
    lr_milestones: tuple[int, ...] = (1000, 1500)  # epochs (IDR sched_milestones)
    lr_factor: float = 0.5
    rgb_weight: float = 1.0
    eikonal_weight: float = 0.1
    mask_weight: float = 100.0
    alpha: float = 50.0  # mask loss sharpness, doubled at each alpha milestone
    alpha_milestones: tuple[int, ...] = (250, 500, 750, 1000, 1250)
    alpha_factor: float = 2.0
    eikonal_points: int = 1024  # uniform points in the bounding cube per iteration (plus the ray points)
    train_cameras: bool = False  # refine per-image rotation + translation deltas
    camera_lr: float = 1e-4
    checkpoint_every: int = 100  # epochs
    log_every: int = 10  # iterations

    def __post_init__(self) -> None:
        for key in ("epochs", "pixels", "checkpoint_every", "log_every"):
            check(getattr(self, key) >= 1, key, ">= 1", getattr(self, key))
        for key in ("lr", "camera_lr", "lr_factor", "alpha", "alpha_factor"):
            check(getattr(self, key) > 0, key, "> 0", getattr(self, key))
        check(0 <= self.object_fraction <= 1, "object_fraction", "a share in [0, 1]", self.object_fraction)
        check(self.object_margin >= 0, "object_margin", ">= 0 pixels", self.object_margin)
        for key in ("rgb_weight", "eikonal_weight", "mask_weight", "eikonal_points"):
            check(getattr(self, key) >= 0, key, ">= 0", getattr(self, key))
        for key in ("lr_milestones", "alpha_milestones"):
            check(all(m >= 0 for m in getattr(self, key)), key, "epochs >= 0", getattr(self, key))


@dataclass
class IDRConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    tracer: TracerConfig = field(default_factory=TracerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    out: str = "outputs/idr"  # run folder
    viewer: bool = False  # serve a live browser view while training (needs viser: pip install .[viewer])
    viewer_host: str = "127.0.0.1"  # where the live view listens (127.0.0.1: this machine / SSH port-forward only)
    viewer_port: int = 8080  # the live view's port (the next free one if taken)
    arch: Literal["auto", "cpu", "cuda", "vulkan", "metal", "opengl"] = "auto"  # Taichi backend
    torch_threads: int = 0  # 0 = auto: the idle cores at start on <= 4 cores (see taichi_sdf.core.runtime.auto_torch_threads)
    dist_timeout_s: float = 300.0  # under torchrun: seconds a collective waits for the other ranks (a dead rank)
    seed: int = 0
    mesh_resolution: int = 256
    # Marching cubes evaluates the SDF only within this many cell diagonals of the surface (refined from
    # a coarse lattice; the same mesh as the dense grid while |grad f| <= it); 0 = every grid point.
    mesh_narrow_band: float = 2.0
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
        check(self.mesh_resolution >= 2, "mesh_resolution", ">= 2", self.mesh_resolution)
        check(self.mesh_narrow_band >= 0, "mesh_narrow_band", ">= 0 cell diagonals (0 = dense grid)", self.mesh_narrow_band)
        check(self.render_size >= 0, "render_size", ">= 0 (0 = dataset resolution)", self.render_size)
        check(self.turntable_frames >= 1, "turntable_frames", ">= 1", self.turntable_frames)
        check(self.fscore_threshold > 0, "fscore_threshold", "> 0", self.fscore_threshold)
