"""IDR's networks (Yariv et al. 2020): the implicit SDF + feature network and the rendering network."""

from __future__ import annotations

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
