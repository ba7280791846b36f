"""Typed configuration of `python -m apps.dibr fit` (multi-view mesh fitting); YAML presets live in
configs/dibr/ (`cpu.yaml` cites the recipes it takes its weights from: SoftRas `examples/demo_deform.py`
and DIB-R-Single-Image-3D-Reconstruction `train/train.py`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from taichi_sdf.data.multiview.source import MultiViewDataConfig as DataConfig
from taichi_sdf.train.config import check


@dataclass
class FitModelConfig:
    """The deformed mesh: a template, per-vertex offsets and an albedo (vertex colours or a UV texture)."""

    template: str = "icosphere"  # "icosphere" or a mesh file (OBJ/PLY/...), recentred and rescaled to template_radius
    icosphere_subdivisions: int = 3  # 3: 642 vertices / 1280 faces (DIB-R's sphere_3.obj)
    template_radius: float = 0.5  # bounding-sphere radius in the normalised frame (the object lies in the unit sphere)
    albedo: Literal["vertex", "texture"] = "vertex"  # per-vertex colours or a UV texture (spherical UVs for the icosphere)
    texture_size: int = 64  # texture side in texels (albedo=texture)
    init_color: float = 0.5  # initial albedo (grey)

    def __post_init__(self) -> None:
        check(self.template.strip() != "", "template", "icosphere or a mesh file", self.template)
        check(0 <= self.icosphere_subdivisions <= 6, "icosphere_subdivisions", "in [0, 6]", self.icosphere_subdivisions)
        check(
            0 < self.template_radius <= 1, "template_radius", "in (0, 1] (the unit sphere holds the object)", self.template_radius
        )
        check(self.texture_size >= 2, "texture_size", ">= 2", self.texture_size)
        check(0 < self.init_color < 1, "init_color", "in (0, 1) (colours are a sigmoid)", self.init_color)


@dataclass
class FitRenderConfig:
    """The rasterizer (`taichi_sdf.mesh.render.render_mesh`) and the lighting of the fit."""

    mode: Literal["dibr", "softras"] = "dibr"  # DIB-R: interpolated foreground + soft silhouette; SoftRas: soft everything
    shading: Literal["none", "lambert", "sh"] = "none"  # none: the albedo absorbs a fixed light (exact for Lambertian data)
    learn_light: bool = False  # optimise the light (lambert: colour/ambient; sh: 9x3 coefficients from the sun)
    sigmainv: float = 7000.0  # DIB-R soft mask sharpness, 1 / NDC^2 (Kaolin dibr_rasterization default)
    boxlen: float = 0.02  # DIB-R candidate-face box growth, NDC (Kaolin default)
    knum: int = 30  # DIB-R candidate faces per pixel (Kaolin default)
    sigma: float = 1e-4  # SoftRas sharpness, NDC^2 (demo_deform.py: sigma_val=1e-4)
    gamma: float = 1e-4  # SoftRas depth softmax temperature (SoftRas default)

    def __post_init__(self) -> None:
        for key in ("sigmainv", "boxlen", "sigma", "gamma"):
            check(getattr(self, key) > 0, key, "> 0", getattr(self, key))
        check(self.knum >= 1, "knum", ">= 1", self.knum)
        check(not (self.learn_light and self.shading == "none"), "learn_light", "false when shading is none", self.learn_light)


@dataclass
class RemeshConfig:
    """Coarse-to-fine: subdivide every face into four when the loss plateaus, carrying colours and uvs."""

    max_levels: int = 1  # subdivisions at most (0 = fixed topology); each multiplies the faces by 4
    method: Literal["midpoint", "loop"] = "midpoint"  # midpoint keeps the fitted surface; loop smooths it (vertex colours only)
    patience: int = 100  # iterations without a relative improvement of min_improvement in the smoothed loss
    min_improvement: float = 0.01  # relative, of the smoothed (EMA) total loss
    ema: float = 0.9  # smoothing of the loss that the plateau test watches
    min_iterations: int = 200  # at least this many iterations at each level
    lr_factor: float = 0.5  # learning rates are multiplied by this at each subdivision (smaller triangles)

    def __post_init__(self) -> None:
        check(self.max_levels >= 0, "max_levels", ">= 0", self.max_levels)
        for key in ("patience", "min_iterations"):
            check(getattr(self, key) >= 1, key, ">= 1", getattr(self, key))
        check(self.min_improvement >= 0, "min_improvement", ">= 0", self.min_improvement)
        check(0 <= self.ema < 1, "ema", "in [0, 1)", self.ema)
        check(self.lr_factor > 0, "lr_factor", "> 0", self.lr_factor)


@dataclass
class FitTrainConfig:
    iterations: int = 2000  # demo_deform.py: 2000
    views_per_step: int = 8  # training views rendered per iteration
    lr: float = 0.01  # vertex offsets (demo_deform.py: Adam 0.01, betas (0.5, 0.99))
    betas: tuple[float, float] = (0.5, 0.99)
    color_lr: float = 0.01  # vertex colours / texture (as logits)
    light_lr: float = 0.01
    train_cameras: bool = False  # refine per-view rotation + translation (PoseRefinement)
    camera_lr: float = 1e-4
    image_weight: float = 3.0  # masked image L1 (DIB-R train.py: 3.0)
    iou_weight: float = 1.0  # silhouette IoU (DIB-R and demo_deform: 1.0)
    laplacian_weight: float = 0.03  # on vertices, summed over vertices (demo_deform.py: 0.03; DIB-R: 0.01 on offsets)
    laplacian: Literal["uniform", "cotangent"] = "uniform"  # SoftRas' LaplacianLoss is uniform
    flatten_weight: float = 0.0003  # summed over edges (demo_deform.py: 0.0003; DIB-R: 0.001)
    edge_weight: float = 0.0  # edge length^2 (PyTorch3D mesh_edge_loss; not in DIB-R / SoftRas)
    normal_weight: float = 0.0  # 1 - cos between adjacent faces' normals (PyTorch3D)
    checkpoint_every: int = 500  # iterations
    log_every: int = 10  # iterations

    def __post_init__(self) -> None:
        for key in ("iterations", "views_per_step", "checkpoint_every", "log_every"):
            check(getattr(self, key) >= 1, key, ">= 1", getattr(self, key))
        for key in ("lr", "color_lr", "light_lr", "camera_lr"):
            check(getattr(self, key) > 0, key, "> 0", getattr(self, key))
        check(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "betas", "two floats in [0, 1)", self.betas)
        for key in ("image_weight", "iou_weight", "laplacian_weight", "flatten_weight", "edge_weight", "normal_weight"):
            check(getattr(self, key) >= 0, key, ">= 0", getattr(self, key))


@dataclass
class FitConfig:
    model: FitModelConfig = field(default_factory=FitModelConfig)
    render: FitRenderConfig = field(default_factory=FitRenderConfig)
    remesh: RemeshConfig = field(default_factory=RemeshConfig)
    train: FitTrainConfig = field(default_factory=FitTrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    out: str = "outputs/dibr_fit"  # run folder
    viewer: bool = False  # serve a live browser view while training (needs viser: pip install .[viewer])
    viewer_host: str = "127.0.0.1"  # where the live view listens (127.0.0.1: this machine / SSH port-forward only)
    viewer_port: int = 8080  # the live view's port (the next free one if taken)
    arch: Literal["auto", "cpu", "cuda", "vulkan", "metal", "opengl"] = "auto"  # Taichi backend
    torch_threads: int = 0  # 0 = auto: the idle cores at start on <= 4 cores (see taichi_sdf.core.runtime.auto_torch_threads)
    seed: int = 0
    render_size: int = 0  # turntable size, 0 = dataset resolution
    turntable_frames: int = 24
    gt: str | None = None  # ground-truth mesh or point cloud for Chamfer / F-score
    gt_frame: Literal["world", "normalized"] = "world"  # world (file units) | normalized (the dataset's unit-sphere frame)
    fscore_threshold: float = 0.01  # metrics are computed in the normalised (unit-sphere) frame

    def __post_init__(self) -> None:
        check(self.out.strip() != "", "out", "a run folder (an empty one would write into the current folder)", self.out)
        check(1 <= self.viewer_port <= 65535, "viewer_port", "a TCP port in 1..65535", self.viewer_port)
        check(self.torch_threads >= 0, "torch_threads", ">= 0 (0 = auto)", self.torch_threads)
        check(self.render_size >= 0, "render_size", ">= 0 (0 = dataset resolution)", self.render_size)
        check(self.turntable_frames >= 1, "turntable_frames", ">= 1", self.turntable_frames)
        check(self.fscore_threshold > 0, "fscore_threshold", "> 0", self.fscore_threshold)
        check(not (self.remesh.method == "loop" and self.model.albedo == "texture"), "remesh.method",
              "midpoint with albedo=texture (loop subdivision carries vertex data only)", self.remesh.method)  # fmt: skip
