"""A marcher that does IDR's and DIST's job (the first surface along each ray, to `|f| <= eps`) with
few field points: it skips the empty cells of a `BoundGrid`, sphere-traces the rest from the front
only, and once a step lands inside brackets the crossing and refines it by the Illinois (regula
falsi) method instead of IDR's line search or DIST's damped oscillation. Rays still unresolved after
`max_steps` fall back to IDR's recipe: `n_samples` uniform samples on what is left of the chord,
the first sign change, secant steps. Fields are SDFs, negative inside.

Settings for the originals' jobs: IDR `SkipMarcher(grid, secant_below=0.01)` (sphere steps of f
as IDR takes them); DIST `SkipMarcher(grid, secant_below=0.05, max_step_ratio=1.5, max_step=0.15)`
(DIST's step clamp; its 1.5 f where the secant through the last samples allows it; `relax_far=True`
takes 1.5 f on every far step as DIST does, more points and more overshoot on DeepSDF networks whose
slope exceeds 1). `bench.tracers_vs_originals`.

Exactness: with a current grid (see `BoundGrid`) the skipped parts of a chord hold no surface;
a ray whose first sample after a skip is inside (the grid was not conservative there) restarts from
the bounding sphere. A stale or missing grid traces the whole chord. `guess_cells` (off by default)
trades part of that guarantee for points: the first sample goes where the grid's interpolant expects
the surface (its first zero in the span, backed off by `guess_cells` cells) instead of the certified
entry, so a part thinner than the grid resolves between the two can be jumped over; a first sample
that lands inside restarts at the certified entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from taichi_sdf.core.dtypes import dtype_name
from taichi_sdf.core.launch import lean_kernels
from taichi_sdf.implicit.marchers.base import MarchResult, check_options, shifted
from taichi_sdf.implicit.marchers.bound_grid import BoundGrid
from taichi_sdf.kernels.implicit.marchers.common import common_kernels

POLISH_LIMIT = 1e-3  # largest free secant correction of a converged sample's t


@dataclass(frozen=True)
class SkipMarcher:
    """Front sphere tracing from a `BoundGrid`'s entry point, Illinois refinement of crossings."""

    name: ClassVar[str] = "skip"

    grid: BoundGrid | None = field(default=None, compare=False)
    bound_radius: float = 1.0
    eps: float = 5e-5  # |f| below this is a hit (IDR's sdf_threshold, DIST's threshold)
    # Steps longer than f (up to this factor) where the secant through the last two samples puts the
    # surface further: 1 is plain sphere tracing (IDR, safe for 1-Lipschitz fields); DIST marches
    # with ratio 1.5 everywhere, so 1.5 takes no risk DIST does not.
    max_step_ratio: float = 1.0
    relax_far: bool = False  # True: every step at f >= secant_below is max_step_ratio * f (DIST's marching)
    # Below this f the step is the secant's root estimate itself (up to 10 f): superlinear convergence
    # where sphere tracing converges linearly (slow at grazing angles); 0 turns it off.
    secant_below: float = 0.0
    max_step: float = 2.0  # longest step (the bounding diameter; DIST clamps f to 0.1: steps <= 0.15)
    max_steps: int = 64  # field evaluations per ray before the sampling fallback
    n_samples: int = 100  # fallback uniform samples (IDR's n_steps)
    n_secant_steps: int = 8  # fallback secant steps (IDR's n_secant_steps)
    # None: the first sample at the grid's certified entry. A float c >= 0: at the grid interpolant's
    # first zero minus c cells (rays whose span has one), the interpolant at the entry serving as the
    # secant partner of that sample: ~1.5 fewer points per hit ray (DIST's job, 64^3 grid: 5.05 -> 3.55
    # per hit ray with c = 0.25; c = 0 lands inside too often, c = 0.5 too far out). See the module doc.
    guess_cells: float | None = None

    def __post_init__(self) -> None:
        check_options(self, positive=("bound_radius", "eps", "max_step"), at_least={"max_steps": 1, "n_samples": 2,
                                                                        "n_secant_steps": 0})  # fmt: skip
        if not (isinstance(self.max_step_ratio, (int, float)) and 1.0 <= self.max_step_ratio <= 2.0):
            raise ValueError(f"max_step_ratio: expected a float in [1, 2], got {self.max_step_ratio!r}")
        if self.guess_cells is not None and not (isinstance(self.guess_cells, (int, float)) and 0 <= self.guess_cells <= 4):
            raise ValueError(f"guess_cells: expected None or a float in [0, 4] (cells), got {self.guess_cells!r}")
        if self.grid is not None and not isinstance(self.grid, BoundGrid):
            raise TypeError(f"grid: expected a BoundGrid or None, got {type(self.grid).__name__}")

    def march(self, evaluate: Callable[[torch.Tensor], torch.Tensor], origins: torch.Tensor, directions: torch.Tensor,
              *, level: float = 0.0, image_shape=None) -> MarchResult:  # fmt: skip
        """See `taichi_sdf.implicit.marchers.base.Marcher`; `image_shape` is not used. `t_min` is the
        ray distance of the smallest |f| sample (for rays with no sample: the grid's chord sample of
        lowest interpolated value when the grid skipped the ray, else the closest point to the centre), `f_min` that sample's value (NaN without a sample; for rays that miss the bounding
        sphere the distance from it, a lower bound of an SDF whose surface lies inside, as DIST's
        render_depth reports them); `steps` counts each ray's field points."""
        return _march(shifted(evaluate, level), origins, directions, self)


