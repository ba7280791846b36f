"""Differentiable outputs of a trace by implicit differentiation at the found surface.

Every tracer (the fused Taichi tracer, the marchers of torch-callable fields) finds its hits with no
gradient (a `MarchResult`); the differentiable ray distance is then one implicit-function (Newton)
step at x0 = o + t0 d on the level set f = level:

    t = t0 - (f(x0; theta) - level) / (grad_x f(x0) . d)|detached

whose value is t0 refined by one Newton step and whose first-order derivatives w.r.t. the field's
parameters, the ray origins and directions are exactly those of the true intersection distance
(IDR's sample network; Yariv et al. 2020, eq. 3; DVR's depth gradient, Niemeyer et al. 2020, eq. 7).
Nothing here assumes which side of the level set is inside: an SDF (negative inside, level 0) and an
occupancy logit (positive inside, level 0) go through the same formula.

- `implicit_surface`: differentiable `t`, points and normals of the hits (optional Newton polish).
- `min_sdf_values`: differentiable field value at the point of each ray nearest the level set
  (silhouette / mask losses on the misses), a separate step.
- `differentiable_field`: (values, gradients) callables of a torch field for the two above.
- `trace_result`: the two composed into a `TraceResult`, as every tracer returns it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch

# |grad f . d| below this is a grazing hit; clamp it so the Newton step and its gradient stay finite.
MIN_COS = 1e-4

ValuesFn = Callable[[torch.Tensor], torch.Tensor]  # points [M, 3] -> [M]
GradientsFn = Callable[[torch.Tensor], torch.Tensor]  # points [M, 3] -> [M, 3]


@dataclass
class MarchResult:
    """What a marching loop hands to the differentiable step (all `[N]`, no grad, on the rays' device).

    Attributes:
        hit: bool, the ray found the level set.
        t: ray distance of the hit (any finite value for misses).
        t_min: ray distance of the point the loop saw nearest the level set (smallest `f - level` for
            fields negative inside; the min-SDF point of silhouette losses); finite for every ray
            (rays that miss the bound: the point closest to its centre).
        steps: int32 field evaluations spent on each ray, or None when the marcher does not count
            them per ray (wavefront marchers count points in total instead).
        t_buffer: `[N, K]` ray distances of the K samples of smallest |f - level| the loop saw on each
            ray, ascending in |f - level| (index 0 the minimum), NaN in slots left empty (a ray with
            fewer than K samples, or none); None when the marcher keeps no buffer. `DISTMarcher(
            buffer_size=K)` keeps them for DIST's approximate gradient (`implicit.dist_gradient`).
        f_min: `f - level` at `t_min` as the loop evaluated it, NaN on rays it took no sample of
            (`t_min` then is a geometric choice); None when the marcher does not keep it. Lets
            `march_field(gradient="none")` return the min-SDF sample without a second field pass.
    """

    hit: torch.Tensor
    t: torch.Tensor
    t_min: torch.Tensor
    steps: torch.Tensor | None = None
    t_buffer: torch.Tensor | None = None
    f_min: torch.Tensor | None = None


@dataclass
class TraceResult:
    """Per-ray outputs of a tracer (leading dims as the input rays, written `[...]`).

    Attributes:
        hit: `[...]` bool, the ray converged on the surface.
        t: `[...]` ray distance of the hit (differentiable); for misses the distance of the
            minimum-SDF point (detached).
        points: `[..., 3]` `o + t d` (hit points, or minimum-SDF points for misses).
        normals: `[..., 3]` unit field gradient at `points` (points outward for an SDF; for a field
            positive inside, negate it); None when not requested (`march_field(normals=False)`).
        t_min_sdf: `[...]` ray distance of the point nearest the level set seen along the ray.
        min_sdf: `[...]` `f - level` at that point, differentiable (silhouette losses); rays that
            miss the bounding sphere use the point closest to its centre; None when not requested
            (`march_field(min_sdf=False)`).
        steps: `[...]` int32 field evaluations spent on each ray by the marching loop (zeros where
            the tracer counts evaluations only in total).
        num_evals: total field evaluations (points) of the trace, marching and gradient steps.
        marching_evals: the part of `num_evals` spent by the marching loop.
    """

    hit: torch.Tensor
    t: torch.Tensor
    points: torch.Tensor
    normals: torch.Tensor | None
    t_min_sdf: torch.Tensor
    min_sdf: torch.Tensor | None
    steps: torch.Tensor
    num_evals: int
    marching_evals: int = 0

    def reshape(self, *shape: int) -> TraceResult:
        def r(x, extra=()):
            return None if x is None else x.reshape(*shape, *extra)

        return TraceResult(r(self.hit), r(self.t), r(self.points, (3,)), r(self.normals, (3,)), r(self.t_min_sdf),
                           r(self.min_sdf), r(self.steps), self.num_evals, self.marching_evals)  # fmt: skip

    def z_depth(self, T_cam_world: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
        """Camera z-depth of `t` for rays `directions [B, ..., 3]` (any non-zero length, as traced) of
        cameras `T_cam_world [B, 4, 4]` (the result reshaped to `[B, ...]` first)."""
        from taichi_sdf.cameras.rays import z_per_t

        unit = directions / directions.norm(dim=-1, keepdim=True)  # t is along unit directions
        return self.t * z_per_t(T_cam_world, unit)


class Surface(NamedTuple):
    """Differentiable hit outputs of `implicit_surface` (`[N]`, `[N, 3]`, `[N, 3]`) and its cost."""

    t: torch.Tensor
    points: torch.Tensor
    normals: torch.Tensor
    num_evals: int


def clamp_cos(cos: torch.Tensor) -> torch.Tensor:
    """`grad f . d` with magnitudes below `MIN_COS` raised to it, keeping the sign (0 -> -MIN_COS)."""
    small = cos.abs() < MIN_COS
    return torch.where(small, torch.where(cos > 0, MIN_COS, -MIN_COS).to(cos.dtype), cos)


def newton_polish(values_fn: ValuesFn, gradients_fn: GradientsFn, o, d, t, steps: int, *, level: float = 0.0,
                  max_step: float = 0.05) -> tuple[torch.Tensor, int]:  # fmt: skip
    """Refine hit distances `t [M]` of rays `o, d [M, 3]` by Newton steps on f(o + t d) = level (no
    grad). A step is kept only where it lowers |f - level| (so it never jumps to another surface),
    and is clamped to `max_step`. The implicit-function gradient is exact only at a root: marchers
    that accept points off the surface (IDR's `f <= eps` after its line search) need this.

    Returns:
        (refined t `[M]`, field evaluations spent).
    """
    evals = 0
    with torch.no_grad():
        for _ in range(steps):
            if len(t) == 0:
                break
            x = o + t[:, None] * d
            f = values_fn(x) - level
            cos = clamp_cos((gradients_fn(x) * d).sum(-1))
            t_new = t - (f / cos).clamp(-max_step, max_step)
            f_new = values_fn(o + t_new[:, None] * d) - level
            t = torch.where(f_new.abs() < f.abs(), t_new, t)
            evals += 3 * len(t)
    return t, evals


def implicit_surface(
    values_fn: ValuesFn,
    gradients_fn: GradientsFn,
    origins: torch.Tensor,  # [N, 3]
    directions: torch.Tensor,  # [N, 3]
    hit: torch.Tensor,  # [N] bool
    t0: torch.Tensor,  # [N]
    *,
    t_miss: torch.Tensor | None = None,  # [N]
    level: float = 0.0,
    polish_steps: int = 0,
    gradient_cost: int = 1,
    normals_fn: GradientsFn | None = None,
    normals: bool = True,
) -> Surface:
    """Differentiable `t`, points and normals from the (non-differentiable) hit distances.

    Args:
        values_fn: `points [M, 3] -> [M]`, differentiable field values.
        gradients_fn: `points [M, 3] -> [M, 3]` spatial gradients (used without grad).
        origins, directions: `[N, 3]` the rays (may require grad).
        hit, t0: `[N]` the loop's hit mask and hit distances.
        t_miss: `[N]` the (detached) distance reported for misses (default `t0`).
        level: the traced level set `f = level`; either side may be inside.
        polish_steps: guarded Newton steps on the hit distances before the differentiable step.
        gradient_cost: field evaluations one gradient costs, for `num_evals`.
        normals_fn: `points [M, 3] -> [M, 3]` differentiable gradients for the normals output
            (default `gradients_fn`).
        normals: compute the normals of every ray (False: `Surface.normals` is None, no gradient
            evaluations beyond the hits').
    """
    n = origins.shape[0]
    t0 = t0.detach()
    t = torch.where(hit, t0, t0 if t_miss is None else t_miss.detach())
    idx = hit.nonzero()[:, 0]
    evals = 0
    # Also without hits (or rays): the field evaluated at no points keeps `t` (and so `points`) in the
    # graph of the field's parameters, so a loss on them can always be backpropagated.
    o_h, d_h = origins[idx], directions[idx]
    t_h = t0[idx]
    if polish_steps > 0:
        t_h, n_pol = newton_polish(values_fn, gradients_fn, o_h.detach(), d_h.detach(), t_h, polish_steps, level=level)
        evals += n_pol
    x0 = o_h + t_h[:, None] * d_h
    f = values_fn(x0) - level
    with torch.no_grad():
        cos = clamp_cos((gradients_fn(x0.detach()) * d_h.detach()).sum(-1))
    t = t.index_put((idx,), t_h - f / cos)
    evals += len(idx) * (1 + gradient_cost)
    points = origins + t[:, None] * directions
    if not normals:
        return Surface(t, points, None, evals)
    grads = (normals_fn or gradients_fn)(points)
    evals += gradient_cost * n
    unit = grads / grads.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return Surface(t, points, unit, evals)


def min_sdf_values(values_fn: ValuesFn, origins: torch.Tensor, directions: torch.Tensor, t_min: torch.Tensor, *,
                   level: float = 0.0) -> torch.Tensor:  # fmt: skip
    """`f - level` at `o + t_min d` `[N]`, differentiable w.r.t. the field and the rays (not `t_min`):
    IDR's mask loss on the misses pushes this value below 0 (or above, for fields positive inside)."""
    return values_fn(origins + t_min.detach()[:, None] * directions) - level


def differentiable_field(fn: ValuesFn, create_graph: bool = True) -> tuple[ValuesFn, GradientsFn]:
    """(values_fn, gradients_fn) of a torch field for `implicit_surface`: values are the callable;
    gradients come from autograd (with `create_graph` so second-order losses reach the weights)."""

    def gradients(x: torch.Tensor) -> torch.Tensor:
        grad_mode = torch.is_grad_enabled()
        with torch.enable_grad():
            xg = x if x.requires_grad else x.detach().requires_grad_(True)
            y = fn(xg)
            (g,) = torch.autograd.grad(y.sum(), xg, create_graph=create_graph and grad_mode)
        return g if grad_mode else g.detach()

    return fn, gradients


def trace_result(
    values_fn: ValuesFn,
    gradients_fn: GradientsFn,
    origins: torch.Tensor,
    directions: torch.Tensor,
    march: MarchResult,
    *,
    level: float = 0.0,
    polish_steps: int = 0,
    gradient_cost: int = 1,
    normals_fn: GradientsFn | None = None,
    marching_evals: int = 0,
    normals: bool = True,
    min_sdf: bool = True,
) -> TraceResult:
    """`implicit_surface` at the hits and `min_sdf_values` at `t_min`, as a `TraceResult`.
    `marching_evals` (or `march.steps.sum()`) is added to the evaluations of both steps. `normals`,
    `min_sdf` False: those outputs are None and cost nothing."""
    s = implicit_surface(values_fn, gradients_fn, origins, directions, march.hit, march.t, t_miss=march.t_min,
                         level=level, polish_steps=polish_steps, gradient_cost=gradient_cost,
                         normals_fn=normals_fn, normals=normals)  # fmt: skip
    n = origins.shape[0]
    min_values = min_sdf_values(values_fn, origins, directions, march.t_min, level=level) if min_sdf else None
    steps = march.steps
    if steps is None:
        steps = torch.zeros(n, dtype=torch.int32, device=origins.device)
    elif not marching_evals:
        marching_evals = int(steps.sum())
    return TraceResult(march.hit, s.t, s.points, s.normals, march.t_min.detach(), min_values, steps,
                       marching_evals + s.num_evals + (n if min_sdf else 0), marching_evals)  # fmt: skip
