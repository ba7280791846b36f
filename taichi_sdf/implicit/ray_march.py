"""Fused ray marching of Taichi-native occupancy fields (DVR's depth function), with exact first-order
gradients: the prototyping path for occupancy fields, as `sphere_trace` is for SDFs.

    @ti.func
    def occ(p, params: ti.template()):  # occupancy logit, positive inside
        return params[1] * (params[0] - p.norm())

    result = ray_march(TaichiField(occ, torch.tensor([0.3, 10.0])), origins, directions)

One kernel marches every ray fully (proposals + secant, `kernels/implicit/ray_march.py`) with no grad;
`t`, `points`, `normals` and `min_sdf` then carry gradients to `field.params` and the rays through the
implicit step built from the loop-free `field_values` / `field_gradients` kernels (as `sphere_trace`).
Torch-callable occupancy fields go through `march_field(fn, o, d, marcher=DVRMarcher())` instead; both
return the same `TraceResult` (see `DVRMarcher` for the validity rules, `start_inside`, `dvr_depth`).
"""

from __future__ import annotations

import torch

from taichi_sdf.core.dtypes import dtype_name
from taichi_sdf.implicit.fields import TaichiField, check_field, field_values
from taichi_sdf.implicit.implicit_diff import MarchResult, TraceResult, trace_result
from taichi_sdf.implicit.marchers.dvr import DVRMarcher
from taichi_sdf.implicit.sphere_trace import _exact_gradients, _normals_field, _validate_rays
from taichi_sdf.kernels.implicit.ray_march import fused_ray_march_kernel

__all__ = ["ray_march"]


def ray_march(
    field: TaichiField,
    origins: torch.Tensor,  # [N, 3]
    directions: torch.Tensor,  # [N, 3]
    *,
    marcher: DVRMarcher = DVRMarcher(),
    level: float = 0.0,
) -> TraceResult:
    """March rays through a Taichi occupancy field `field.sdf(p, params)` (a logit, positive inside;
    `field.bound_radius` is not used: the object lives in the unit cube) with one fused kernel.

    Args:
        field: the occupancy logit and its parameters (see `TaichiField`).
        origins, directions: `[N, 3]` rays (may require grad: camera optimisation); directions of any
            non-zero length, normalised here (`t` is the distance along the unit direction).
        marcher: the options (`n_steps`, `n_secant_steps`, `method`, `padding`, `depth_range`,
            `search_outside_cube`, `coarse_stride`, `refine_margin`; `block_points` does not apply).
        level: the surface `occ = level` (logit(tau); 0 for tau = 0.5).

    Returns:
        `TraceResult` (`[N]`, `[N, 3]`), `t` in ray distance; `steps` per ray (1 where the first
        proposal is occupied, see `start_inside`).
    """
    check_field(field)
    dtype = field.params.dtype
    directions = _validate_rays(origins, directions, dtype)
    if not isinstance(marcher, DVRMarcher):
        raise TypeError(f"marcher: expected a DVRMarcher (the options), got {type(marcher).__name__}")
    level = float(level)
    n = origins.shape[0]
    t0, t_min, f_min = (origins.new_empty(n) for _ in range(3))
    state = torch.zeros(n, dtype=torch.int32, device=origins.device)
    steps = torch.zeros(n, dtype=torch.int32, device=origins.device)
    if n > 0:
        kernel = fused_ray_march_kernel(field.sdf, dtype_name(dtype), field.params.dim())
        kernel(origins.detach().contiguous(), directions.detach().contiguous(), field.params.detach(), t0, state, t_min,
               f_min, steps, float(marcher.cube_half), level, float(marcher.depth_range[0]),
               float(marcher.depth_range[1]), int(marcher.search_outside_cube), marcher.n_steps, marcher.n_secant_steps,
               int(marcher.method == "bisection"), marcher.coarse_stride, float(marcher.refine_margin))  # fmt: skip
    if torch.isnan(f_min).any():
        raise ValueError(f"field {field.name!r}: the occupancy logit is NaN along {int(torch.isnan(f_min).sum())} rays")
    march = MarchResult(state == 1, t0, t_min, steps)
    return trace_result(
        lambda x: field_values(field, x), lambda x: _exact_gradients(field, x), origins, directions, march,
        level=level, gradient_cost=7, normals_fn=lambda x: _normals_field(field, x),
    )  # fmt: skip
