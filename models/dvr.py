"""DVR's networks (Niemeyer et al. 2020; autonomousvision/differentiable_volumetric_rendering, `im2mesh/`).

    decoder(points [B, M, 3], c [B, c_dim]) -> [B, M, 4]   column 0: occupancy logit, 1..3: RGB logits
    encoder(images [B, 3, H, W] in [0, 1]) -> c [B, c_dim]

The decoder is DVR's "simple" decoder (`dvr/models/decoder.py`): one network for the occupancy field
and the texture field. The outputs are logits: the occupancy probability is `sigmoid(out[..., 0])`
(DVR's `decode` wraps it in a Bernoulli(logits=...)), the surface is logit 0 (tau = 0.5), and colours
are `sigmoid(out[..., 1:4])` (DVR's `decode_color`; `DVRDecoder.rgb` here). Neither sigmoid is inside
`forward`, so `forward` and `field()` hand raw logits to marchers and MISE.

Encoders (`im2mesh/encoder/conv.py`): `ResNet18Encoder` (DVR's `Resnet18`: torchvision's ResNet-18
with its fc replaced by Linear(512, c_dim), ImageNet normalisation) written here in plain torch with
torchvision's parameter names, so a downloaded `resnet18-f37072fd.pth` loads from a local file (DVR
downloads it at run time; the default here is random init), and `ConvEncoder` (5 stride-2 convs, the
small CPU preset).

torch only; no side effects at import.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DVRDecoder", "ResnetBlockFC", "ResNet18Encoder", "ConvEncoder", "DVRModelConfig", "build_dvr_networks"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # im2mesh/common.py normalize_imagenet
IMAGENET_STD = (0.229, 0.224, 0.225)


# ----------------------------------------------------------------------------------------- decoder


class ResnetBlockFC(nn.Module):
    """Pre-activation residual block `x + fc_1(relu(fc_0(relu(x))))` of width `size`
    (`im2mesh/layers.py` ResnetBlockFC with size_in = size_out). `fc_1.weight` starts at zero (its bias
    keeps torch's default), so every block is the identity plus a constant at initialisation."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.fc_0 = nn.Linear(size, size)
        self.fc_1 = nn.Linear(size, size)
        nn.init.zeros_(self.fc_1.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [..., size] -> [..., size]
        return x + self.fc_1(torch.relu(self.fc_0(torch.relu(x))))


class DVRDecoder(nn.Module):
    """DVR's "simple" decoder: `fc_p` (3 -> hidden), `n_blocks` ResNet-FC blocks, ReLU, `fc_out`
    (hidden -> out_dim). With `c_dim > 0` the code enters before every block through its own linear
    layer (`fc_c[i](c)` is added to the hidden state). No positional encoding, no weight norm.
    Parameter names are DVR's (`fc_p`, `fc_c.i`, `blocks.i.fc_0/fc_1`, `fc_out`), so the `decoder.*`
    entries of a DVR checkpoint load with `load_state_dict`.

    Args:
        c_dim: length of the conditioning code (DVR default.yaml: 256; multi-view: 0 = unconditioned).
        hidden_size: width (DVR: 512; the README suggests 128 for small GPUs).
        n_blocks: residual blocks (DVR: 5).
        out_dim: 4 = occupancy + RGB logits; 1 = occupancy only (DVR's `ours_depth` configs).
        leaky: LeakyReLU(0.2) before `fc_out` instead of ReLU (DVR's `leaky`, default False; the blocks
            always use ReLU, as in the original).
    """

    def __init__(
        self, c_dim: int = 256, hidden_size: int = 512, n_blocks: int = 5, out_dim: int = 4, leaky: bool = False
    ) -> None:
        super().__init__()
        for name, value, low in (
            ("c_dim", c_dim, 0),
            ("hidden_size", hidden_size, 1),
            ("n_blocks", n_blocks, 0),
            ("out_dim", out_dim, 1),
        ):
            if not isinstance(value, int) or value < low:
                raise ValueError(f"{name}: expected an int >= {low}, got {value!r}")
        self.c_dim, self.hidden_size, self.n_blocks, self.out_dim = c_dim, hidden_size, n_blocks, out_dim
        self.leaky = bool(leaky)
        self.fc_p = nn.Linear(3, hidden_size)
        self.fc_c = nn.ModuleList([nn.Linear(c_dim, hidden_size) for _ in range(n_blocks)]) if c_dim > 0 else None
        self.blocks = nn.ModuleList([ResnetBlockFC(hidden_size) for _ in range(n_blocks)])
        self.fc_out = nn.Linear(hidden_size, out_dim)

    def forward(self, points: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """Logits at `points`:
        - `points [B, M, 3]`, `c [B, c_dim]` (one code per batch element) -> `[B, M, out_dim]`;
        - `points [M, 3]`, `c [c_dim]` (one code for all) or `[M, c_dim]` (one per point) -> `[M, out_dim]`.
        `c` is None (or has 0 columns) exactly when `c_dim` is 0."""
        if not isinstance(points, torch.Tensor):
            raise TypeError(f"points: expected a torch.Tensor, got {type(points).__name__}")
        if points.dim() not in (2, 3) or points.shape[-1] != 3:
            raise ValueError(f"points: expected shape [M, 3] or [B, M, 3], got {list(points.shape)}")
        net = self.fc_p(points)
        code = self._code(points, c)
        for i, block in enumerate(self.blocks):
            if code is not None:
                net = net + self.fc_c[i](code)
            net = block(net)
        act = F.leaky_relu(net, 0.2) if self.leaky else torch.relu(net)
        return self.fc_out(act)

    def _code(self, points: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor | None:
        """`c` shaped to broadcast against the hidden state `[..., hidden]` (None when unconditioned)."""
        if c is None or (isinstance(c, torch.Tensor) and c.shape[-1] == 0 and self.c_dim == 0):
            if self.c_dim > 0:
                raise ValueError(f"c: the decoder has c_dim={self.c_dim}, so a code [B, {self.c_dim}] is required, got None")
            return None
        if not isinstance(c, torch.Tensor):
            raise TypeError(f"c: expected a torch.Tensor or None, got {type(c).__name__}")
        if self.c_dim == 0:
            raise ValueError(f"c: the decoder is unconditioned (c_dim=0), got a code of shape {list(c.shape)}")
        lead = list(points.shape[:-1])
        if points.dim() == 3 and c.shape == (lead[0], self.c_dim):
            return c.unsqueeze(1)  # [B, 1, c_dim]
        if points.dim() == 2 and c.shape in ((self.c_dim,), (lead[0], self.c_dim)):
            return c
        want = f"[{lead[0]}, {self.c_dim}]" if points.dim() == 3 else f"[{self.c_dim}] or [{lead[0]}, {self.c_dim}]"
        raise ValueError(f"c: expected shape {want} for points of shape {list(points.shape)}, got {list(c.shape)}")

    def rgb(self, points: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """Colours in [0, 1]: `sigmoid` of columns 1..3 (DVR's `decode_color`). Shapes as `forward`, `[..., 3]`."""
        if self.out_dim < 4:
            raise ValueError(f"rgb: the decoder has out_dim={self.out_dim} (occupancy only); colours need out_dim >= 4")
        return torch.sigmoid(self(points, c)[..., 1:4])

    def field(self, c: torch.Tensor | None = None):
        """The decoder closed over one code as a field callable `points [M, 3] -> [M, out_dim]` (column 0
        the occupancy logit, positive inside, surface at 0), the contract of `march_field` and MISE.
        `c [c_dim]` or `[1, c_dim]`; None when `c_dim` is 0."""
        if c is not None and isinstance(c, torch.Tensor) and c.dim() == 2 and c.shape[0] == 1:
            c = c[0]
        if c is not None and (not isinstance(c, torch.Tensor) or c.dim() != 1):
            shape = list(c.shape) if isinstance(c, torch.Tensor) else type(c).__name__
            raise ValueError(f"c: expected one code of shape [{self.c_dim}] or [1, {self.c_dim}], got {shape}")
        if c is None and self.c_dim > 0:
            raise ValueError(f"c: the decoder has c_dim={self.c_dim}, so field() needs one code [{self.c_dim}]")
        return lambda x: self(x, None if c is None else c.to(x))


# ----------------------------------------------------------------------------------------- encoders


class BasicBlock(nn.Module):
    """ResNet basic block (two 3x3 convs + BN, projection shortcut when the shape changes), with
    torchvision's attribute names so its state_dict keys match (`conv1`, `bn1`, `conv2`, `bn2`,
    `downsample.0`, `downsample.1`)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet18Encoder(nn.Module):
    """DVR's `Resnet18` encoder: images `[B, 3, H, W]` (RGB in [0, 1]) -> codes `[B, c_dim]`.

    The standard ResNet-18 (conv 7x7/2, max-pool 3x3/2, four stages of two basic blocks with 64, 128,
    256, 512 channels, global average pool), then `fc = Linear(512, c_dim)` in place of the
    classifier. Random init (torchvision's: Kaiming-normal fan-out convs, BN weight 1 / bias 0) unless
    `weights_path` names a local torchvision ResNet-18 state_dict (e.g. `resnet18-f37072fd.pth`, what
    DVR's `models.resnet18(pretrained=True)` downloads): every key but `fc.*` must match by name and
    shape; `fc` stays randomly initialised (DVR replaces the classifier too).

    Args:
        c_dim: code length (DVR default.yaml: 256).
        normalize: apply ImageNet mean/std normalisation first (DVR: True).
        weights_path: optional local file with torchvision ResNet-18 weights.
    """

    def __init__(self, c_dim: int = 256, normalize: bool = True, weights_path: str | os.PathLike | None = None) -> None:
        super().__init__()
        if not isinstance(c_dim, int) or c_dim < 1:
            raise ValueError(f"c_dim: expected an int >= 1, got {c_dim!r}")
        self.c_dim, self.normalize = c_dim, bool(normalize)
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        widths = (64, 64, 128, 256, 512)
        for stage in range(1, 5):
            stride = 1 if stage == 1 else 2
            blocks = [BasicBlock(widths[stage - 1], widths[stage], stride), BasicBlock(widths[stage], widths[stage], 1)]
            setattr(self, f"layer{stage}", nn.Sequential(*blocks))
        self.fc = nn.Linear(512, c_dim)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if weights_path is not None:
            self.load_torchvision_weights(weights_path)

    def load_torchvision_weights(self, weights_path: str | os.PathLike) -> None:
        """Load a torchvision ResNet-18 state_dict from a local file (all keys but `fc.*`, strictly).
        Raises FileNotFoundError for a missing file and ValueError naming the keys that do not match."""
        path = os.fspath(weights_path)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"weights_path: no file at {path!r} (expected torchvision ResNet-18 weights such as resnet18-f37072fd.pth)"
            )
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a truncated download or not a torch file at all
            raise ValueError(f"weights_path: {path!r} is not a readable torch state_dict ({exc})") from exc
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ValueError(f"weights_path: {path!r} does not hold a state_dict (a dict of tensors)")
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        # num_batches_tracked is absent from the older torchvision files; BatchNorm fills it in.
        own = {k: v for k, v in self.state_dict().items() if not k.startswith("fc.")}
        missing = sorted(k for k in own if k not in state and not k.endswith("num_batches_tracked"))
        unexpected = sorted(k for k in state if k not in own)
        wrong = sorted(
            f"{k} {list(state[k].shape)} (expected {list(own[k].shape)})"
            for k in state
            if k in own and state[k].shape != own[k].shape
        )
        if missing or unexpected or wrong:
            parts = [f"{label}: {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}" for label, keys in
                     (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", wrong)) if keys]  # fmt: skip
            raise ValueError(f"weights_path: {path!r} is not a torchvision ResNet-18 state_dict; " + "; ".join(parts))
        self.load_state_dict(state, strict=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Codes `[B, c_dim]` of `images [B, 3, H, W]` (RGB in [0, 1])."""
        _check_images(images)
        x = (images - self.mean) / self.std if self.normalize else images
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(x.mean(dim=(2, 3)))


class ConvEncoder(nn.Module):
    """DVR's `ConvEncoder`: five 3x3 stride-2 convs without padding (3 -> 32 -> 64 -> 128 -> 256 -> 512
    channels, ReLU between), mean over the remaining pixels, ReLU, `Linear(512, c_dim)`. No input
    normalisation (as the original). Images `[B, 3, H, W]` with H, W >= 63 -> codes `[B, c_dim]`."""

    MIN_SIZE = 63  # five unpadded 3x3/2 convs leave one pixel of a 63-pixel side

    def __init__(self, c_dim: int = 128) -> None:
        super().__init__()
        if not isinstance(c_dim, int) or c_dim < 1:
            raise ValueError(f"c_dim: expected an int >= 1, got {c_dim!r}")
        self.c_dim = c_dim
        widths = (3, 32, 64, 128, 256, 512)
        for i in range(5):  # DVR's names (conv0 .. conv4, fc_out), so its checkpoints load
            setattr(self, f"conv{i}", nn.Conv2d(widths[i], widths[i + 1], 3, stride=2))
        self.fc_out = nn.Linear(512, c_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Codes `[B, c_dim]` of `images [B, 3, H, W]`."""
        _check_images(images)
        if min(images.shape[2:]) < self.MIN_SIZE:
            raise ValueError(f"images: ConvEncoder needs H, W >= {self.MIN_SIZE}, got {list(images.shape)}")
        x = self.conv0(images)
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            x = conv(torch.relu(x))
        return self.fc_out(torch.relu(x.flatten(2).mean(dim=2)))


class BoxHead(nn.Module):
    """The object's axis-aligned bounding box from its image: an image encoder of its own (`encoder`,
    images `[B, 3, S, S]` -> `[B, c_dim]`), ReLU, `Linear(c_dim, 6)` predicting the standardised (log
    extents, centre) of the box; `mean, std [6]` (buffers, saved with the model) are the training objects'
    statistics that undo the standardisation. Not in DVR: it lets a retrieved shape prior be stretched to
    the proportions the image shows (`shape_prior=retrieval`, `prior_fit=box`)."""

    def __init__(self, encoder: nn.Module, c_dim: int, mean: torch.Tensor | None = None,
                 std: torch.Tensor | None = None) -> None:  # fmt: skip
        super().__init__()
        self.encoder = encoder
        self.fc = nn.Linear(c_dim, 6)
        self.register_buffer("mean", torch.zeros(6) if mean is None else mean.detach().float().clone())
        self.register_buffer("std", torch.ones(6) if std is None else std.detach().float().clone())

    @staticmethod
    def boxes_of(points: torch.Tensor) -> torch.Tensor:
        """`[6]` (log extents, centre) of the bounding box of `points [M, 3]`."""
        lo, hi = points.min(0).values, points.max(0).values
        return torch.cat([(hi - lo).clamp_min(1e-6).log(), (hi + lo) / 2])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Standardised boxes `[B, 6]` of `images [B, 3, S, S]`; `box(...)` turns them into (log extents, centre)."""
        return self.fc(torch.relu(self.encoder(images)))

    def box(self, standardised: torch.Tensor) -> torch.Tensor:
        """(log extents, centre) `[..., 6]` of standardised boxes `[..., 6]`."""
        return standardised * self.std.to(standardised.dtype) + self.mean.to(standardised.dtype)

    def standardise(self, boxes: torch.Tensor) -> torch.Tensor:
        return (boxes - self.mean.to(boxes.dtype)) / self.std.to(boxes.dtype)


def _check_images(images) -> None:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images: expected a torch.Tensor, got {type(images).__name__}")
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images: expected shape [B, 3, H, W], got {list(images.shape)}")


# ----------------------------------------------------------------------------------------- config


@dataclass
class DVRModelConfig:
    """DVR's `model` section (configs/default.yaml; multi-view configs: c_dim 0, encoder null)."""

    hidden_size: int = 512  # decoder width (DVR: 512; README tip: 128 for small GPUs)
    n_blocks: int = 5  # ResNet-FC blocks of the decoder
    c_dim: int = 256  # code length; 0 = per-scene (multi-view) model without encoder
    out_dim: int = 4  # 4 = occupancy + RGB; 1 = occupancy only (DVR ours_depth)
    leaky: bool = False  # LeakyReLU(0.2) before the output layer
    encoder: Literal["resnet18", "conv", "none"] = "resnet18"  # "resnet18" | "conv" | "none" (DVR: resnet18; multi-view: null)
    encoder_weights: str | None = None  # local torchvision ResNet-18 weights (DVR downloads them); None = random init

    def __post_init__(self) -> None:  # a ValueError with config_key/reason: the loader names the dotted key
        rules = [
            ("hidden_size", self.hidden_size >= 1, ">= 1"),
            ("n_blocks", self.n_blocks >= 0, ">= 0"),
            ("c_dim", self.c_dim >= 0, ">= 0"),
            ("out_dim", self.out_dim >= 1, ">= 1 (4 = occupancy + RGB, 1 = occupancy only)"),
            ("encoder", self.encoder in ("resnet18", "conv", "none"), "one of 'resnet18', 'conv', 'none'"),
            (
                "c_dim",
                (self.c_dim == 0) == (self.encoder == "none"),
                "0 exactly when encoder is 'none' (the code comes from the encoder)",
            ),
            ("encoder_weights", self.encoder_weights is None or self.encoder == "resnet18", "null unless encoder is 'resnet18'"),
        ]
        for key, ok, expected in rules:
            if not ok:
                err = ValueError(f"config key '{key}': expected {expected}, got {getattr(self, key)!r}")
                err.config_key, err.reason = key, f"expected {expected}, got {getattr(self, key)!r}"
                raise err


def build_dvr_networks(cfg: DVRModelConfig) -> tuple[DVRDecoder, nn.Module | None]:
    """The decoder and the encoder (None for `encoder: none`) of `cfg`."""
    decoder = DVRDecoder(cfg.c_dim, cfg.hidden_size, cfg.n_blocks, cfg.out_dim, cfg.leaky)
    if cfg.encoder == "resnet18":
        encoder = ResNet18Encoder(cfg.c_dim, normalize=True, weights_path=cfg.encoder_weights)
    elif cfg.encoder == "conv":
        encoder = ConvEncoder(cfg.c_dim)
    else:
        encoder = None
    return decoder, encoder
