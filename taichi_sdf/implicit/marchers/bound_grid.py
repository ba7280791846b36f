"""Empty-space skipping for SDF marchers: a coarse grid of SDF lower bounds cached from the field.

`BoundGrid.refresh(fn, params)` evaluates the field at the centres of `resolution^3` cells covering
the cube `[-r, r]^3` (which holds the bounding sphere) and marks a cell empty when its lower bound
`f(centre) - L * half_diagonal` is above `margin`: then no point of the cell can be on the surface
or inside it, provided the field changes by at most `L` per unit length inside the cell. `L` is the
larger of the `lipschitz` option and `safety` times the steepest slope between neighbouring centres
(a check of the option on the field itself; a network's true Lipschitz bound is far larger than its
slope, so the grid is conservative for fields whose slope the samples see: SDF-like networks).

`bounds(o, d, t_near, t_far)` gives each ray the part of its chord that may meet non-empty cells:
samples at most one cell apart along the chord are looked up in the occupancy dilated by one cell,
so the first (last) dilated sample lies before (after) every point of the chord in a non-empty cell
(a point within less than one cell of a cell lies in it or in one of its 26 neighbours).

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
        self.occupied: torch.Tensor | None = None  # [R, R, R] bool, dilated by one cell
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
        half_diag = math.sqrt(3) / 2 * self.cell
        occ = (g - self.slope * half_diag <= self.margin).float()
        self.occupied = torch.nn.functional.max_pool3d(occ[None, None], 3, stride=1, padding=1)[0, 0].bool()
        self._params = None if params is None else list(params)
        self._versions = [] if self._params is None else [p._version for p in self._params]
        return self

    def is_current(self) -> bool:
        """Built, and none of the recorded `params` changed in place since."""
        if self.occupied is None:
            return False
        return self._params is None or all(p._version == v for p, v in zip(self._params, self._versions))

    @property
    def occupancy(self) -> float:
        """Fraction of (dilated) cells that may hold surface."""
        return float(self.occupied.float().mean()) if self.occupied is not None else float("nan")

    @torch.no_grad()
    def bounds(self, o: torch.Tensor, d: torch.Tensor, t_near: torch.Tensor, t_far: torch.Tensor,
               chunk_rays: int = 8192) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
        """(t_enter, t_exit `[N]`, any `[N]` bool) of rays `o, d [N, 3]` (unit d) on chords
        `[t_near, t_far]` inside the cube: every point of the chord in a non-empty cell lies in
        `[t_enter, t_exit]`; rays with `any` False meet only empty cells."""
        occ = self.occupied.to(o.device)
        r = self.resolution
        span = (t_far - t_near).clamp_min(0)
        n_s = int(math.ceil(float(span.max()) / self.cell)) + 1 if len(span) else 1
        k = torch.arange(n_s + 1, device=o.device, dtype=o.dtype)
        t_enter, t_exit = t_near.clone(), t_far.clone()
        anyocc = torch.zeros(len(o), dtype=torch.bool, device=o.device)
        for s in range(0, len(o), chunk_rays):
            sl = slice(s, s + chunk_rays)
            tn, tf = t_near[sl], t_far[sl]
            ts = torch.minimum(tn[:, None] + k[None] * self.cell, tf[:, None])  # [M, S], spacing <= cell, ends at tf
            p = o[sl, None] + ts[..., None] * d[sl, None]
            idx = ((p + self.bound_radius) / self.cell).floor().long().clamp_(0, r - 1)
            hit = occ[idx[..., 0], idx[..., 1], idx[..., 2]]  # [M, S]
            has = hit.any(1)
            first = torch.argmax(hit.int(), 1)
            last = n_s - torch.argmax(hit.flip(1).int(), 1)
            rows = torch.arange(len(ts), device=o.device)
            t_enter[sl] = torch.where(has, ts[rows, first], tn)
            t_exit[sl] = torch.where(has, ts[rows, last], tf)
            anyocc[sl] = has
        return t_enter, t_exit, anyocc
