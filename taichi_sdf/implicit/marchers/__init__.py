"""Marching algorithms for torch-callable fields, one module each, driven by
`taichi_sdf.implicit.wavefront.march_field` through the `Marcher` protocol (see `base`). `IDRMarcher`
and `DISTMarcher` are exact ports of the originals; `SkipMarcher` does their job (first surface,
|f| <= eps) with far fewer field points, skipping the empty cells of a `BoundGrid`."""

from taichi_sdf.implicit.marchers.base import FieldEvaluator, Marcher, MarchResult
from taichi_sdf.implicit.marchers.bound_grid import BoundGrid
from taichi_sdf.implicit.marchers.dist import DISTMarcher
from taichi_sdf.implicit.marchers.dvr import DVRMarcher
from taichi_sdf.implicit.marchers.idr import IDRMarcher
from taichi_sdf.implicit.marchers.skip import SkipMarcher

__all__ = ["Marcher", "MarchResult", "FieldEvaluator", "IDRMarcher", "DISTMarcher", "DVRMarcher", "SkipMarcher",
           "BoundGrid"]  # fmt: skip
