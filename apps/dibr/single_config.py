"""Typed configuration of the single-image network (`python -m apps.dibr train|eval`); presets in
configs/dibr/ (`single_cpu.yaml`: the original's tiny conv encoder at 64 px on 2 CPU cores). Defaults
follow nv-tlabs/DIB-R-Single-Image-3D-Reconstruction `train/train.py` (ResNet-18 encoder c_dim 256,
DVR's decoder with hidden 512 and leaky ReLU, Adam 1e-4, 2 views per object, 3 x masked L1 + IoU +
0.01 Laplacian + 0.001 flatten) and its `chamfer/check_chamfer.py` (2500 points a side)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from taichi_sdf.train.config import check


@dataclass
class SingleImageDataConfig:
    """DVR's ShapeNet layout (`<root>/<synset>/<id>/`), or the built-in generated one when `root` is null.
    The built-in keys are those of `python -m apps.dvr single` (same values: same cache folder)."""

    root: str | None = None  # a DVR/OccNet ShapeNet folder; null = generate the built-in classes once
    classes: tuple[str, ...] = ("chair", "table", "airplane")  # class names or synset ids
    input_folder: str = "img_choy2016"  # DVR img_folder_input
    input_size: int = 224  # DVR img_size_input (the reimplementation feeds 224 px to the ResNet)
    instances: int = 40  # built-in: objects per class
    views: int = 12  # built-in: supervision renders per object
    size: int = 64  # built-in: render size
    seed: int = 0  # built-in: shape and camera seed
    points: int = 30000  # built-in: surface and occupancy points per object

    def __post_init__(self) -> None:
        check(self.root is None or self.root.strip() != "", "root", "a dataset folder or null (the built-in one)", self.root)
        check(len(self.classes) >= 1, "classes", "at least one class", self.classes)
        for key in ("input_size", "instances", "views", "size", "points"):
            check(getattr(self, key) >= 1, key, ">= 1", getattr(self, key))


@dataclass
class SingleImageModelConfig:
    """Encoder -> code; DVR's decoder at every template vertex -> 3 colour logits + 3 offsets."""

    encoder: Literal["resnet18", "conv"] = "resnet18"  # conv: DVR's ConvEncoder (needs >= 63 px input)
    encoder_weights: str | None = None  # local torchvision ResNet-18 weights; None = random init
    c_dim: int = 256
    hidden_size: int = 512
    n_blocks: int = 5
    leaky: bool = True  # the reimplementation's decoder uses leaky ReLU before fc_out
    icosphere_subdivisions: int = 3  # 642 vertices / 1280 faces (sphere_3.obj)
    # "sphere": the original's one icosphere for every class; "class_mean": one template per class, the
    # class-mean shape of the training objects (geometry.class_mean, as CMR's learned category mean
    # shape), picked by the object's class label, so the untrained network outputs the class mean
    template: Literal["sphere", "class_mean"] = "sphere"
    template_resolution: int = 40  # class_mean: grid corners per axis of the mean occupancy
    scale: float = 0.5  # every predicted mesh is recentred and rescaled so its largest |coordinate| is this

    def __post_init__(self) -> None:
        for key in ("c_dim", "hidden_size"):
            check(getattr(self, key) >= 1, key, ">= 1", getattr(self, key))
        check(self.n_blocks >= 0, "n_blocks", ">= 0", self.n_blocks)
        check(0 <= self.icosphere_subdivisions <= 5, "icosphere_subdivisions", "in [0, 5]", self.icosphere_subdivisions)
        check(0 < self.scale <= 1, "scale", "in (0, 1]", self.scale)
        check(self.template_resolution >= 8, "template_resolution", ">= 8", self.template_resolution)
        check(self.encoder_weights is None or self.encoder == "resnet18", "encoder_weights", "null unless encoder is resnet18",
              self.encoder_weights)  # fmt: skip


@dataclass
class SingleImageRenderConfig:  # Kaolin dibr_rasterization defaults
    sigmainv: float = 7000.0
    boxlen: float = 0.02
    knum: int = 30

    def __post_init__(self) -> None:
        check(self.sigmainv > 0, "sigmainv", "> 0", self.sigmainv)
        check(self.boxlen > 0, "boxlen", "> 0", self.boxlen)
        check(self.knum >= 1, "knum", ">= 1", self.knum)


