"""Taichi-native fields: a `@ti.func` SDF plus a tensor of its parameters.

This is the prototyping path: write

    @ti.func
    def my_sdf(p, params: ti.template()):
        return (p - ti.Vector([params[0], params[1], params[2]])).norm() - params[3]

    field = TaichiField(my_sdf, torch.tensor([0.0, 0.0, 0.0, 0.5]))
    result = taichi_sdf.sphere_trace(field, origins, directions)

and get depth, normals, masks and gradients w.r.t. `field.params` and the rays. `params` can have
any shape (a dense voxel grid is a `[X, Y, Z]` params tensor). Give `twin` (a torch function
`(points [N, 3], params) -> [N]`) to compare with the pure-torch reference tracer (the built-in
scenes' twins are looked up by name in `taichi_sdf.reference.implicit.scenes`).

`field_values` / `field_gradients` are the loop-free, differentiable evaluations of a field that the
fused tracer (`taichi_sdf.implicit.sphere_trace`) builds its gradients from.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch

from taichi_sdf.core.bridge import KernelOp
from taichi_sdf.core.dtypes import dtype_name
from taichi_sdf.core.validation import FLOAT_DTYPES, check_finite, check_tensor
from taichi_sdf.kernels.implicit.sphere_trace import field_gradient_kernel, field_value_kernel


@dataclass
class TaichiField:
    """An SDF defined by a `@ti.func sdf(p, params)` and its parameter tensor.

    Attributes:
        sdf: `@ti.func` taking a 3-vector `p` and the params ndarray, returning the signed distance
            (negative inside). It should be a true SDF or an underestimate of one (Lipschitz <= 1),
            or sphere tracing may step through surfaces.
        params: tensor of any shape, float32 or float64, on the runtime device; may require grad.
        bound_radius: the object lies inside the sphere of this radius around the origin.
        twin: optional torch function `(points [N, 3], params) -> [N]` computing the same SDF.
        name: shown in errors and benchmarks.
        sdf_xyz: optional lane-generic coordinate form `@ti.func sdf_xyz(x, y, z, params)` of the same
            SDF (see `taichi_sdf.kernels.implicit.sdf_lanes`); when given, CPU tracing runs packets of rays in SIMD.
    """

    sdf: Callable
    params: torch.Tensor
    bound_radius: float = 1.0
    twin: Callable | None = None
    name: str = "field"
    sdf_xyz: Callable | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.params, torch.Tensor):
            raise TypeError(f"params: expected a torch.Tensor, got {type(self.params).__name__}")
        if self.params.dim() == 0:
            raise ValueError("params: expected at least one dimension (use shape [P])")
        if not self.bound_radius > 0:
            raise ValueError(f"bound_radius: expected > 0, got {self.bound_radius!r}")

    def with_params(self, params: torch.Tensor) -> TaichiField:
        return TaichiField(self.sdf, params, self.bound_radius, self.twin, self.name, self.sdf_xyz)

    def values(self, points: torch.Tensor) -> torch.Tensor:
        """Differentiable SDF values `[N]` at `points [N, 3]` (Taichi kernel)."""
        return field_values(self, points)


@functools.cache
def _field_ops(sdf: Callable, dtype: str, ndim: int) -> tuple[KernelOp, KernelOp]:
    return (
        KernelOp("field_values", field_value_kernel(sdf, dtype, ndim),
                 lambda p, params: (p.new_empty(p.shape[0]),), input_names=("points", "params")),
        KernelOp("field_gradients", field_gradient_kernel(sdf, dtype, ndim),
                 lambda p, params: (torch.empty_like(p),), input_names=("points", "params")),
    )  # fmt: skip


def check_field(field: TaichiField) -> None:
    """Raise `TypeError`/`ValueError` unless `field` is a `TaichiField` with finite float params."""
    if not isinstance(field, TaichiField):
        raise TypeError(f"field: expected a TaichiField, got {type(field).__name__}")
    check_tensor("field.params", field.params, dtype=FLOAT_DTYPES)
    params = field.params
    try:
        version = params._version  # torch counts in-place writes; inference tensors have no count
    except RuntimeError:
        version = None
    seen = _FINITE_PARAMS[0]
    if version is not None and seen is not None and seen[0]() is params and seen[1:] == (params.data_ptr(), version):
        return  # checked, and not written since
    check_finite("field.params", params)
    if version is not None:
        _FINITE_PARAMS[0] = (weakref.ref(params), params.data_ptr(), version)


# The last params tensor found finite (weakly held): a render loop checks the same one every frame, and
# reading its values costs a tenth of a 16-ray trace.
_FINITE_PARAMS: list = [None]


def field_values(field: TaichiField, points: torch.Tensor) -> torch.Tensor:
    """SDF values `[N]` at `points [N, 3]`, differentiable w.r.t. points and `field.params`."""
    check_field(field)
    check_tensor("points", points, shape=(None, 3), dtype=field.params.dtype)
    return _field_ops(field.sdf, dtype_name(field.params.dtype), field.params.dim())[0](points, field.params)


def field_gradients(field: TaichiField, points: torch.Tensor, h: float | None = None) -> torch.Tensor:
    """SDF gradients `[N, 3]` at `points [N, 3]` by central differences with step `h` (default 1e-4
    in float32, 1e-6 in float64), differentiable w.r.t. points and `field.params`."""
    check_field(field)
    check_tensor("points", points, shape=(None, 3), dtype=field.params.dtype)
    if h is None:
        h = 1e-4 if field.params.dtype == torch.float32 else 1e-6
    op = _field_ops(field.sdf, dtype_name(field.params.dtype), field.params.dim())[1]
    return op(points, field.params, scalars=(float(h),))


def grid_field(values: torch.Tensor, bound_min=-1.0, bound_max=1.0, name: str = "grid") -> TaichiField:
    """A dense voxel-grid SDF `values [X, Y, Z]` (nodes spanning the box, trilinear in between) as a
    `TaichiField`; `values` may require grad (optimise the grid through the renderer). Its twin is
    `taichi_sdf.reference.implicit.grid.grid_sample(values, points, bound_min, bound_max)`."""
    from taichi_sdf.implicit.grid import _bound
    from taichi_sdf.kernels.implicit.grid import grid_sdf

    lo, hi = _bound("bound_min", bound_min), _bound("bound_max", bound_max)
    if values.dim() != 3 or min(values.shape) < 2:
        raise ValueError(f"values: expected shape [X, Y, Z] with every side >= 2, got {list(values.shape)}")
    radius = max(max(abs(a), abs(b)) for a, b in zip(lo, hi)) * 3**0.5
    return TaichiField(grid_sdf(lo, hi), values, radius, None, name)
