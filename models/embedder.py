"""NeRF-style positional encoding (as in IDR: identity + sin/cos at 2^0 .. 2^(L-1))."""

from __future__ import annotations

import torch
from torch import nn


class PositionalEncoding(nn.Module):
    """`[..., d] -> [..., d * (1 + 2 L)]`: x, sin(2^k x), cos(2^k x) for k < L (log-spaced)."""

    def __init__(self, d_in: int = 3, num_frequencies: int = 6) -> None:
        super().__init__()
        if num_frequencies < 0:
            raise ValueError(f"num_frequencies: expected >= 0, got {num_frequencies}")
        self.d_in, self.num_frequencies = d_in, num_frequencies
        self.register_buffer("freqs", 2.0 ** torch.arange(num_frequencies, dtype=torch.float32), persistent=False)

    @property
    def d_out(self) -> int:
        return self.d_in * (1 + 2 * self.num_frequencies)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.num_frequencies == 0:
            return x
        xf = x[..., None, :] * self.freqs.to(x.dtype)[:, None]  # [..., L, d]
        # IDR's order: x, then sin/cos per frequency
        enc = torch.stack([torch.sin(xf), torch.cos(xf)], dim=-2).flatten(-3)  # [..., L * 2 * d]
        return torch.cat([x, enc], dim=-1)
