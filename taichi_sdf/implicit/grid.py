"""Trilinear sampling of a dense voxel grid whose values are a torch tensor (so it can be optimised)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from taichi_sdf.core.bridge import KernelOp
from taichi_sdf.core.dtypes import dtype_name
from taichi_sdf.core.validation import FLOAT_DTYPES, check_tensor
from taichi_sdf.kernels.implicit.grid import grid_sample_kernels

_ops: dict[tuple, KernelOp] = {}


def _bound(name: str, value) -> tuple[float, float, float]:
    if isinstance(value, (int, float)):
        return (float(value),) * 3
    vals = tuple(float(v) for v in value)
    if len(vals) != 3:
        raise ValueError(f"{name}: expected a float or 3 floats, got {value!r}")
    return vals


def grid_sample_op(dtype: str, autodiff: bool = False) -> KernelOp:
    """The KernelOp behind `grid_sample`; `autodiff=True` swaps the hand-written backward for
    Taichi's autodiff of the forward kernel (used by the tests to check one against the other)."""
    key = (dtype, autodiff)
    if key not in _ops:
        forward, backward = grid_sample_kernels(dtype)
        _ops[key] = KernelOp(
            name="grid_sample",
            forward=forward,
            backward=None if autodiff else backward,
            allocate=lambda grid, points: (points.new_empty(points.shape[0]),),
            input_names=("grid", "points"),
        )
    return _ops[key]


def grid_sample(
    grid: torch.Tensor,  # [X, Y, Z]
    points: torch.Tensor,  # [N, 3]
    bound_min: float | Sequence[float] = -1.0,
    bound_max: float | Sequence[float] = 1.0,
) -> torch.Tensor:
    """Trilinear interpolation of `grid` at `points`, differentiable w.r.t. both.

    Args:
        grid: `[X, Y, Z]` node values (each side >= 2); node (i, j, k) sits at
            bound_min + (i, j, k) * (bound_max - bound_min) / (shape - 1).
        points: `[N, 3]` query points; points outside the box are clamped onto it.
        bound_min, bound_max: the box, a float (cube) or 3 floats.

    Returns:
        `[N]` interpolated values.
    """
    check_tensor("grid", grid, shape=(None, None, None), dtype=FLOAT_DTYPES)
    check_tensor("points", points, shape=(None, 3), dtype=grid.dtype)
    if min(grid.shape) < 2:
        raise ValueError(f"grid: expected at least 2 nodes per axis, got shape {list(grid.shape)}")
    lo, hi = _bound("bound_min", bound_min), _bound("bound_max", bound_max)
    if any(h <= l for l, h in zip(lo, hi)):
        raise ValueError(f"bound_max: expected > bound_min on every axis, got {hi} vs {lo}")
    return grid_sample_op(dtype_name(grid.dtype))(grid, points, scalars=lo + hi)
