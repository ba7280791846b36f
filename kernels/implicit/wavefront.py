"""Compatibility: every marcher kernel in one namespace, as before the split into
`taichi_sdf.kernels.implicit.marchers.{common,idr,dist}` (used by `bench/sphere_trace.py`)."""

from types import SimpleNamespace

from taichi_sdf.kernels.implicit.marchers.common import common_kernels
from taichi_sdf.kernels.implicit.marchers.dist import dist_kernels
from taichi_sdf.kernels.implicit.marchers.idr import idr_kernels


def wavefront_kernels(dtype: str) -> SimpleNamespace:
    """The kernels of `common_kernels`, `idr_kernels` and `dist_kernels` for `dtype`, merged."""
    return SimpleNamespace(**vars(common_kernels(dtype)), **vars(idr_kernels(dtype)), **vars(dist_kernels(dtype)))
