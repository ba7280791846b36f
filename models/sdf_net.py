"""An SDF MLP with geometric initialisation (SAL/IGR), as used by IDR and similar methods.

f(x[, z]) -> [SDF, features...]. With `geometric_init` the network starts as the SDF of a sphere of
`init_radius` (f(x) ~= |x| - r), which is what makes sphere tracing an untrained network meaningful.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .embedder import PositionalEncoding


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
    ) -> None:
        super().__init__()
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

    def forward(self, x: torch.Tensor, latent: torch.Tensor | None = None) -> torch.Tensor:
        """`x [N, 3]`, `latent [N, D]` or `[D]` -> `[N, 1 + d_feature]`."""
        inp = self.embed(x)
        if self.d_latent:
            if latent is None:
                raise ValueError(f"latent: expected a code of size {self.d_latent}")
            inp = torch.cat([latent.expand(x.shape[0], -1) if latent.dim() == 1 else latent, inp], dim=-1)
            # keep xyz first so that geometric init's column slicing holds
            inp = torch.cat([inp[:, self.d_latent : self.d_latent + 3], inp[:, : self.d_latent], inp[:, self.d_latent + 3 :]], -1)
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
        return self(x, latent)[:, 0]
