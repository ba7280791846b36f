"""An SDF MLP with geometric initialisation (SAL/IGR), as used by IDR and similar methods.

f(x[, z]) -> [SDF, features...]. With `geometric_init` the network starts as the SDF of a sphere of
`init_radius` (f(x) ~= |x| - r), which is what makes sphere tracing an untrained network meaningful.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import nn
from torch.nn import functional as F

from .embedder import PositionalEncoding
from .softplus import softplus


class SDFNetwork(nn.Module):
    """MLP `[N, 3]` (+ optional latent `[N, D]` or `[D]`) -> `[N, 1 + d_feature]`.

    Args:
        d_latent: size of a latent code concatenated to the input (0 = none).
        d_feature: extra output features (IDR: 256) after the SDF column.
        hidden, n_layers: width and number of hidden layers (IDR: 512 x 8).
        skip_in: layers whose input is concatenated with the (encoded) input, scaled by 1/sqrt(2).
        multires: positional-encoding frequencies (IDR: 6; 0 = raw xyz).
        softplus_beta: Softplus(beta) activation (IDR: 100); 0 selects ReLU.
        geometric_init, init_radius: start as a sphere of this radius (IDR: 0.6, written `bias`).
        weight_norm: weight normalisation on every layer (IDR: on).
        calibrate_init: after geometric init, fit f(x) ~ a |x| + b on random points near |x| = r
            and rescale the last layer so that f ~ |x| - init_radius. IDR's recipe alone gives a
            slope of ~0.7 (the 1/sqrt(2) of the skip connection) and, with Softplus(100), a zero set
            near radius 0.5 instead of 0.6 (measured here for 8x512); calibration fixes both.
        fused: the fast formulation (default): `models.softplus` (torch's kernel, in place without
            grad), the skip connection's 1/sqrt(2) applied to the weight instead of the activations,
            `sdf()` computing only the SDF row of the last layer, and, without grad, the normalised
            weights computed once and kept while the parameters are unchanged (see `layer_weights`).
            False: the textbook formulation (`self.act`, `lin(h)`), kept as the reference of tests
            and benchmarks. Same values and derivatives to rounding; same state_dict either way (an
            attribute, switchable at any time).
        compile_no_grad: run the fused no-grad forward (the tracer's marching) through
            `torch.compile` (dynamic shapes). Off by default: on the 2-core CPU the IDR iteration
            was 0.91x as fast with it (bench/train_step.py --compile: guards and recompiles on the
            tracer's many small calls; ~10-20 s of compiling first), and the grad paths cannot use it
            (torch.compile does not support the double backward of the eikonal term). An attribute too.
    """

    def __init__(
        self,
        d_latent: int = 0,
        d_feature: int = 0,
        hidden: int = 512,
        n_layers: int = 8,
        skip_in: tuple[int, ...] = (4,),
        multires: int = 6,
        softplus_beta: float = 100.0,
        geometric_init: bool = True,
        init_radius: float = 0.6,
        weight_norm: bool = True,
        calibrate_init: bool = True,
        fused: bool = True,
        compile_no_grad: bool = False,
    ) -> None:
        super().__init__()
        self.fused, self.compile_no_grad = fused, compile_no_grad
        self.softplus_beta = float(softplus_beta)
        self._weight_cache: tuple[list[torch.Tensor], list[tuple[torch.Tensor, int]]] | None = None
        self.embed = PositionalEncoding(3, multires)
        self.d_latent = d_latent
        d_in = self.embed.d_out + d_latent
        dims = [d_in] + [hidden] * n_layers + [1 + d_feature]
        self.skip_in = tuple(skip_in)
        self.layers = nn.ModuleList()
        for i in range(len(dims) - 1):
            out_dim = dims[i + 1] - (dims[0] if i + 1 in self.skip_in else 0)
            lin = nn.Linear(dims[i], out_dim)
            if geometric_init:
                self._geometric_init(lin, i, len(dims) - 2, dims[0], multires, init_radius)
            if weight_norm:
                lin = nn.utils.parametrizations.weight_norm(lin)
            self.layers.append(lin)
        self.act = nn.Softplus(beta=softplus_beta) if softplus_beta > 0 else nn.ReLU()
        if geometric_init and calibrate_init:
            self._calibrate(init_radius)
        self.clear_weight_cache()

    @torch.no_grad()
    def _calibrate(self, radius: float, n: int = 4096) -> None:
        g = torch.Generator().manual_seed(1234)
        x = torch.randn(n, 3, generator=g)
        # a shell around the target radius: the fit is what matters where the zero set must be
        x = x / x.norm(dim=-1, keepdim=True) * (radius + 0.3 * (torch.rand(n, 1, generator=g) - 0.5))
        z = torch.zeros(n, self.d_latent) if self.d_latent else None
        f = self.forward(x, z)[:, 0]
        # Least squares f ~ a r + b in closed form, in float64: LAPACK's threaded lstsq gave results
        # differing by ulps between runs on a loaded machine (DESIGN section 6).
        dtype = f.dtype
        r, f = x.norm(dim=-1).double(), f.double()
        rc = r - r.mean()
        a = (rc * (f - f.mean())).sum() / (rc * rc).sum()
        b = f.mean() - a * r.mean()
        a, b = a.to(dtype), b.to(dtype)
        last = self.layers[-1]
        # f_new = (f - b) / a - radius; only the SDF row (row 0) of the last layer changes.
        if hasattr(last, "parametrizations"):
            g_param = last.parametrizations.weight.original0
            g_param[0] /= a
        else:
            last.weight[0] /= a
        last.bias[0] = (last.bias[0] - b) / a - radius

    @torch.no_grad()
    def _geometric_init(self, lin: nn.Linear, i: int, last: int, d_in: int, multires: int, radius: float) -> None:
        out_dim, in_dim = lin.weight.shape
        if i == last:
            nn.init.normal_(lin.weight, mean=math.sqrt(math.pi) / math.sqrt(in_dim), std=1e-4)
            nn.init.constant_(lin.bias, -radius)
            return
        nn.init.normal_(lin.weight, 0.0, math.sqrt(2) / math.sqrt(out_dim))
        nn.init.constant_(lin.bias, 0.0)
        # Only xyz drives the initial sphere: zero the encoding's (and latent's) weights in the first
        # layer and in the part of skip layers that sees the input again.
        if i == 0 and (multires > 0 or self.d_latent > 0):
            lin.weight[:, 3:] = 0.0
        elif i in self.skip_in and (multires > 0 or self.d_latent > 0):
            lin.weight[:, -(d_in - 3):] = 0.0

    def clear_weight_cache(self) -> None:
        """Forget the normalised weights kept for no-grad calls (see `layer_weights`)."""
        self._weight_cache = None

    def _weight_sources(self) -> list[torch.Tensor]:
        """The parameters each layer's weight is computed from (weight norm: g and v; else the weight)."""
        out = []
        for lin in self.layers:
            if hasattr(lin, "parametrizations"):
                out += [lin.parametrizations.weight.original0, lin.parametrizations.weight.original1]
            else:
                out.append(lin.weight)
        return out

    def layer_weights(self) -> list[torch.Tensor]:
        """Each layer's effective weight `[out, in]`: normalised, and scaled by 1/sqrt(2) at skip layers.

        With grad enabled they are computed on every call (the autograd graph of a step is freed by
        its backward, so it cannot be kept). Without grad they are computed once and kept until a
        parameter changes: an in-place update (optimiser step, `load_state_dict`, `copy_` under
        no_grad) bumps the parameter's version counter, and `.to()` / `.data =` change its storage;
        the kept detached aliases hold the old storage alive, so an address is never reused. Writes
        through `p.data` escape version counters, so any call with grad enabled (every training
        step has one between its no-grad marching and the optimiser step) also drops the kept
        weights; call `clear_weight_cache()` after writing `p.data` by hand.
        """
        if torch.is_grad_enabled():
            self._weight_cache = None
            return [self._effective_weight(i, lin) for i, lin in enumerate(self.layers)]
        sources = self._weight_sources()
        cache = self._weight_cache
        if cache is not None and len(cache[1]) == len(sources) and all(
            kept.data_ptr() == p.data_ptr() and kept.dtype == p.dtype and version == p._version
            for (kept, version), p in zip(cache[1], sources)
        ):
            return cache[0]
        weights = [self._effective_weight(i, lin) for i, lin in enumerate(self.layers)]
        self._weight_cache = (weights, [(p.detach(), p._version) for p in sources])
        return weights

    def _effective_weight(self, i: int, lin: nn.Linear) -> torch.Tensor:
        w = lin.weight  # weight norm: g v / |v| (per output row), computed by the parametrization
        return w * (1.0 / math.sqrt(2)) if i in self.skip_in else w

    def _encode(self, x: torch.Tensor, latent: torch.Tensor | None) -> torch.Tensor:
        inp = self.embed(x)
        if self.d_latent:
            if latent is None:
                raise ValueError(f"latent: expected a code of size {self.d_latent}")
            inp = torch.cat([latent.expand(x.shape[0], -1) if latent.dim() == 1 else latent, inp], dim=-1)
            # keep xyz first so that geometric init's column slicing holds
            inp = torch.cat([inp[:, self.d_latent : self.d_latent + 3], inp[:, : self.d_latent], inp[:, self.d_latent + 3 :]], -1)
        return inp

    def forward(self, x: torch.Tensor, latent: torch.Tensor | None = None, *, sdf_only: bool = False) -> torch.Tensor:
        """`x [N, 3]`, `latent [N, D]` or `[D]` -> `[N, 1 + d_feature]`, or with `sdf_only` `[N, 1]`, the SDF
        column alone (the fused formulation does not compute the last layer's other rows)."""
        inp = self._encode(x, latent)
        if not self.fused:
            out = self._forward_reference(inp)
            return out[:, :1] if sdf_only else out
        mlp = _fused_mlp
        if self.compile_no_grad and not torch.is_grad_enabled():
            mlp = _compiled_mlp()
        skips = tuple(i in self.skip_in for i in range(len(self.layers)))
        weights, biases = self.layer_weights(), [lin.bias for lin in self.layers]
        if sdf_only:  # the tracer, the implicit step and the eikonal term need row 0 of the last layer only
            weights, biases = [*weights[:-1], weights[-1][:1]], [*biases[:-1], biases[-1][:1]]
        return mlp(inp, weights, biases, skips, self.softplus_beta)

    def _forward_reference(self, inp: torch.Tensor) -> torch.Tensor:
        h = inp
        for i, lin in enumerate(self.layers):
            if i in self.skip_in:
                h = torch.cat([h, inp], dim=-1) / math.sqrt(2)
            h = lin(h)
            if i < len(self.layers) - 1:
                h = self.act(h)
        return h

    def sdf(self, x: torch.Tensor, latent: torch.Tensor | None = None) -> torch.Tensor:
        """`[N]` SDF column only."""
        return self(x, latent, sdf_only=True)[:, 0]


def _fused_mlp(inp: torch.Tensor, weights: list[torch.Tensor], biases: list[torch.Tensor], skips: tuple[bool, ...],
               beta: float) -> torch.Tensor:  # fmt: skip
    """The layers of `SDFNetwork.forward` (fused formulation) on encoded inputs `inp [N, d_in]`; `skips[i]`:
    layer i also sees `inp`."""
    last = len(weights) - 1
    h = inp
    for i, (w, b) in enumerate(zip(weights, biases)):
        if skips[i]:
            h = torch.cat([h, inp], dim=-1)
        h = F.linear(h, w, b)  # a fresh tensor: softplus may overwrite it when no gradient is recorded
        if i < last:
            h = softplus(h, beta, inplace=True) if beta > 0 else torch.relu_(h)
    return h


@functools.cache
def _compiled_mlp():
    return torch.compile(_fused_mlp, dynamic=True)
