"""IDR's networks (Yariv et al. 2020): the implicit SDF + feature network and the rendering network."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .embedder import PositionalEncoding
from .sdf_net import SDFNetwork


def implicit_network(hidden: int = 512, n_layers: int = 8, skip_in=(4,), multires: int = 6, d_feature: int = 256,
                     softplus_beta: float = 100.0, init_radius: float = 0.6, weight_norm: bool = True) -> SDFNetwork:  # fmt: skip
    """f(x) -> [SDF, feature (d_feature)] with IDR's defaults (geometric init to a sphere of 0.6)."""
    return SDFNetwork(0, d_feature, hidden, n_layers, tuple(skip_in), multires, softplus_beta, True, init_radius, weight_norm)


class RenderingNetwork(nn.Module):
    """M(x, v, n, z) -> RGB in [-1, 1] (IDR mode "idr": point, encoded view direction, normal, feature).

    Args:
        d_feature: size of the implicit network's feature vector.
        hidden, n_layers: IDR: 512 x 4, ReLU, tanh output.
        multires_view: positional-encoding frequencies of the view direction (IDR: 4).
    """

    def __init__(self, d_feature: int = 256, hidden: int = 512, n_layers: int = 4, multires_view: int = 4,
                 weight_norm: bool = True) -> None:  # fmt: skip
        super().__init__()
        self.embed_view = PositionalEncoding(3, multires_view)
        dims = [3 + self.embed_view.d_out + 3 + d_feature] + [hidden] * n_layers + [3]
        layers = []
        for i in range(len(dims) - 1):
            lin = nn.Linear(dims[i], dims[i + 1])
            layers.append(nn.utils.parametrizations.weight_norm(lin) if weight_norm else lin)
        self.layers = nn.ModuleList(layers)

    def forward(self, points, view_dirs, normals, features) -> torch.Tensor:
        """`points, view_dirs, normals [N, 3]`, `features [N, d_feature]` -> RGB `[N, 3]` in [-1, 1]."""
        h = torch.cat([points, self.embed_view(view_dirs), normals, features], dim=-1)
        for i, lin in enumerate(self.layers):
            h = lin(h)
            h = torch.relu(h) if i < len(self.layers) - 1 else torch.tanh(h)
        return h


@dataclass
class IDRModelConfig:
    """IDR's network sizes (confs/dtu_fixed_cameras.conf); the `model` section of the IDR app's config."""

    hidden: int = 512  # implicit network width (IDR: 512)
    n_layers: int = 8  # implicit network hidden layers (IDR: 8)
    skip_in: tuple[int, ...] = (4,)
    multires: int = 6  # positional encoding of x (IDR: 6)
    d_feature: int = 256
    softplus_beta: float = 100.0
    init_radius: float = 0.6  # geometric init sphere (IDR conf: bias = 0.6)
    weight_norm: bool = True
    render_hidden: int = 512  # rendering network (IDR: 4 x 512)
    render_layers: int = 4
    multires_view: int = 4

    def __post_init__(self) -> None:  # a ValueError with config_key/reason: the loader names the dotted key
        n = self.n_layers
        rules = [(k, getattr(self, k) >= 1, ">= 1") for k in ("hidden", "n_layers", "d_feature", "render_hidden", "render_layers")]
        rules += [(k, getattr(self, k) >= 0, ">= 0") for k in ("multires", "multires_view")]
        rules += [("skip_in", all(1 <= k <= n for k in self.skip_in), f"layers in 1..{n}"),
                  ("softplus_beta", self.softplus_beta > 0, "> 0"), ("init_radius", self.init_radius > 0, "> 0")]  # fmt: skip
        for key, ok, expected in rules:
            if not ok:
                err = ValueError(f"config key '{key}': expected {expected}, got {getattr(self, key)!r}")
                err.config_key, err.reason = key, f"expected {expected}, got {getattr(self, key)!r}"
                raise err


def build_idr_networks(cfg: IDRModelConfig) -> tuple[SDFNetwork, RenderingNetwork]:
    """The implicit (SDF + feature) and rendering networks of `cfg`."""
    implicit = implicit_network(cfg.hidden, cfg.n_layers, cfg.skip_in, cfg.multires, cfg.d_feature, cfg.softplus_beta,
                                cfg.init_radius, cfg.weight_norm)  # fmt: skip
    rendering = RenderingNetwork(cfg.d_feature, cfg.render_hidden, cfg.render_layers, cfg.multires_view, cfg.weight_norm)
    return implicit, rendering