def _march(ev, o: torch.Tensor, d: torch.Tensor, cfg: SkipMarcher) -> MarchResult:
    n, dev = o.shape[0], o.device
    t_near, t_far, t_close = (o.new_empty(n) for _ in range(3))
    active = torch.empty(n, dtype=torch.int32, device=dev)
    lean_kernels(common_kernels(dtype_name(o.dtype))).sphere_bounds(o, d, t_near, t_far, t_close, active, float(cfg.bound_radius))
    act = active.bool()
    t_start, t_end = t_near, t_far
    best_t = t_close.clone()  # the min-SDF point of rays with no sample
    grid = cfg.grid
    guess = None
    if grid is not None and grid.is_current():
        if cfg.guess_cells is None:
            t_start, t_end, occ, t_lowest = grid.bounds(o, d, t_near, t_far, lowest=True)
        else:
            t_start, t_end, occ, t_lowest, t_zero, v_enter = grid.bounds(o, d, t_near, t_far, lowest=True, zero=True)
            guess = t_zero - cfg.guess_cells * grid.cell  # NaN where the interpolant has no zero
        best_t = torch.where(act & ~occ, t_lowest, t_close)  # skipped: where the grid puts the surface nearest
        act &= occ
    hit = torch.zeros(n, dtype=torch.bool, device=dev)
    t_hit = t_close.clone()
    best_f = torch.full((n,), float("inf"), dtype=o.dtype, device=dev)
    # Signed f at best_t; rays that miss the bounding sphere are never evaluated: their value is the
    # bound's (DIST's render_depth reports the same, plus its threshold).
    best_v = torch.where(active.bool(), float("nan"), (o + t_close[:, None] * d).norm(dim=-1) - cfg.bound_radius)
    steps = torch.zeros(n, dtype=torch.int32, device=dev)
    eps = cfg.eps

    idx = act.nonzero()[:, 0]  # rays still marching
    oi, di = o[idx], d[idx]
    t = t_start[idx].clone()
    t_end_i, t_near_i = t_end[idx], t_near[idx]
    lo_t, lo_f = t.clone(), torch.full_like(t, float("inf"))  # last sample outside (f > eps)
    if guess is not None:
        # Start where the grid expects the surface; the certified entry, with the interpolant's value
        # there (positive: the grid's bound is), is the secant partner of the first step.
        g_i = guess[idx]
        guessed = g_i > t  # False for NaN
        t_entry = t.clone()
        t = torch.where(guessed, g_i, t)
        lo_f = torch.where(guessed, v_enter[idx].clamp_min(eps), lo_f)
    hi_t, hi_f = t.clone(), torch.zeros_like(t)  # first sample inside (f < -eps), once bracketed
    bracket = torch.zeros(len(idx), dtype=torch.bool, device=dev)
    side = torch.zeros(len(idx), dtype=torch.int8, device=dev)  # Illinois: which end was kept last
    first = True
    for _ in range(cfg.max_steps):
        if len(idx) == 0:
            break
        f = ev(oi + t[:, None] * di)
        count = torch.ones_like(idx, dtype=torch.int32)
        if first:
            if guess is not None:
                # A guess that lands inside may have jumped a surface: restart at the certified entry.
                undo = guessed & (f < -eps)
                if undo.any():
                    t = torch.where(undo, t_entry, t)
                    f = f.clone()
                    f[undo] = ev(oi[undo] + t[undo, None] * di[undo])
                    count = count + undo.int()
                    lo_f = torch.where(undo, float("inf"), lo_f)
            # A skip that lands inside: the grid missed surface before its entry; restart at the sphere.
            back = (f < -eps) & (t > t_near_i)
            if back.any():
                t = torch.where(back, t_near_i, t)
                f = f.clone()
                f[back] = ev(oi[back] + t[back, None] * di[back])
                count = count + back.int()
        steps.index_add_(0, idx, count)
        better = f.abs() < best_f[idx]
        best_f[idx] = torch.where(better, f.abs(), best_f[idx])
        best_t[idx] = torch.where(better, t, best_t[idx])
        best_v[idx] = torch.where(better, f, best_v[idx])
        # A first sample at or below eps is a hit (IDR: a start inside converges at once).
        done = (f <= eps) if first else (f.abs() <= eps)
        first = False
        inside, outside = (f < -eps) & ~done, f > eps
        # Illinois: halve the value of the bracket end kept twice in a row (superlinear regula falsi).
        lo_f = torch.where(bracket & inside & (side == -1), lo_f * 0.5, lo_f)
        hi_f = torch.where(bracket & outside & (side == 1), hi_f * 0.5, hi_f)
        pv_t, pv_f = lo_t, lo_f
        lo_t, lo_f = torch.where(outside, t, lo_t), torch.where(outside, f, lo_f)
        hi_t, hi_f = torch.where(inside, t, hi_t), torch.where(inside, f, hi_f)
        side = torch.where(inside, -1, torch.where(outside, 1, side)).to(torch.int8)
        bracket = bracket | inside
        # Next sample: a sphere step while marching, regula falsi inside a bracket.
        step = f
        if cfg.max_step_ratio > 1.0 or cfg.secant_below > 0:  # secant through the previous outside sample
            slope = (pv_f - f) / (t - pv_t)
            ok = torch.isfinite(slope) & (slope > 0) & (t > pv_t)
            root = f / slope.clamp_min(1e-6)
            cap = torch.where(f < cfg.secant_below, 10.0, cfg.max_step_ratio) * f
            step = torch.where(ok, root.minimum(cap).maximum(torch.where(f < cfg.secant_below, 0.0, f)), f)
            if cfg.relax_far:  # DIST: ratio * f on every step away from the surface
                step = torch.where(f >= cfg.secant_below, cfg.max_step_ratio * f, step)
        t_march = t + step.clamp(max=cfg.max_step)
        t_next = torch.where(bracket, lo_t + lo_f * (hi_t - lo_t) / (lo_f - hi_f), t_march)
        gone = ~bracket & ~done & (t_march > t_end_i)  # past the last non-empty cell: a miss
        # The answer: one more secant step through the last sample and its partner (the bracket end
        # of the other sign, else the previous sample), free (no evaluation), where it moves t by at
        # most `polish_limit`: |f| <= eps only puts t within eps / |df/dt| of the root.
        part_t = torch.where(bracket, torch.where(f > 0, hi_t, lo_t), pv_t)
        part_f = torch.where(bracket, torch.where(f > 0, hi_f, lo_f), pv_f)
        corr = -f * (part_t - t) / (part_f - f)
        corr = torch.where(torch.isfinite(corr) & (corr.abs() <= POLISH_LIMIT), corr, 0.0)
        hit[idx[done]] = True
        t_hit[idx[done]] = (t + corr)[done]
        keep = ~(done | gone)
        idx, oi, di = idx[keep], oi[keep], di[keep]
        t, t_end_i, t_near_i = t_next[keep], t_end_i[keep], t_near_i[keep]
        lo_t, lo_f, hi_t, hi_f = lo_t[keep], lo_f[keep], hi_t[keep], hi_f[keep]
        bracket, side = bracket[keep], side[keep]
    if len(idx):
        _fallback(ev, o, d, idx, lo_t, t_end[idx], bracket, lo_f, hi_t, hi_f, hit, t_hit, best_f, best_t, best_v,
                  steps, cfg)  # fmt: skip
    return MarchResult(hit, t_hit, best_t, steps=steps, f_min=best_v)


