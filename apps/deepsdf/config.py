"""Typed configuration of the DeepSDF app. Presets live in configs/deepsdf/: `specs.yaml` carries the
original `examples/*/specs.json` values (facebookresearch/DeepSDF) and the defaults below are the same;
`cpu.yaml` trains on the built-in shape family on 2 CPU cores. A DeepSDF `specs.json` can be read
with `specs_to_overrides` (the `--specs` option of `train`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from taichi_sdf.models.deepsdf import DeepSDFModelConfig as ModelConfig
from taichi_sdf.train.config import check, validate_config


@dataclass
class Schedule:  # one entry of the original's LearningRateSchedule
    type: Literal["step", "warmup", "constant"] = "step"
    initial: float = 5e-4  # step / warmup: the lr at epoch 0; constant: the lr
    interval: int = 500  # step: multiply by `factor` every `interval` epochs
    factor: float = 0.5
    final: float = 5e-4  # warmup: the lr reached after `length` epochs
    length: int = 1

    def __post_init__(self) -> None:
        check(self.initial > 0, "initial", "a learning rate > 0", self.initial)
        if self.type == "step":
            check(self.interval >= 1, "interval", ">= 1", self.interval)
            check(self.factor > 0, "factor", "> 0", self.factor)
        if self.type == "warmup":
            check(self.length >= 1, "length", ">= 1", self.length)
            check(self.final > 0, "final", "a learning rate > 0", self.final)

    def lr(self, epoch: int) -> float:
        if self.type == "step":
            return self.initial * self.factor ** (epoch // self.interval)
        if self.type == "warmup":
            return self.initial + (self.final - self.initial) * min(1.0, epoch / self.length)
        return self.initial


@dataclass
class TrainConfig:
    epochs: int = 2001  # NumEpochs (epochs are numbered 1..epochs, as in the original)
    scenes_per_batch: int = 64  # ScenesPerBatch (batches of fewer shapes are dropped, as drop_last=True)
    samples_per_scene: int = 16384  # SamplesPerScene, half from `pos` and half from `neg`
    batch_split: int = 1  # forward/backward the batch in this many chunks (gradients accumulate)
    clamp: float = 0.1  # ClampingDistance, on prediction and ground truth
    code_reg: bool = True  # CodeRegularization
    code_reg_lambda: float = 1e-4  # CodeRegularizationLambda
    code_reg_warmup: int = 100  # lambda is scaled by min(1, epoch / code_reg_warmup)
    decoder_lr: Schedule = field(default_factory=lambda: Schedule("step", 5e-4, 500, 0.5))
    latent_lr: Schedule = field(default_factory=lambda: Schedule("step", 1e-3, 500, 0.5))
    grad_clip: float | None = None  # GradientClipNorm on the decoder
    snapshot_every: int = 1000  # SnapshotFrequency: keep checkpoints/<epoch>.pt every this many epochs
    snapshots: tuple[int, ...] = (100, 500)  # AdditionalSnapshots
    checkpoint_every: int = 10  # LogFrequency: refresh checkpoints/latest.pt every this many epochs

    def __post_init__(self) -> None:
        for key, least in (("epochs", 1), ("scenes_per_batch", 1), ("samples_per_scene", 2), ("batch_split", 1),
                           ("code_reg_warmup", 1), ("checkpoint_every", 1), ("snapshot_every", 1)):  # fmt: skip
            check(getattr(self, key) >= least, key, f">= {least}", getattr(self, key))
        check(self.clamp > 0, "clamp", "> 0", self.clamp)
        check(self.code_reg_lambda >= 0, "code_reg_lambda", ">= 0", self.code_reg_lambda)
        check(self.grad_clip is None or self.grad_clip > 0, "grad_clip", "> 0 or null", self.grad_clip)


@dataclass
class DataConfig:
    root: str = "outputs/deepsdf/data"  # DataSource: SdfSamples/, SurfaceSamples/, NormalizationParameters/, splits/
    train_split: str | None = None  # TrainSplit JSON; None = the single <root>/splits/*_train.json
    test_split: str | None = None  # TestSplit JSON; None = the single <root>/splits/*_test.json
    sample_args: str = ""  # `all`: arguments of `sample` (built-in chairs) when <root>/splits has no split yet


@dataclass
class ReconstructConfig:  # reconstruct.py of the original
    iterations: int = 800
    lr: float = 5e-3
    lr_decay_every: int = 400  # lr /= lr_decay every this many iterations (the original: iterations / 2)
    lr_decay: float = 10.0
    samples: int = 8000  # per iteration, half pos / half neg
    init_std: float = 0.01
    code_reg: float = 1e-4  # weight of mean(z^2)
    resolution: int = 256  # marching cubes samples per axis over [-1, 1]^3
    chunk_size: int = 2**18  # points per decoder call when meshing
    partial_direction: tuple[float, float, float] = (0.0, 0.0, 1.0)  # --partial keeps samples with x . d >= offset
    partial_offset: float = 0.0

    def __post_init__(self) -> None:
        for key, least in (("iterations", 1), ("samples", 2), ("lr_decay_every", 1), ("resolution", 2), ("chunk_size", 1)):
            check(getattr(self, key) >= least, key, f">= {least}", getattr(self, key))
        for key in ("lr", "lr_decay"):
            check(getattr(self, key) > 0, key, "> 0", getattr(self, key))
        check(self.init_std >= 0, "init_std", ">= 0", self.init_std)
        check(self.code_reg >= 0, "code_reg", ">= 0", self.code_reg)
        d = self.partial_direction
        check(sum(x * x for x in d) > 0, "partial_direction", "a non-zero vector", d)


@dataclass
class EvaluateConfig:  # evaluate.py of the original (+ our Chamfer-L1 / F-score)
    points: int = 30000  # points sampled on each reconstruction (the GT SurfaceSamples hold 30k)
    fscore_threshold: float = 0.01  # in the normalised unit-sphere frame
    seed: int = 0

    def __post_init__(self) -> None:
        check(self.points >= 1, "points", ">= 1", self.points)
        check(self.fscore_threshold > 0, "fscore_threshold", "> 0", self.fscore_threshold)


@dataclass
class DeepSDFConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    reconstruct: ReconstructConfig = field(default_factory=ReconstructConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    out: str = "outputs/deepsdf"  # the experiment directory
    viewer: bool = False  # serve a live browser view while training (needs viser: pip install .[viewer])
    viewer_host: str = "127.0.0.1"  # where the live view listens (127.0.0.1: this machine / SSH port-forward only)
    viewer_port: int = 8080  # the live view's port (the next free one if taken)
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto = cuda when torch sees a GPU
    torch_threads: int = 0  # 0 = auto: the idle cores at start on <= 4 cores (see taichi_sdf.core.runtime.auto_torch_threads)
    dist_timeout_s: float = 300.0  # under torchrun: seconds a collective waits for the other ranks (a dead rank)
    seed: int = 0

    def __post_init__(self) -> None:
        check(self.out.strip() != "", "out", "an experiment folder (an empty one would write into the current folder)", self.out)
        check(1 <= self.viewer_port <= 65535, "viewer_port", "a TCP port in 1..65535", self.viewer_port)
        check(self.torch_threads >= 0, "torch_threads", ">= 0 (0 = auto)", self.torch_threads)
        check(self.dist_timeout_s > 0, "dist_timeout_s", "> 0 seconds", self.dist_timeout_s)


def check_config(cfg: DeepSDFConfig) -> None:
    """Kept for callers: the value checks now run in the dataclasses' `__post_init__` whenever a config
    is built; this re-runs them on `cfg` (errors name the key), e.g. after editing its attributes."""
    validate_config(cfg)


# -- the original's specs.json ----------------------------------------------------------------------------

_NETWORK_KEYS = {"dims": "model.dims", "dropout": "model.dropout", "dropout_prob": "model.dropout_prob",
                 "norm_layers": "model.norm_layers", "latent_in": "model.latent_in", "weight_norm": "model.weight_norm"}  # fmt: skip
_TOP_KEYS = {
    "CodeLength": "model.latent_size", "CodeBound": "model.code_bound", "CodeInitStdDev": "model.code_init_std",
    "NumEpochs": "train.epochs", "SnapshotFrequency": "train.snapshot_every", "AdditionalSnapshots": "train.snapshots",
    "SamplesPerScene": "train.samples_per_scene", "ScenesPerBatch": "train.scenes_per_batch",
    "ClampingDistance": "train.clamp", "CodeRegularization": "train.code_reg",
    "CodeRegularizationLambda": "train.code_reg_lambda", "GradientClipNorm": "train.grad_clip",
    "LogFrequency": "train.checkpoint_every", "DataSource": "data.root", "TrainSplit": "data.train_split",
    "TestSplit": "data.test_split",
}  # fmt: skip
# Keys that do not change what is computed here (or name the only architecture there is).
_IGNORED = {"Description", "NetworkArch", "DataLoaderThreads", "CodeTargetStdDev", "xyz_in_all", "use_tanh", "latent_dropout"}


def specs_to_overrides(path: str | Path) -> list[str]:
    """`key=value` overrides equivalent to a DeepSDF `specs.json`. Unknown keys are errors naming the
    file; `xyz_in_all` / `latent_dropout` set to true are refused (not implemented here)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: specs file not found")
    try:
        specs = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    out: list[str] = []

    def add(key: str, value) -> None:
        out.append(f"{key}={json.dumps(value)}")

    for k, v in specs.items():
        if k == "NetworkSpecs":
            for nk, nv in v.items():
                if nk in ("xyz_in_all", "latent_dropout") and nv:
                    raise ValueError(f"{path}: NetworkSpecs.{nk}=true is not implemented by this decoder")
                if nk in _NETWORK_KEYS:
                    add(_NETWORK_KEYS[nk], nv)
                elif nk not in _IGNORED:
                    raise ValueError(f"{path}: unknown key NetworkSpecs.{nk}")
        elif k == "LearningRateSchedule":
            if not isinstance(v, list) or len(v) != 2:
                raise ValueError(f"{path}: LearningRateSchedule must list two schedules (decoder, latent codes)")
            for name, s in zip(("train.decoder_lr", "train.latent_lr"), v):
                kind = str(s.get("Type", "")).lower()
                if kind not in ("step", "warmup", "constant"):
                    raise ValueError(f"{path}: LearningRateSchedule Type {s.get('Type')!r} (expected Step, Warmup or Constant)")
                add(f"{name}.type", kind)
                if kind == "constant":
                    add(f"{name}.initial", s["Value"])
                else:
                    add(f"{name}.initial", s["Initial"])
                if kind == "step":
                    add(f"{name}.interval", s["Interval"])
                    add(f"{name}.factor", s["Factor"])
                if kind == "warmup":
                    add(f"{name}.final", s["Final"])
                    add(f"{name}.length", s["Length"])
        elif k in _TOP_KEYS:
            if k == "CodeRegularization" or v is not None:
                add(_TOP_KEYS[k], v)
        elif k not in _IGNORED:
            raise ValueError(f"{path}: unknown key {k!r}")
    return out
