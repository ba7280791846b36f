"""IDR's marcher (lioryariv/idr `ray_tracing.py`, defaults from `confs/dtu_*.conf`): sphere tracing
from both ends of the bounding-sphere chord, then uniform sampling and secant refinement for rays that
did not converge, and the min-SDF point of each miss for the mask loss. Fields are SDFs, negative
inside (the level set `f = level` is traced as the zero set of `f - level`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch

from taichi_sdf.core.dtypes import dtype_name
from taichi_sdf.core.launch import lean_kernels
from taichi_sdf.implicit.marchers.base import MarchResult, check_options, compact, shifted, sort_gathered
from taichi_sdf.kernels.implicit.marchers.common import common_kernels
from taichi_sdf.kernels.implicit.marchers.idr import idr_kernels


@dataclass(frozen=True)
class IDRMarcher:
    """IDR's tracer: sphere tracing from both ends of the bounding-sphere chord, then uniform sampling
    and secant refinement for rays that did not converge."""

    name: ClassVar[str] = "idr"

    bound_radius: float = 1.0  # object_bounding_sphere
    eps: float = 5e-5  # sdf_threshold
    sphere_tracing_iters: int = 10
    line_search_step: float = 0.5
    line_step_iters: int = 3
    n_steps: int = 100  # uniform samples for rays that did not converge
    n_secant_steps: int = 8
    min_sdf_samples: int = 0  # > 0: also search this many samples for the min-SDF point of every miss (IDR training: 100)

    def __post_init__(self) -> None:
        check_options(self, positive=("bound_radius", "eps", "line_search_step"), at_least={
            "sphere_tracing_iters": 1, "line_step_iters": 0, "n_steps": 2, "n_secant_steps": 0, "min_sdf_samples": 0})  # fmt: skip

    def march(self, evaluate: Callable[[torch.Tensor], torch.Tensor], origins: torch.Tensor, directions: torch.Tensor,
              *, level: float = 0.0, image_shape=None) -> MarchResult:  # fmt: skip
        """See `taichi_sdf.implicit.marchers.base.Marcher`; `image_shape` is not used."""
        dname = dtype_name(origins.dtype)
        hit, t, t_min = _march(lean_kernels(common_kernels(dname)), lean_kernels(idr_kernels(dname)), shifted(evaluate, level), origins, directions, self)
        return MarchResult(hit, t, t_min)


def _march(c, k, ev, o, d, cfg: IDRMarcher):
    """(hit, t_hit, t_min) `[N]` with common kernels `c`, IDR kernels `k`, values `ev` of an SDF."""
    n = o.shape[0]
    t_near, t_far, t_close = (o.new_empty(n) for _ in range(3))
    active = torch.empty(n, dtype=torch.int32, device=o.device)
    c.sphere_bounds(o, d, t_near, t_far, t_close, active, float(cfg.bound_radius))
    # [2, N] state: row 0 the start side (marching forward), row 1 the end side (marching back).
    t2 = torch.stack([t_near, t_far]).contiguous()
    f2, fp2 = o.new_zeros(2, n), o.new_zeros(2, n)
    unf2 = torch.stack([active, active]).contiguous()
    best_f = torch.full((n,), float("inf"), dtype=o.dtype, device=o.device)
    best_t = t_close.clone()
    points = o.new_empty(2 * n, 3)
    slots = torch.empty(2 * n, dtype=torch.int32, device=o.device)
    count = torch.zeros(1, dtype=torch.int32, device=o.device)

    def evaluate_gathered() -> int:
        m = int(count[0])
        if m:
            sort_gathered(slots, points, m)
            vals = ev(points[:m])
            k.idr_scatter(vals, slots[:m], t2, f2, best_f, best_t)
            k.idr_scatter_t(vals, slots[:m], t2, f2, best_f, best_t)
        return m

    k.idr_gather_all(o, d, t2, unf2, points, slots, count)
    evaluate_gathered()
    it = 0
    while True:
        advance = int(it < cfg.sphere_tracing_iters)
        k.idr_advance_gather(o, d, t2, f2, fp2, unf2, points, slots, count, float(cfg.eps), advance)
        if not advance or evaluate_gathered() == 0:
            break
        it += 1
        for j in range(cfg.line_step_iters):
            k.idr_backoff_gather(o, d, t2, f2, fp2, unf2, points, slots, count, (1.0 - cfg.line_search_step) / 2**j)
            if evaluate_gathered() == 0:
                break
    # The last advance call applied the final "sides met" and convergence tests without stepping.
    t_s, t_e = t2[0].contiguous(), t2[1].contiguous()
    unf_s = unf2[0].contiguous()

    # Converged from the front (and the chord not used up): a hit at t_s.
    hit = (active != 0) & (unf_s == 0) & (t_s < t_e)
    t_hit = t_s.clone()
    # Rays whose front never converged: uniform samples on [t_s, t_e], first sign change + secant.
    idx = compact(unf_s)
    if len(idx):
        m, ns = len(idx), cfg.n_steps
        pts = o.new_empty(m * ns, 3)
        c.sample_points(o, d, t_s, t_e, idx, ns, pts)
        vals = ev(pts)
        z_low, z_high, f_low, f_high = (o.new_empty(m) for _ in range(4))
        found = torch.empty(m, dtype=torch.int32, device=o.device)
        k.sample_select(vals, idx, ns, t_s, t_e, z_low, z_high, f_low, f_high, found, best_f, best_t)
        sel = found.bool()
        if sel.any():
            idx_f = idx[sel].contiguous()
            z_low, z_high, f_low, f_high = (x[sel].contiguous() for x in (z_low, z_high, f_low, f_high))
            z_pred, p = o.new_empty(len(idx_f)), o.new_empty(len(idx_f), 3)
            k.secant_points(o, d, idx_f, z_low, z_high, f_low, f_high, z_pred, p)
            for _ in range(cfg.n_secant_steps):
                k.secant_update_points(o, d, idx_f, ev(p), z_low, z_high, f_low, f_high, z_pred, p)
            li = idx_f.long()
            hit[li] = True
            t_hit[li] = z_pred
    if cfg.min_sdf_samples > 0:
        idx = compact(((active != 0) & ~hit).int())
        if len(idx):
            m, ns = len(idx), cfg.min_sdf_samples
            pts = o.new_empty(m * ns, 3)
            c.sample_points(o, d, t_near, t_far, idx, ns, pts)
            tmp = [o.new_empty(m) for _ in range(4)]
            k.sample_select(ev(pts), idx, ns, t_near, t_far, *tmp, torch.empty(m, dtype=torch.int32, device=o.device),
                            best_f, best_t)  # fmt: skip
    return hit, t_hit, best_t
