"""Typed configuration of the DIST app (`python -m apps.dist MODE`); presets in configs/dist/
(`cpu.yaml` fits 2 CPU cores; `dist.yaml` holds the original's settings: `run_single_shape.py`,
`run_single_camera.py`, `run_multi_pmodata.py` and `SDFRenderer` of B1ueber2y/DIST-Renderer)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from taichi_sdf.models.texture import ColorDecoderConfig
from taichi_sdf.train.config import check


@dataclass
class ShapeModelConfig:
    """Where the trained DeepSDF model and its shapes come from (`python -m apps.deepsdf all`)."""

    experiment: str = "outputs/deepsdf"  # a DeepSDF experiment folder (config.yaml + checkpoints/)
    checkpoint: str = "latest"  # 'latest' or an epoch
    split: str = "test"  # held-out shapes (never seen in DeepSDF training): test | train | a split file
    max_shapes: int = 12  # the first N shapes of the split (0 = all)
    meshes: str | None = None  # folder with the split's meshes (<instance>.<ext>); null = <data root>/meshes

    def __post_init__(self) -> None:
        check(self.max_shapes >= 0, "max_shapes", ">= 0", self.max_shapes)


@dataclass
class ViewsConfig:
    """Synthetic observations rendered from the held-out meshes with the project's rasterizer."""

    views: int = 8  # views per shape (single-view modes use view 0)
    size: int = 64  # pixels (square images; a multiple of 4 for the pyramid)
    fov_deg: float = 45.0  # horizontal field of view
    radius: float = 2.5  # camera distance from the origin (the shape lies in the unit sphere)
    elevation_deg: tuple[float, float] = (10.0, 40.0)  # range of camera elevations
    depth_noise: float = 0.0  # std of Gaussian noise on the depth, relative to the depth (paper: noisy depth)
    depth_keep: float = 1.0  # share of depth pixels kept (paper: sparse depth; the rest marked missing)
    seed: int = 0

    def __post_init__(self) -> None:
        check(self.views >= 1, "views", ">= 1", self.views)
        check(self.size >= 8 and self.size % 4 == 0, "size", "a multiple of 4, >= 8", self.size)
        check(0 < self.fov_deg < 170, "fov_deg", "degrees in (0, 170)", self.fov_deg)
        check(self.radius > 1.0, "radius", "> 1 (outside the unit sphere)", self.radius)
        check(self.depth_noise >= 0, "depth_noise", ">= 0", self.depth_noise)
        check(0 < self.depth_keep <= 1, "depth_keep", "in (0, 1]", self.depth_keep)


@dataclass
class RenderConfig:
    """DIST's SDFRenderer settings (`core/sdfrenderer/renderer.py`; every demo passes march_step=100)."""

    march_steps: int = 100
    eps: float = 5e-5  # threshold
    alpha: float = 1.5  # ray_marching_ratio
    clamp: float = 0.1  # clamp_dist
    scales: tuple[int, ...] = (4, 2, 1)  # scale_list (pyramid_recursive)
    steps_per_scale: tuple[int, ...] = (3, 3, -1)  # march_step_list
    gradient: Literal["implicit", "approximate"] = "implicit"  # exact implicit gradient, or DIST's buffer
    buffer_size: int = 3  # DIST's approximate gradient: smallest-|f| samples kept per ray
    bound_radius: float = 1.0

    def __post_init__(self) -> None:
        check(self.march_steps >= 1, "march_steps", ">= 1", self.march_steps)
        check(self.buffer_size >= 1, "buffer_size", ">= 1", self.buffer_size)
        check(self.gradient in ("implicit", "approximate"), "gradient", "implicit | approximate", self.gradient)


@dataclass
class ShapeOptimConfig:
    """`run_single_shape.py`: Adam lr 1e-3, 200 iterations, weights 10 / 5 / 1 / 1 / 1."""

    iterations: int = 200
    lr: float = 1e-3
    init: Literal["random", "perturbed", "mean"] = "perturbed"  # N(0, std^2) | code from 3D samples + N(0, std^2) | zeros
    init_std: float = 0.1
    inputs: tuple[str, ...] = ("depth", "normal", "silhouette")  # which observations drive the fit
    depth_weight: float = 10.0
    normal_weight: float = 5.0
    mask_gt_weight: float = 1.0
    mask_out_weight: float = 1.0
    latent_weight: float = 1.0
    views: int = 1  # observed views per shape (1: single view)
    multiscale: bool = (
        False  # also render at 1/2 and 1/4 resolution (buffers 3 / 5), losses summed (run_single_shape --multiscale)
    )

    def __post_init__(self) -> None:
        check(self.iterations >= 0, "iterations", ">= 0", self.iterations)
        check(self.lr > 0, "lr", "> 0", self.lr)
        check(self.init in ("random", "perturbed", "mean"), "init", "random | perturbed | mean", self.init)
        bad = [i for i in self.inputs if i not in ("depth", "normal", "silhouette")]
        check(not bad and len(self.inputs) > 0, "inputs", "a non-empty subset of depth, normal, silhouette", self.inputs)
        check(self.views >= 1, "views", ">= 1", self.views)


@dataclass
class CameraOptimConfig:
    """`run_single_camera.py`: the shape is fixed, the camera (quaternion + translation) is fitted with
    Adam lr 5e-3 for 400 iterations, weights depth 10, normal 10, masks 1."""

    iterations: int = 400
    lr: float = 5e-3
    rotation: Literal["quaternion", "6d", "axis_angle"] = "quaternion"
    initial_errors_deg: tuple[float, ...] = (10.0, 20.0, 30.0, 45.0)  # the sweep of initial rotation errors
    translation_noise: float = 0.05  # std of the initial translation error (normalised units)
    trials: int = 2  # random initial poses per shape and error
    success_deg: float = 5.0  # final rotation error counted as a success
    depth_weight: float = 10.0
    normal_weight: float = 10.0
    mask_gt_weight: float = 1.0
    mask_out_weight: float = 1.0

    def __post_init__(self) -> None:
        check(self.iterations >= 0, "iterations", ">= 0", self.iterations)
        check(self.lr > 0, "lr", "> 0", self.lr)
        check(self.trials >= 1, "trials", ">= 1", self.trials)


