"""The marcher protocol: how `taichi_sdf.implicit.wavefront.march_field` runs a marching algorithm.

A marcher is a small object (a frozen dataclass of the algorithm's options) with one method:

    march(evaluate, origins, directions, *, level, image_shape) -> MarchResult

- `evaluate(points [M, 3]) -> [M]` is a `FieldEvaluator`: the user's field (column 0), called with no
  grad, in chunks, with a check for non-finite values, counting every point. A marcher calls only it
  (never the user's callable) and evaluates only the rays still active, in as few calls as it can:
  each call is one batch of the (expensive) field, each Taichi launch ~0.1-0.3 ms.
- `origins, directions`: `[N, 3]` detached, contiguous rays on the runtime device, directions unit
  (`march_field` normalises the user's directions).
- `level`: the level set `f = level` to find. A marcher states which side it takes as inside (SDF
  marchers: `f - level < 0`; an occupancy marcher: `f - level > 0`) and evaluates `f - level`.
- `image_shape`: `(B, H, W)` when the rays are B row-major images (coarse-to-fine marchers use it;
  others ignore it), else None.
- It returns a `MarchResult` (`hit`, `t`, `t_min`, optional per-ray `steps`; `[N]`, no grad, on the
  rays' device), which is all the differentiable step (`implicit_diff.trace_result`) needs: it never
  differentiates the loop. `t_min` must be finite for every ray (the min-SDF / mask-loss point).
- `name` (a class attribute) names the algorithm; the torch twins in `taichi_sdf.reference.implicit`
  look up their own implementation of it by this name.

A new algorithm (DVR's occupancy marcher: uniform proposals, first outside -> inside sign change of
`f - level`, secant refinement) is one module `marchers/<name>.py` with such a class, plus its
kernels in `taichi_sdf.kernels.implicit.marchers.<name>` (one `functools.cache` factory keyed by the
dtype name); `march_field` needs no change.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar, Protocol, runtime_checkable

import torch

from taichi_sdf.implicit.implicit_diff import MarchResult

__all__ = ["Marcher", "MarchResult", "FieldEvaluator", "check_options", "compact", "shifted", "sort_gathered"]


def check_options(marcher, positive: tuple[str, ...] = (), at_least: dict[str, int] | None = None) -> None:
    """A marcher's `__post_init__` check: the named options are finite floats > 0 (`positive`) or ints
    of at least the given value (`at_least`); raises ValueError naming the option."""
    for key in positive:
        v = getattr(marcher, key)
        if not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0):
            raise ValueError(f"{type(marcher).__name__}.{key}: expected a finite float > 0, got {v!r}")
    for key, least in (at_least or {}).items():
        v = getattr(marcher, key)
        if not (isinstance(v, int) and not isinstance(v, bool) and v >= least):
            raise ValueError(f"{type(marcher).__name__}.{key}: expected an int >= {least}, got {v!r}")


@runtime_checkable
class Marcher(Protocol):
    """A marching algorithm for torch-callable fields (see the module docstring for the contract)."""

    name: ClassVar[str]

    def march(
        self,
        evaluate: Callable[[torch.Tensor], torch.Tensor],
        origins: torch.Tensor,  # [N, 3]
        directions: torch.Tensor,  # [N, 3]
        *,
        level: float,
        image_shape: tuple[int, int, int] | None,
    ) -> MarchResult: ...


class FieldEvaluator:
    """Calls a torch field without gradients, in chunks; checks outputs; counts evaluated points.

    The field's contract: `fn(points [M, 3]) -> [M]` or `[M, 1 + F]` (column 0 is the field value).
    """

    def __init__(self, fn: Callable, chunk_size: int, dtype: torch.dtype) -> None:
        if not callable(fn):
            raise TypeError(f"fn: expected a callable points [M, 3] -> [M] or [M, 1 + F], got {type(fn).__name__}")
        if not (isinstance(chunk_size, int) and chunk_size > 0):
            raise ValueError(f"chunk_size: expected a positive int, got {chunk_size!r}")
        self.fn, self.chunk_size, self.dtype = fn, chunk_size, dtype
        self.count = 0

    def values(self, points: torch.Tensor) -> torch.Tensor:
        """Column 0 of fn(points) as `[M]` (differentiable; used for the implicit step)."""
        out = self.fn(points)
        if not isinstance(out, torch.Tensor) or out.shape[0] != points.shape[0] or out.dim() not in (1, 2):
            shape = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"fn: expected output [M] or [M, 1 + F] for M={points.shape[0]} points, got {shape}")
        return (out[:, 0] if out.dim() == 2 else out).to(points.dtype)

    sdf = values  # former name

    @torch.no_grad()
    def __call__(self, points: torch.Tensor) -> torch.Tensor:
        if points.shape[0] == 0:
            return points.new_empty(0)
        vals = torch.cat([self.values(c) for c in points.split(self.chunk_size)]).contiguous()
        if not torch.isfinite(vals).all():
            bad = int((~torch.isfinite(vals)).sum())
            raise ValueError(f"fn: returned {bad} non-finite SDF value(s) out of {len(vals)}")
        self.count += points.shape[0]
        return vals


def shifted(evaluate: Callable[[torch.Tensor], torch.Tensor], level: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """`x -> evaluate(x) - level` (the field whose zero set a marcher traces); `evaluate` when level is 0."""
    if level == 0.0:
        return evaluate
    return lambda x: (evaluate(x) - level).contiguous()


def compact(flags: torch.Tensor) -> torch.Tensor:
    """int32 indices `[M]` of the rays whose flag `[N]` is non-zero, in increasing order (a fixed order:
    the field's values depend on a point's row in its batch at the ulp level, DESIGN section 6)."""
    return flags.nonzero().squeeze(1).to(torch.int32)


def sort_gathered(slots: torch.Tensor, points: torch.Tensor, m: int) -> None:
    """Put the first `m` gathered `slots [M]` (unique ints) and their `points [M, 3]` in increasing
    slot order, in place. Gathers with an atomic slot counter write in a scheduling-dependent order;
    sorting makes each field batch, and so every value, independent of thread timing."""
    if m > 1:
        s, perm = torch.sort(slots[:m])
        slots[:m] = s
        points[:m] = points[:m][perm]
