"""DIST's colour decoder (`renderer_rgb`, Liu et al. 2020): a DeepSDF-style auto-decoder for surface colour.

    c(z_c, x) -> rgb in (0, 1),   z_c: colour code [N, latent_size] or [latent_size], x: points [N, 3]

An MLP on [z_c, (z_s), gamma(x)] with `layers` hidden ReLU layers of width `hidden`; the layers listed
in `latent_in` take the full input again, concatenated to the previous layer's output, as in
DeepSDF's decoder. That previous layer is narrowed by the input's width less the colour code's, so a
re-injecting layer is `hidden + latent_size` wide: DIST's `load_decoder(color_size=...)` widens
DeepSDF's `dims[3]` by the colour code's length. gamma is an optional NeRF-style positional
encoding (`num_frequencies` = 0: the raw points, as in the original). A final sigmoid maps to RGB.

The original (B1ueber2y/DIST-Renderer `core/utils/decoder_utils.py` `load_decoder(color_size=...)`
and `decode_color`) reuses DeepSDF's `Decoder` with `last_dim=3` on the input [shape code 256,
colour code 256, xyz] (the layer before the re-injection widened by the colour code's 256), 8 x 512,
latent_in (4,), and the decoder's final tanh. Here the shape code is optional (`shape_latent_size`
> 0 feeds it, 0 leaves it out) and the output is a sigmoid (colours in [0, 1] rather than [-1, 1]).
`ColorDecoderConfig()`'s defaults are the original's sizes.

torch only; no side effects at import.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from taichi_sdf.models.embedder import PositionalEncoding

__all__ = ["ColorDecoder", "ColorDecoderConfig", "build_color_decoder"]


class ColorDecoder(nn.Module):
    """The colour decoder.

    Args:
        latent_size: length of a colour code (DIST: `--color_size` 256).
        hidden: width of the hidden layers (DIST: DeepSDF's 512).
        layers: number of hidden layers (DIST: DeepSDF's 8).
        latent_in: hidden layer indices (>= 1) that re-concatenate the input (DIST: (4,)).
        num_frequencies: positional-encoding frequencies of the points (0: raw xyz, as DIST).
        shape_latent_size: length of a shape code fed beside the colour code (DIST: 256; 0: none).
    """

    def __init__(
        self,
        latent_size: int = 256,
        hidden: int = 512,
        layers: int = 8,
        latent_in: Sequence[int] = (4,),
        num_frequencies: int = 0,
        shape_latent_size: int = 0,
    ) -> None:
        super().__init__()
        if latent_size < 0:
            raise ValueError(f"latent_size: expected >= 0, got {latent_size}")
        if shape_latent_size < 0:
            raise ValueError(f"shape_latent_size: expected >= 0, got {shape_latent_size}")
        if hidden < 1 or layers < 1:
            raise ValueError(f"hidden, layers: expected >= 1, got {hidden}, {layers}")
        self.latent_size, self.shape_latent_size = int(latent_size), int(shape_latent_size)
        self.latent_in = tuple(int(i) for i in latent_in)
        bad = [i for i in self.latent_in if not 1 <= i < layers]
        if bad:
            raise ValueError(f"latent_in: expected hidden layer indices in 1..{layers - 1}, got {bad}")
        self.encoding = PositionalEncoding(3, num_frequencies)
        self.in_dim = self.latent_size + self.shape_latent_size + self.encoding.d_out
        widths = [int(hidden)] * layers + [3]
        self.layers = nn.ModuleList()
        width_in = self.in_dim
        for i, width in enumerate(widths):
            if i in self.latent_in:
                width_in += self.in_dim
            # a layer followed by a re-injection gives up the input's width less the colour code's
            out = width - (self.in_dim - self.latent_size) if (i + 1) in self.latent_in else width
            if out < 1:
                raise ValueError(f"hidden: {hidden} is too narrow to re-concatenate the {self.in_dim}-wide input")
            self.layers.append(nn.Linear(width_in, out))
            width_in = out

    def forward(self, code: torch.Tensor, points: torch.Tensor, shape_code: torch.Tensor | None = None) -> torch.Tensor:
        """RGB `[N, 3]` in (0, 1) at `points [N, 3]` for the colour `code [N, latent_size]` or
        `[latent_size]` (broadcast), and, when `shape_latent_size > 0`, `shape_code` likewise."""
        if not isinstance(points, torch.Tensor) or points.dim() != 2 or points.shape[1] != 3:
            raise ValueError(f"points: expected a tensor of shape [N, 3], got {_shape(points)}")
        parts = [self._codes("code", code, self.latent_size, points.shape[0])]
        if self.shape_latent_size:
            if shape_code is None:
                raise ValueError(f"shape_code: this decoder takes a shape code of length {self.shape_latent_size}")
            parts.append(self._codes("shape_code", shape_code, self.shape_latent_size, points.shape[0]))
        elif shape_code is not None:
            raise ValueError("shape_code: this decoder takes no shape code (shape_latent_size = 0)")
        inp = torch.cat([*(p.to(points.dtype) for p in parts), self.encoding(points)], dim=1)
        x = inp
        last = len(self.layers) - 1
        for i, lin in enumerate(self.layers):
            if i in self.latent_in:
                x = torch.cat([x, inp], dim=1)
            x = lin(x)
            if i < last:
                x = torch.relu(x)
        return torch.sigmoid(x)

    @staticmethod
    def _codes(name: str, code, size: int, n: int) -> torch.Tensor:
        if not isinstance(code, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(code).__name__}")
        if code.dim() == 1 and code.shape[0] == size:
            return code.expand(n, -1)
        if code.dim() == 2 and code.shape == (n, size):
            return code
        raise ValueError(f"{name}: expected shape [{size}] or [{n}, {size}], got {list(code.shape)}")


def _shape(x) -> str:
    return str(list(x.shape)) if isinstance(x, torch.Tensor) else type(x).__name__


@dataclass
class ColorDecoderConfig:
    """The colour decoder's sizes; the defaults are DIST's (`demo_lighting.py --color_size 256` on
    DeepSDF's NetworkSpecs 8 x 512, latent_in (4,), raw xyz, the shape code fed too)."""

    latent_size: int = 256  # colour code length (--color_size)
    hidden: int = 512
    layers: int = 8
    latent_in: tuple[int, ...] = (4,)
    num_frequencies: int = 0  # positional encoding of the points (0 = raw xyz)
    use_shape_code: bool = True  # feed the shape's DeepSDF code beside the colour code

    def __post_init__(self) -> None:  # a ValueError with config_key/reason: the loader names the dotted key
        rules = [
            ("latent_size", self.latent_size >= 1, ">= 1"),
            ("hidden", self.hidden >= 1, ">= 1"),
            ("layers", self.layers >= 1, ">= 1"),
            ("latent_in", all(1 <= i < self.layers for i in self.latent_in), f"layers in 1..{self.layers - 1}"),
            ("num_frequencies", self.num_frequencies >= 0, ">= 0"),
        ]
        for key, ok, expected in rules:
            if not ok:
                err = ValueError(f"config key '{key}': expected {expected}, got {getattr(self, key)!r}")
                err.config_key, err.reason = key, f"expected {expected}, got {getattr(self, key)!r}"
                raise err


def build_color_decoder(cfg: ColorDecoderConfig, shape_latent_size: int = 0) -> ColorDecoder:
    """The decoder of `cfg`; `shape_latent_size` is the DeepSDF code length (used when
    `cfg.use_shape_code`)."""
    return ColorDecoder(cfg.latent_size, cfg.hidden, cfg.layers, cfg.latent_in, cfg.num_frequencies,
                        shape_latent_size if cfg.use_shape_code else 0)  # fmt: skip
