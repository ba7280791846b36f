"""Typed configuration of the IDR app; YAML presets live in configs/idr/ (`dtu.yaml` cites the
original `confs/dtu_fixed_cameras.conf`, `cpu.yaml` is small enough for 2 CPU cores)."""

from __future__ import annotations

from dataclasses import dataclass, field

from taichi_sdf.data.multiview.source import MultiViewDataConfig as DataConfig
from taichi_sdf.models.idr import IDRModelConfig as ModelConfig


@dataclass
class TracerConfig:  # IDR ray_tracer conf
    eps: float = 5e-5  # sdf_threshold
    sphere_tracing_iters: int = 10
    line_step_iters: int = 3
    n_steps: int = 100
    n_secant_steps: int = 8
    min_sdf_samples: int = 100  # the mask loss's minimum-SDF search on rays that miss


@dataclass
class TrainConfig:
    epochs: int = 2000  # an epoch is one pass over the training images, one image per iteration
    pixels: int = 2048  # random pixels per iteration (IDR: num_pixels 2048)
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


@dataclass
class IDRConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    tracer: TracerConfig = field(default_factory=TracerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    out: str = "outputs/idr"
    arch: str = "auto"
    torch_threads: int = 0  # 0 = auto (1 on <= 4 cores: torch's and Taichi's thread pools oversubscribe)
    seed: int = 0
    mesh_resolution: int = 256
    render_size: int = 0  # 0 = dataset resolution
    turntable_frames: int = 24
    gt: str | None = None  # ground-truth mesh or point cloud for Chamfer / F-score
    gt_frame: str = "world"  # world (file units) | normalized (the dataset's unit-sphere frame)
    fscore_threshold: float = 0.01  # metrics are computed in the normalised (unit-sphere) frame