@dataclass
class MultiViewConfig:
    """`run_multi_pmodata.py`: photometric warp loss (weight 5) over view pairs + latent L2 (1), Adam
    lr 1e-2, 20 epochs of 8 view pairs, random init N(0, 0.1^2); plus silhouettes."""

    epochs: int = 20
    pairs_per_epoch: int = 8
    lr: float = 1e-2
    warp_weight: float = 5.0
    mask_gt_weight: float = 1.0
    mask_out_weight: float = 1.0
    latent_weight: float = 1.0
    depth_threshold: float = 0.0316  # consistent-depth test of the warp: DIST (z_proj - z_j)^2 < 0.001, normalised units
    init: Literal["random", "mean"] = "random"  # DIST: random N(0, init_std^2); "mean": the mean training code
    init_std: float = 0.1
    similarity: bool = False  # also fit a Sim(3) world -> shape frame (DIST's real-data mode)
    data: str | None = None  # an IDR/DTU, NeRF or DVR folder to fit instead of the held-out shapes' renders
    max_views: int = 16  # training views of `data` used (evenly spread)
    similarity_noise: float = 0.0  # rough initial similarity: rotation (rad) / translation / log-scale noise

    def __post_init__(self) -> None:
        check(self.epochs >= 0, "epochs", ">= 0", self.epochs)
        check(self.pairs_per_epoch >= 1, "pairs_per_epoch", ">= 1", self.pairs_per_epoch)
        check(self.lr > 0, "lr", "> 0", self.lr)


@dataclass
class EvalConfig:
    points: int = 30000  # surface samples for Chamfer (DIST: 30k)
    resolution: int = 96  # marching-cubes resolution of the fitted shapes
    fscore_threshold: float = 0.01

    def __post_init__(self) -> None:
        check(self.points >= 100, "points", ">= 100", self.points)
        check(self.resolution >= 16, "resolution", ">= 16", self.resolution)


def _cpu_decoder() -> ColorDecoderConfig:
    return ColorDecoderConfig(latent_size=16, hidden=128, layers=4, latent_in=(2,), num_frequencies=4, use_shape_code=False)


@dataclass
class TextureConfig:
    """Colour decoder training, colour-code fitting and the lighting demo (sized for 2 CPU cores; the
    original's decoder is `ColorDecoderConfig()`, trained on its own renders of ShapeNet textures)."""

    decoder: ColorDecoderConfig = field(default_factory=_cpu_decoder)
    iterations: int = 1500  # decoder + training codes, Adam
    shapes_per_batch: int = 16
    points_per_shape: int = 512  # coloured surface points per shape and iteration
    max_surface_points: int = 20000  # surface samples kept per training shape
    lr: float = 2e-3  # decoder
    code_lr: float = 2e-3  # training colour codes
    code_init_std: float = 1.0  # N(0, (std / sqrt(latent_size))^2), DeepSDF's CodeInitStdDev
    code_reg: float = 1e-4  # mean(code^2) weight, DeepSDF's CodeRegularizationLambda
    fit_views: int = 4  # views that fit a held-out shape's colour code; the others are evaluated
    fit_iterations: int = 100
    fit_lr: float = 1e-2
    fit_code_reg: float = 1e-4
    demo_frames: int = 36  # light positions of the turntable (0 = no demo; DIST: 180)
    demo_size: int = 128  # demo image size (pixels)
    demo_elevation_deg: float = 25.0  # DIST's light elevation

    def __post_init__(self) -> None:
        check(self.iterations >= 0, "iterations", ">= 0", self.iterations)
        check(self.shapes_per_batch >= 1, "shapes_per_batch", ">= 1", self.shapes_per_batch)
        check(self.points_per_shape >= 1, "points_per_shape", ">= 1", self.points_per_shape)
        check(self.max_surface_points >= 1, "max_surface_points", ">= 1", self.max_surface_points)
        for key in ("lr", "code_lr", "fit_lr"):
            check(getattr(self, key) > 0, key, "> 0", getattr(self, key))
        for key in ("code_init_std", "code_reg", "fit_code_reg"):
            check(getattr(self, key) >= 0, key, ">= 0", getattr(self, key))
        check(self.fit_views >= 1, "fit_views", ">= 1", self.fit_views)
        check(self.fit_iterations >= 0, "fit_iterations", ">= 0", self.fit_iterations)
        check(self.demo_frames >= 0, "demo_frames", ">= 0", self.demo_frames)
        check(self.demo_size >= 8, "demo_size", ">= 8", self.demo_size)


@dataclass
class DISTConfig:
    shapes: ShapeModelConfig = field(default_factory=ShapeModelConfig)
    views: ViewsConfig = field(default_factory=ViewsConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    single: ShapeOptimConfig = field(default_factory=ShapeOptimConfig)
    camera: CameraOptimConfig = field(default_factory=CameraOptimConfig)
    multi: MultiViewConfig = field(default_factory=MultiViewConfig)
    texture: TextureConfig = field(default_factory=TextureConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    out: str = "outputs/dist"
    seed: int = 0
    torch_threads: int = 0  # 0 = auto (taichi_sdf.core.runtime.auto_torch_threads)