def _fallback(ev, o, d, idx, t_lo, t_hi, bracket, f_lo, b_t, b_f, hit, t_hit, best_f, best_t, best_v, steps, cfg):
    """IDR's sampler on the rays left after `max_steps`: uniform samples on [t_lo, t_end] (or on the
    bracket), the first sign change, secant steps."""
    t_hi = torch.where(bracket, b_t, t_hi)
    m, ns = len(idx), cfg.n_samples
    z = t_lo[:, None] + torch.linspace(0, 1, ns, device=o.device, dtype=o.dtype)[None] * (t_hi - t_lo)[:, None]
    oi, di = o[idx], d[idx]
    vals = ev((oi[:, None] + z[..., None] * di[:, None]).reshape(-1, 3)).reshape(m, ns)
    steps.index_add_(0, idx, torch.full((m,), ns, dtype=torch.int32, device=o.device))
    rows = torch.arange(m, device=o.device)
    k = vals.abs().argmin(1)
    better = vals[rows, k].abs() < best_f[idx]
    best_f[idx] = torch.where(better, vals[rows, k].abs(), best_f[idx])
    best_t[idx] = torch.where(better, z[rows, k], best_t[idx])
    best_v[idx] = torch.where(better, vals[rows, k], best_v[idx])
    neg = vals < 0
    found = neg.any(1)
    j = torch.argmax(neg.int(), 1)
    conv = found & (j == 0) & (vals[:, 0].abs() <= cfg.eps)
    sec = found & (j > 0)
    zl, zh = z[rows, (j - 1).clamp_min(0)], z[rows, j]
    fl, fh = vals[rows, (j - 1).clamp_min(0)], vals[rows, j]
    zl, zh, fl, fh = zl[sec], zh[sec], fl[sec], fh[sec]
    zp = zl - fl * (zh - zl) / (fh - fl)
    for _ in range(cfg.n_secant_steps):
        if len(zp) == 0:
            break
        fm = ev(o[idx[sec]] + zp[:, None] * d[idx[sec]])
        steps.index_add_(0, idx[sec], torch.ones(len(zp), dtype=torch.int32, device=o.device))
        up = fm > 0
        zl, fl = torch.where(up, zp, zl), torch.where(up, fm, fl)
        zh, fh = torch.where(fm < 0, zp, zh), torch.where(fm < 0, fm, fh)
        zp = zl - fl * (zh - zl) / (fh - fl)
    hit[idx[sec]] = True
    t_hit[idx[sec]] = zp
    hit[idx[conv]] = True
    t_hit[idx[conv]] = z[conv, 0]
