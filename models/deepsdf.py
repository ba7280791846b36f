"""DeepSDF's auto-decoder (Park et al. 2019; `networks/deep_sdf_decoder.py` of facebookresearch/DeepSDF).

    f(z, x) -> sdf in (-1, 1),   z: latent code [N, latent_size], x: points [N, 3] (unit sphere)

An MLP on the concatenation [z, x] with `len(dims)` hidden ReLU layers; the layers listed in
`latent_in` take the full input [z, x] again, concatenated to the previous layer's output (which is
narrowed to `dims[i] - (latent_size + 3)` so the width stays `dims[i]`). Hidden layers listed in
`norm_layers` get weight normalisation (or LayerNorm when `weight_norm=False`), those in `dropout` get
dropout (active in train mode only). A final tanh is always applied, as in the original (its `th`
module runs whatever `use_tanh` says), so |f| < 1 and training clamps targets to +-0.1 anyway.

The codes live in `LatentCodes`: an `nn.Embedding(num_shapes, latent_size)` initialised N(0,
(code_init_std / sqrt(latent_size))^2) (CodeInitStdDev 1.0) whose rows the trainer renormalises to
`code_bound` (CodeBound 1.0) before each batch looks them up (`renorm_`; the original's max_norm).

torch only; no side effects at import.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["DeepSDFDecoder", "LatentCodes"]

ORIGINAL_DIMS = (512,) * 8


class DeepSDFDecoder(nn.Module):
    """The DeepSDF decoder.

    Args:
        latent_size: length of a shape code (DeepSDF: 256).
        dims: widths of the hidden layers (DeepSDF: 8 x 512).
        latent_in: hidden layer indices that re-concatenate the input [z, x] (DeepSDF: (4,)).
        dropout: hidden layer indices with dropout; None = all hidden layers (DeepSDF: all eight);
            `()` or `dropout_prob=0` = none.
        dropout_prob: dropout probability (DeepSDF: 0.2).
        norm_layers: hidden layer indices that are normalised; None = all (DeepSDF: all eight).
        weight_norm: weight normalisation on `norm_layers` (DeepSDF: True); False uses LayerNorm
            after those layers instead, as the original does.
    """

    def __init__(
        self,
        latent_size: int = 256,
        dims: Sequence[int] = ORIGINAL_DIMS,
        latent_in: Sequence[int] = (4,),
        dropout: Sequence[int] | None = None,
        dropout_prob: float = 0.2,
        norm_layers: Sequence[int] | None = None,
        weight_norm: bool = True,
    ) -> None:
        super().__init__()
        dims = [int(d) for d in dims]
        if latent_size < 0:
            raise ValueError(f"latent_size: expected >= 0, got {latent_size}")
        if not dims or any(d < 1 for d in dims):
            raise ValueError(f"dims: expected a non-empty list of positive widths, got {dims}")
        if not 0.0 <= dropout_prob < 1.0:
            raise ValueError(f"dropout_prob: expected a probability in [0, 1), got {dropout_prob}")
        in_dim = latent_size + 3
        self.latent_size = int(latent_size)
        self.latent_in = tuple(int(i) for i in latent_in)
        every = range(len(dims))
        self.dropout = tuple(int(i) for i in (every if dropout is None else dropout))
        self.dropout_prob = float(dropout_prob)
        self.norm_layers = tuple(int(i) for i in (every if norm_layers is None else norm_layers))
        self.weight_norm = bool(weight_norm)
        for name, idx in (("latent_in", self.latent_in), ("dropout", self.dropout), ("norm_layers", self.norm_layers)):
            bad = [i for i in idx if not 0 <= i < len(dims)]
            if bad:
                raise ValueError(f"{name}: layer indices {bad} outside the {len(dims)} hidden layers")
        if 0 in self.latent_in:
            raise ValueError("latent_in: layer 0 already takes the input; use indices >= 1")

        widths = [in_dim] + dims + [1]
        self.layers = nn.ModuleList()
        self.layer_norms = nn.ModuleDict()
        for i in range(len(widths) - 1):
            # A layer followed by a re-injection gives up (latent_size + 3) outputs to the input.
            out = widths[i + 1] - in_dim if (i + 1) in self.latent_in else widths[i + 1]
            if out < 1:
                raise ValueError(f"dims[{i + 1}] = {widths[i + 1]} is too narrow to re-concatenate the {in_dim}-wide input")
            lin = nn.Linear(widths[i], out)
            hidden = i < len(dims)
            if hidden and i in self.norm_layers:
                if self.weight_norm:
                    lin = nn.utils.parametrizations.weight_norm(lin)
                else:
                    self.layer_norms[str(i)] = nn.LayerNorm(out)
            self.layers.append(lin)
        # Zero output bias: torch's default U(+-1/sqrt(width)) can put every initial prediction
        # beyond the training clamp (+-0.1) for narrow nets, where the clamped L1 has no gradient at
        # all (width 32: up to 0.18). At DeepSDF's width 512 the default is within +-0.044 anyway.
        nn.init.zeros_(self.layers[-1].bias)

    def forward(self, latent: torch.Tensor, xyz: torch.Tensor) -> torch.Tensor:
        """SDF `[N]` at points `xyz [N, 3]` of the shapes `latent [N, latent_size]` (or `[latent_size]`,
        broadcast to every point)."""
        if xyz.dim() != 2 or xyz.shape[1] != 3:
            raise ValueError(f"xyz: expected points of shape [N, 3], got {list(xyz.shape)}")
        if latent.dim() == 1:
            latent = latent.expand(xyz.shape[0], -1)
        if latent.dim() != 2 or latent.shape != (xyz.shape[0], self.latent_size):
            raise ValueError(f"latent: expected shape [{xyz.shape[0]}, {self.latent_size}] or [{self.latent_size}], got {list(latent.shape)}")
        return self.forward_input(torch.cat([latent, xyz], dim=1))

    def forward_input(self, inp: torch.Tensor) -> torch.Tensor:
        """SDF `[N]` of the concatenated input `[N, latent_size + 3]` ([z, x], the original's layout)."""
        x = inp
        last = len(self.layers) - 1
        for i, lin in enumerate(self.layers):
            if i in self.latent_in:
                x = torch.cat([x, inp], dim=1)
            x = lin(x)
            if i < last:
                if str(i) in self.layer_norms:
                    x = self.layer_norms[str(i)](x)
                x = torch.relu(x)
                if i in self.dropout and self.dropout_prob > 0:
                    x = nn.functional.dropout(x, p=self.dropout_prob, training=self.training)
        return torch.tanh(x[:, 0])

    def field(self, latent: torch.Tensor):
        """The SDF of one shape as a field callable for renderers and meshing: points `[N, 3]` -> `[N]`.
        `latent [latent_size]`."""
        if latent.dim() != 1 or latent.shape[0] != self.latent_size:
            raise ValueError(f"latent: expected one code of shape [{self.latent_size}], got {list(latent.shape)}")
        return lambda x: self(latent.to(x), x)


class LatentCodes(nn.Module):
    """One trainable code per training shape, `weight [num_shapes, latent_size]`, initialised
    N(0, (init_std / sqrt(latent_size))^2), with a norm bound `code_bound` (None = unbounded).

    The original's `nn.Embedding(max_norm=code_bound)` renormalises the looked-up rows in place inside
    forward. Under DistributedDataParallel that side effect runs on each rank's own rows only and the
    ranks' codes drift apart, so here forward is a plain lookup and the trainer calls `renorm_(rows)`
    before the forward on the rows the whole (global) batch looks up, identically on every rank. It
    uses the same op as nn.Embedding (`torch.embedding_renorm_`), so single-process training is
    bit-identical to the in-forward renorm."""

    def __init__(self, num_shapes: int, latent_size: int, code_bound: float | None = 1.0, init_std: float = 1.0) -> None:
        super().__init__()
        if num_shapes < 1:
            raise ValueError(f"num_shapes: expected >= 1, got {num_shapes}")
        if code_bound is not None and not code_bound > 0:
            raise ValueError(f"code_bound: expected > 0 or None, got {code_bound}")
        self.code_bound = code_bound
        self.embedding = nn.Embedding(num_shapes, latent_size)
        nn.init.normal_(self.embedding.weight, 0.0, init_std / math.sqrt(max(latent_size, 1)))

    @property
    def weight(self) -> torch.Tensor:
        """All codes `[num_shapes, latent_size]`."""
        return self.embedding.weight

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        """Codes `[N, latent_size]` of shape indices `[N]` (int64); no renorm here (see `renorm_`)."""
        return self.embedding(indices)

    @torch.no_grad()
    def renorm_(self, indices: torch.Tensor | None = None) -> None:
        """Scale the rows `indices [K]` (None = all) whose L2 norm exceeds `code_bound` down to it, in place,
        as nn.Embedding(max_norm=code_bound) does at lookup (norm / (norm + 1e-7) of the bound). No-op
        without a bound."""
        if self.code_bound is None:
            return
        w = self.embedding.weight
        if indices is None:
            indices = torch.arange(w.shape[0], device=w.device)
        torch.embedding_renorm_(w, indices.to(w.device).contiguous(), float(self.code_bound), 2.0)


@dataclass
class DeepSDFModelConfig:
    """The decoder and code settings: NetworkSpecs + CodeLength of DeepSDF's specs.json."""

    latent_size: int = 256  # CodeLength
    dims: tuple[int, ...] = (512,) * 8
    latent_in: tuple[int, ...] = (4,)
    dropout: tuple[int, ...] | None = None  # hidden layers with dropout; None = all (the original lists 0..7)
    dropout_prob: float = 0.2
    norm_layers: tuple[int, ...] | None = None  # None = all hidden layers
    weight_norm: bool = True
    code_bound: float | None = 1.0  # CodeBound: max norm of a code when a batch looks it up
    code_init_std: float = 1.0  # CodeInitStdDev, divided by sqrt(latent_size)

    def __post_init__(self) -> None:  # a ValueError with config_key/reason: the loader names the dotted key
        n = len(self.dims)
        rules = [
            ("latent_size", self.latent_size >= 1, ">= 1"),
            ("dims", n >= 1 and min(self.dims) >= 1, "one or more layer widths >= 1"),
            ("dropout_prob", 0 <= self.dropout_prob < 1, "in [0, 1)"),
            ("latent_in", all(1 <= i < n for i in self.latent_in), f"layers in 1..{n - 1}"),
            ("dropout", all(0 <= i < n for i in self.dropout or ()), f"layers in 0..{n - 1} or null (all)"),
            ("norm_layers", all(0 <= i < n for i in self.norm_layers or ()), f"layers in 0..{n - 1} or null (all)"),
            ("code_bound", self.code_bound is None or self.code_bound > 0, "> 0 or null"),
            ("code_init_std", self.code_init_std >= 0, ">= 0"),
        ]
        for key, ok, expected in rules:
            if not ok:
                err = ValueError(f"config key '{key}': expected {expected}, got {getattr(self, key)!r}")
                err.config_key, err.reason = key, f"expected {expected}, got {getattr(self, key)!r}"
                raise err


def build_decoder(cfg: DeepSDFModelConfig) -> DeepSDFDecoder:
    """The decoder of `cfg` (codes are built by the trainer: their count is the dataset's)."""
    return DeepSDFDecoder(cfg.latent_size, cfg.dims, cfg.latent_in, cfg.dropout, cfg.dropout_prob, cfg.norm_layers,
                          cfg.weight_norm)  # fmt: skip