@dataclass
class SingleImageTrainConfig:  # DIB-R-Single-Image-3D-Reconstruction train/train.py
    iterations: int = 470000  # results reported at 469,999
    batch_size: int = 32  # objects per step
    views_per_object: int = 2  # supervision views per object per step
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    image_weight: float = 3.0
    iou_weight: float = 1.0
    laplacian_weight: float = 0.01  # on the offsets
    flatten_weight: float = 0.001
    checkpoint_every: int = 10000
    log_every: int = 10

    def __post_init__(self) -> None:
        for key in ("iterations", "batch_size", "views_per_object", "checkpoint_every", "log_every"):
            check(getattr(self, key) >= 1, key, ">= 1", getattr(self, key))
        check(self.lr > 0, "lr", "> 0", self.lr)
        check(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "betas", "two floats in [0, 1)", self.betas)
        for key in ("image_weight", "iou_weight", "laplacian_weight", "flatten_weight"):
            check(getattr(self, key) >= 0, key, ">= 0", getattr(self, key))


@dataclass
class SingleImageEvalConfig:  # check_chamfer.py
    split: Literal["test", "val", "train"] = "test"
    max_instances: int = 0  # per class; 0 = all
    n_points: int = 2500  # points on each predicted mesh and ground-truth points drawn
    thresholds: tuple[float, ...] = (0.01, 0.015, 0.02, 0.025, 0.03, 0.035, 0.04, 0.045, 0.05)  # F-score
    input_view: int = 0  # the input image of each held-out object
    project_points: int = 100000  # points for the project's Chamfer-L1 / F-score@0.01 (DVR/OccNet: 100k)

    def __post_init__(self) -> None:
        check(self.max_instances >= 0, "max_instances", ">= 0 (0 = all)", self.max_instances)
        check(self.n_points >= 1, "n_points", ">= 1", self.n_points)
        check(len(self.thresholds) >= 1 and all(t > 0 for t in self.thresholds), "thresholds", "distances > 0",
              self.thresholds)  # fmt: skip
        check(self.input_view >= 0, "input_view", ">= 0", self.input_view)
        check(self.project_points >= 1, "project_points", ">= 1", self.project_points)


@dataclass
class SingleImageConfig:
    model: SingleImageModelConfig = field(default_factory=SingleImageModelConfig)
    render: SingleImageRenderConfig = field(default_factory=SingleImageRenderConfig)
    train: SingleImageTrainConfig = field(default_factory=SingleImageTrainConfig)
    data: SingleImageDataConfig = field(default_factory=SingleImageDataConfig)
    eval: SingleImageEvalConfig = field(default_factory=SingleImageEvalConfig)
    out: str = "outputs/dibr_single"
    viewer: bool = False  # serve a live browser view while training (needs viser: pip install .[viewer])
    viewer_host: str = "127.0.0.1"  # where the live view listens (127.0.0.1: this machine / SSH port-forward only)
    viewer_port: int = 8080  # the live view's port (the next free one if taken)
    arch: Literal["auto", "cpu", "cuda", "vulkan", "metal", "opengl"] = "auto"
    torch_threads: int = 0  # 0 = auto
    dist_timeout_s: float = 300.0  # under torchrun: seconds a collective waits for the other ranks (a dead rank)
    seed: int = 0

    def __post_init__(self) -> None:
        check(self.out.strip() != "", "out", "a run folder (an empty one would write into the current folder)", self.out)
        check(1 <= self.viewer_port <= 65535, "viewer_port", "a TCP port in 1..65535", self.viewer_port)
        check(self.torch_threads >= 0, "torch_threads", ">= 0 (0 = auto)", self.torch_threads)
        check(self.dist_timeout_s > 0, "dist_timeout_s", "> 0 seconds", self.dist_timeout_s)
        check(self.model.encoder != "conv" or self.data.input_size >= 63, "data.input_size",
              ">= 63 with the conv encoder (five unpadded stride-2 convs)", self.data.input_size)  # fmt: skip
