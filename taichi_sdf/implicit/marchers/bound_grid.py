"""Empty-space skipping for SDF marchers: a coarse grid of SDF samples cached from the field.

`BoundGrid.refresh(fn, params)` evaluates the field at the centres `x_c` of `resolution^3` cells
covering the cube `[-r, r]^3` (which holds the bounding sphere). If the field changes by at most `L`
per unit length, every point x has the lower bound

    f(x) >= B(x) = max_c (f(x_c) - L |x - x_c|)     (c over the 8 centres around x)

and a chord segment between samples x_k, x_k+1 (length D) holds no point with f <= margin when
`(B(x_k) + B(x_k+1) - L D) / 2 > margin` (the two cones of slope L meet above the margin).
`bounds(o, d, t_near, t_far)` samples each chord every half cell and returns, per ray, the span from
the first to the last segment not certified empty: the surface and the inside lie in it.

`L` is the larger of the `lipschitz` option and `safety` times the steepest slope between
neighbouring centres (a check of the option on the field itself; a network's provable Lipschitz bound
is far larger than its slope, so the grid is conservative for fields whose slope the samples see:
SDF-like networks). Marchers check what they can: a ray whose first sample after a skip is inside
restarts from the bounding sphere.

A grid is for the field it was built from: with `params` (the tensors the field depends on) it
records their version counters, which every in-place update (an optimiser step) bumps, and
`is_current()` says whether they are unchanged; marchers trace a stale grid's rays over the whole
chord (no skipping), so a stale grid never makes a ray skip its surface. `refresh` again after the
field changes (e.g. every k training iterations).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch

from taichi_sdf.core.dtypes import dtype_name
from taichi_sdf.core.launch import lean_kernels
from taichi_sdf.kernels.implicit.marchers.bound_grid import bound_grid_kernels

__all__ = ["BoundGrid"]


class BoundGrid:
    """Occupancy of a `resolution^3` grid over `[-bound_radius, bound_radius]^3` from SDF samples.

    Args:
        resolution: cells per axis.
        bound_radius: half-size of the cube (the marcher's bounding sphere radius).
        lipschitz: the field's assumed slope bound (an SDF: 1).
        safety: factor on the slope seen between neighbouring samples when it exceeds `lipschitz`.
        margin: a cell is empty when its lower bound exceeds this (>= the marcher's eps).
        chunk_size: points per field call while building.
    """

    def __init__(self, resolution: int = 32, bound_radius: float = 1.0, lipschitz: float = 1.0, safety: float = 1.5,
                 margin: float = 1e-3, chunk_size: int = 65536) -> None:  # fmt: skip
        if not (isinstance(resolution, int) and resolution >= 2):
            raise ValueError(f"resolution: expected an int >= 2, got {resolution!r}")
        for key, v in (("bound_radius", bound_radius), ("lipschitz", lipschitz), ("safety", safety)):
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"{key}: expected a finite float > 0, got {v!r}")
        if not (isinstance(margin, (int, float)) and math.isfinite(margin) and margin >= 0):
            raise ValueError(f"margin: expected a finite float >= 0, got {margin!r}")
        self.resolution, self.bound_radius = resolution, float(bound_radius)
        self.lipschitz, self.safety, self.margin = float(lipschitz), float(safety), float(margin)
        self.chunk_size = chunk_size
        self.cell = 2 * self.bound_radius / resolution
        self.values: torch.Tensor | None = None  # [R, R, R] field at the cell centres
        self.slope = float("nan")  # the L used by the last refresh
        self._params: list[torch.Tensor] | None = None
        self._versions: list[int] = []

    def centres(self, device=None, dtype=torch.float32) -> torch.Tensor:
        """Cell centres `[R^3, 3]` in (i, j, k) = (x, y, z) index order, k fastest."""
        r = self.resolution
        c = (torch.arange(r, device=device, dtype=dtype) + 0.5) * self.cell - self.bound_radius
        return torch.stack(torch.meshgrid(c, c, c, indexing="ij"), -1).reshape(-1, 3)

    @torch.no_grad()
    def refresh(self, fn: Callable[[torch.Tensor], torch.Tensor], params: Iterable[torch.Tensor] | None = None, *,
                device=None, dtype=torch.float32) -> BoundGrid:  # fmt: skip
        """(Re)build from `fn(points [M, 3]) -> [M]` (or `[M, 1 + F]`, column 0); `params` are the
        tensors `fn` depends on (staleness check), None when the caller refreshes by itself."""
        x = self.centres(device, dtype)
        vals = []
        for chunk in x.split(self.chunk_size):
            out = fn(chunk)
            vals.append(out[:, 0] if out.dim() == 2 else out)
        g = torch.cat(vals).reshape((self.resolution,) * 3)
        if not torch.isfinite(g).all():
            raise ValueError("fn: returned non-finite SDF values while building the BoundGrid")
        diffs = [(g.narrow(a, 1, self.resolution - 1) - g.narrow(a, 0, self.resolution - 1)).abs().max() for a in range(3)]
        seen = float(torch.stack(diffs).max()) / self.cell
        self.slope = max(self.lipschitz, self.safety * seen)
        self.values = g
        self._params = None if params is None else list(params)
        self._versions = [] if self._params is None else [p._version for p in self._params]
        return self

    def is_current(self) -> bool:
        """Built, and none of the recorded `params` changed in place since."""
        if self.values is None:
            return False
        return self._params is None or all(p._version == v for p, v in zip(self._params, self._versions))

    @property
    def occupancy(self) -> float:
        """Fraction of cells whose centre's bound reaches the margin somewhere in the cell."""
        if self.values is None:
            return float("nan")
        return float((self.values - self.slope * math.sqrt(3) / 2 * self.cell <= self.margin).float().mean())

    def lower_bound(self, p: torch.Tensor) -> torch.Tensor:
        """`B(p)` `[...]` for points `p [..., 3]` (any points; the 8 centres around each), in torch
        (`bounds` evaluates the same bound in its kernel)."""
        r, a = self.resolution, self.cell
        g = self.values.to(p.device, p.dtype)
        u = (p + self.bound_radius) / a - 0.5
        i0 = u.floor().long().clamp_(0, r - 2)
        best = None
        for corner in range(8):
            c = i0 + torch.tensor([(corner >> 2) & 1, (corner >> 1) & 1, corner & 1], device=p.device)
            xc = (c.to(p.dtype) + 0.5) * a - self.bound_radius
            b = g[c[..., 0], c[..., 1], c[..., 2]] - self.slope * (p - xc).norm(dim=-1)
            best = b if best is None else torch.maximum(best, b)
        return best

    @torch.no_grad()
    def bounds(self, o: torch.Tensor, d: torch.Tensor, t_near: torch.Tensor, t_far: torch.Tensor, *,
               lowest: bool = False, zero: bool = False) -> tuple[torch.Tensor, ...]:  # fmt: skip
        """(t_enter, t_exit `[N]`, any `[N]` bool) of rays `o, d [N, 3]` (unit d) on chords
        `[t_near, t_far]`: every chord point with f <= margin lies in `[t_enter, t_exit]`; rays with
        `any` False have none. `lowest`: also `t_lowest [N]`, the chord sample where the grid's
        trilinear interpolant is lowest (where the ray passes closest to the surface as far as the
        grid knows; the min-SDF point of a ray the grid skips). `zero`: also `t_zero [N]`, the first
        zero of the interpolant in `[t_enter, t_exit]` (linear between samples; NaN where it has none:
        where the grid expects the surface, not a bound) and `v_enter [N]`, the interpolant at
        `t_enter`. One Taichi thread per ray, samples every half cell."""
        n = o.shape[0]
        t_enter, t_exit, t_lowest = o.new_empty(n), o.new_empty(n), o.new_empty(n)
        t_zero, v_enter = o.new_empty(n), o.new_empty(n)
        any_open = torch.empty(n, dtype=torch.int32, device=o.device)
        if n:
            g = self.values.to(o.device, o.dtype).contiguous()
            lean_kernels(bound_grid_kernels(dtype_name(o.dtype))).chord_bounds(
                o.contiguous(), d.contiguous(), t_near.contiguous(), t_far.contiguous(), g, t_enter, t_exit, any_open,
                t_lowest, t_zero, v_enter, self.cell, self.bound_radius, self.slope, self.margin, self.cell / 2)  # fmt: skip
        out = (t_enter, t_exit, any_open.bool())
        return out + ((t_lowest,) if lowest else ()) + ((t_zero, v_enter) if zero else ())
