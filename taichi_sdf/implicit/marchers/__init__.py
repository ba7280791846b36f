"""Marching algorithms for torch-callable fields, one module each, driven by
`taichi_sdf.implicit.wavefront.march_field` through the `Marcher` protocol (see `base`)."""

from taichi_sdf.implicit.marchers.base import FieldEvaluator, Marcher, MarchResult
from taichi_sdf.implicit.marchers.dist import DISTMarcher
from taichi_sdf.implicit.marchers.dvr import DVRMarcher
from taichi_sdf.implicit.marchers.idr import IDRMarcher

__all__ = ["Marcher", "MarchResult", "FieldEvaluator", "IDRMarcher", "DISTMarcher", "DVRMarcher"]
