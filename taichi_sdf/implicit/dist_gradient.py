"""DIST's approximate depth gradient (Liu et al. 2020; B1ueber2y/DIST-Renderer `core/sdfrenderer/renderer.py`,
`SDFRenderer.get_sample_on_marching_zdepth_along_ray`), next to the exact implicit step of
`taichi_sdf.implicit.implicit_diff`.

The marcher keeps, per ray, the ray distances t_j of the K samples of smallest |f - level| it saw
(`MarchResult.t_buffer [N, K]`, index 0 the minimum; `DISTMarcher(buffer_size=K)`). With p_j = o + t_j d
(t_j held constant) and c(f) = clamp(f, -clamp, clamp), a hit ray's distance is

    t = t_0 + c(f(p_0)) + alpha * sum_j (c(f(p_j)) - stopgrad c(f(p_j)))

Its value is DIST's: the sample of smallest |f| plus one plain (not over-relaxed) step, `z(k*) + (1 - alpha)
c(f(k*))` where `z(k*)` is the distance after the relaxed step from that sample. Its gradient is
alpha * sum_j d c(f(p_j)) / d theta: a truncated unrolled sphere-tracing gradient, NOT the exact gradient of
the hit distance (`implicit_diff`: -(df/dtheta) / (grad f . d)). For a ray hitting a surface head-on with all
K samples converged it is about alpha * K times the exact one (the norm differs; the direction is close);
camera gradients flow through p_j (d f / d p_j . d p_j / d(o, d)). The original re-evaluates the samples
with the decoder's output clamped to `clamp_dist` (as here), so samples with |f| > clamp give no gradient.

Differences from the original, on purpose: the samples come from the final (full-resolution) level only
(the original's pyramid also ranks the coarse levels' samples, taken on the ray through the centre of the
pixel's block, not on the pixel's ray); empty slots (a ray with fewer than K samples) add nothing (the
original pads with sdf 1.0 at the point 0). Misses keep the detached `t_min` distance, as in
`implicit_diff`. The marching loop is never differentiated.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from taichi_sdf.core.validation import unit_directions
from taichi_sdf.implicit.implicit_diff import GradientsFn, MarchResult, TraceResult, ValuesFn, min_sdf_values

__all__ = ["approximate_depth", "approximate_trace_result"]


def _check(origins: torch.Tensor, march: MarchResult) -> torch.Tensor:
    buf = march.t_buffer
    if buf is None:
        raise ValueError("march: expected a MarchResult with a sample buffer t_buffer [N, K] (march with "
                         "DISTMarcher(buffer_size=K) for K > 0), got t_buffer=None")  # fmt: skip
    n = origins.shape[0]
    if buf.dim() != 2 or buf.shape[0] != n or buf.shape[1] < 1:
        raise ValueError(f"march.t_buffer: expected shape [{n}, K] with K >= 1, got {list(buf.shape)}")
    return buf.detach()


def _column0(fn: Callable[[torch.Tensor], torch.Tensor]) -> ValuesFn:
    def values(x: torch.Tensor) -> torch.Tensor:
        y = fn(x)
        return (y[:, 0] if y.dim() == 2 else y).to(x.dtype)

    return values


def _approximate_t(values_fn: ValuesFn, origins, directions, march, alpha, clamp, level) -> tuple[torch.Tensor, int]:
    """(t `[N]`, field evaluations) for `values_fn: [M, 3] -> [M]` (column 0 already taken)."""
    buf = _check(origins, march)
    t = march.t_min.detach().clone()
    filled = torch.isfinite(buf) & (march.hit & torch.isfinite(buf[:, 0]))[:, None]  # [N, K]
    ray, slot = filled.nonzero(as_tuple=True)  # ray-major: slot 0 of a ray comes first
    # No early exit without hits: the empty evaluation keeps `t` in the graph of the field's parameters.
    t_j = buf[ray, slot]
    c = (values_fn(origins[ray] + t_j[:, None] * directions[ray]) - level).clamp(-clamp, clamp)  # [M]
    first = slot == 0
    rays = ray[first]
    base = t_j[first] + c[first].detach()  # DIST's value: the best sample plus one plain step
    # The sum of (c - stopgrad c) is exactly 0 in value; only its gradient, alpha * sum_j dc_j, remains.
    delta = torch.zeros_like(t).index_add(0, ray, alpha * (c - c.detach()))
    t = t.index_put((rays,), base) + delta
    return t, len(ray)


def approximate_depth(
    fn: Callable[[torch.Tensor], torch.Tensor],
    origins: torch.Tensor,  # [N, 3]
    directions: torch.Tensor,  # [N, 3]
    march: MarchResult,
    *,
    alpha: float = 1.5,
    clamp: float = 0.1,
    level: float = 0.0,
) -> torch.Tensor:
    """DIST's ray distance `t [N]` of the hits, with its approximate gradient (see the module docstring).

    Args:
        fn: `points [M, 3] -> [M]` or `[M, 1 + F]` differentiable field (column 0), the one marched.
        origins, directions: `[N, 3]` the marched rays (may require grad; directions are normalised).
        march: the marcher's result with `t_buffer [N, K]` (`DISTMarcher(buffer_size=K)`).
        alpha: DIST's `ray_marching_ratio` (the marcher's `alpha`, default 1.5).
        clamp: DIST's `clamp_dist` (the marcher's `clamp`, default 0.1).
        level: the level set that was marched.

    Returns:
        `[N]` `t_0 + clamp(f(p_0))` with gradient `alpha * sum_j d clamp(f(p_j))` on the hits; misses get
        `march.t_min`, detached.
    """
    if not callable(fn):
        raise TypeError(f"fn: expected a callable points [M, 3] -> [M] or [M, 1 + F], got {type(fn).__name__}")
    if not (isinstance(alpha, (int, float)) and isinstance(clamp, (int, float)) and clamp > 0):
        raise ValueError(f"alpha, clamp: expected numbers with clamp > 0, got {alpha!r}, {clamp!r}")
    directions = unit_directions("directions", directions)  # as march_field: t along unit directions
    t, _ = _approximate_t(_column0(fn), origins, directions, march, float(alpha), float(clamp), float(level))
    return t


def approximate_trace_result(
    values_fn: ValuesFn,
    gradients_fn: GradientsFn,
    origins: torch.Tensor,
    directions: torch.Tensor,
    march: MarchResult,
    *,
    alpha: float,
    clamp: float,
    level: float = 0.0,
    gradient_cost: int = 1,
    marching_evals: int = 0,
) -> TraceResult:
    """`implicit_diff.trace_result` with DIST's approximate `t` (and so `points`, and the normals at
    them): `hit`, `t_min_sdf`, `min_sdf` are the same as there."""
    t, evals = _approximate_t(values_fn, origins, directions, march, float(alpha), float(clamp), float(level))
    n = origins.shape[0]
    points = origins + t[:, None] * directions
    grads = gradients_fn(points)
    normals = grads / grads.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    min_sdf = min_sdf_values(values_fn, origins, directions, march.t_min, level=level)
    steps = march.steps if march.steps is not None else torch.zeros(n, dtype=torch.int32, device=origins.device)
    num_evals = marching_evals + evals + gradient_cost * n + n
    return TraceResult(march.hit, t, points, normals, march.t_min.detach(), min_sdf, steps, num_evals, marching_evals)
