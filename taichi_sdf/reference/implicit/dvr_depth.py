"""DVR's original depth function re-stated in torch: the benchmark anchor of the occupancy marcher.

autonomousvision/differentiable_volumetric_rendering, `im2mesh/dvr/models/depth_function.py`
(`DepthFunction.perform_ray_marching` and `forward`) with `im2mesh/common.py`
(`get_proposal_points_in_unit_cube`): every one of the `n_steps` proposals of every ray is evaluated
(no early exit), in chunks of `max_points`; the first sign change is found with DVR's cost matrix
`sign(v_i v_{i+1}) * (n_steps - i)`; a ray is valid when that change goes from outside to inside and
its first proposal is unoccupied; valid rays get `n_secant_steps` of secant (regula falsi) or
bisection. So points per ray = n_steps + n_secant_steps x (fraction of valid rays).

Rays are DVR's `r0 + d w` with `w` unnormalised, so `d` is in units of `w` (camera z-depth for DVR's
camera rays). The cube chord is found with the slab test, which gives DVR's interval for origins outside
the padded cube (DVR's plane-intersection test measures unsigned distances, so it differs for origins
inside the cube or cubes behind the camera, which DVR's cameras never produce).

A leaf: torch only.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch


class DVRDepth(NamedTuple):
    """`d [N]` (inf on misses, 0 where the first proposal is occupied), `mask [N]` (valid depth: DVR's
    `mask`), `first_occupied [N]` (`~mask_0_not_occupied`) and the network points evaluated."""

    d: torch.Tensor
    mask: torch.Tensor
    first_occupied: torch.Tensor
    num_points: int


def _column0(fn, x):
    y = fn(x)
    return y[:, 0] if y.dim() == 2 else y


def unit_cube_interval(ray0, w, padding=0.1):
    """(d_near, d_far, inside) `[N]` of rays `ray0 + d w` through the cube of half-side 0.5 + padding / 2."""
    half = 0.5 + padding / 2
    safe = torch.where(w != 0, w, torch.ones_like(w))
    a, b = (-half - ray0) / safe, (half - ray0) / safe
    lo = torch.where(w != 0, torch.minimum(a, b), torch.full_like(a, -1e30)).max(dim=1).values
    hi = torch.where(w != 0, torch.maximum(a, b), torch.full_like(a, 1e30))
    hi = torch.where((w == 0) & (ray0.abs() > half), torch.full_like(hi, -1e30), hi).min(dim=1).values
    inside = (hi > lo) & (hi > 0)
    return lo.clamp_min(0), hi, inside


@torch.no_grad()
def dvr_depth(fn, ray0: torch.Tensor, w: torch.Tensor, *, n_steps: int = 128, n_secant_steps: int = 8,
              tau: float = 0.5, depth_range=(0.0, 2.4), method: str = "secant", check_cube_intersection: bool = True,
              max_points: int = 3_500_000, padding: float = 0.1) -> DVRDepth:  # fmt: skip
    """DVR's depth of rays `ray0 + d w` (`[N, 3]` each) through the occupancy logits `fn(points [M, 3]) -> [M]`
    or `[M, 1 + F]` (column 0), at the level set logit(tau)."""
    logit_tau = math.log(tau / (1 - tau))
    count = 0

    def ev(x):
        nonlocal count
        count += x.shape[0]
        return _column0(fn, x) - logit_tau

    n = ray0.shape[0]
    steps = torch.linspace(0, 1, n_steps, dtype=ray0.dtype, device=ray0.device)
    d_prop = depth_range[0] + steps * (depth_range[1] - depth_range[0])
    d_prop = d_prop.expand(n, n_steps).clone()
    if check_cube_intersection:
        lo, hi, inside = unit_cube_interval(ray0, w, padding)
        d_prop[inside] = lo[inside, None] + steps * (hi - lo)[inside, None]
    pts = (ray0[:, None] + d_prop[..., None] * w[:, None]).reshape(-1, 3)
    val = torch.cat([ev(p) for p in pts.split(max_points)]).reshape(n, n_steps)

    first_free = val[:, 0] < 0
    sign = torch.cat([torch.sign(val[:, :-1] * val[:, 1:]), torch.ones_like(val[:, :1])], dim=1)
    cost = sign * torch.arange(n_steps, 0, -1, dtype=val.dtype, device=val.device)
    values, idx = cost.min(dim=1)
    rows = torch.arange(n, device=val.device)
    mask = (values < 0) & (val[rows, idx] < 0) & first_free
    d_low, f_low = d_prop[rows, idx][mask], val[rows, idx][mask]
    hi_idx = (idx + 1).clamp_max(n_steps - 1)
    d_high, f_high = d_prop[rows, hi_idx][mask], val[rows, hi_idx][mask]
    r0, wm = ray0[mask], w[mask]
    if method == "secant":
        d_pred = -f_low * (d_high - d_low) / (f_high - f_low) + d_low
    else:
        d_pred = 0.5 * (d_low + d_high)
    for _ in range(n_secant_steps if mask.any() else 0):
        f_mid = ev(r0 + d_pred[:, None] * wm)
        low = f_mid < 0
        d_low, f_low = torch.where(low, d_pred, d_low), torch.where(low, f_mid, f_low)
        d_high, f_high = torch.where(low, d_high, d_pred), torch.where(low, f_high, f_mid)
        if method == "secant":
            d_pred = -f_low * (d_high - d_low) / (f_high - f_low) + d_low
        else:
            d_pred = 0.5 * (d_low + d_high)
    d = torch.full((n,), math.inf, dtype=ray0.dtype, device=ray0.device)
    d[mask] = d_pred
    d[~first_free] = 0.0
    return DVRDepth(d, mask, ~first_free, count)
