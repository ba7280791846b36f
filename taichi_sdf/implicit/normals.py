"""Normals of torch-callable fields by central finite differences (DVR's `get_central_difference` and
`get_normals`, `im2mesh/dvr/models/__init__.py`), for the normal-smoothness loss.

The field's contract is `march_field`'s: `fn(points [M, 3]) -> [M]` or `[M, 1 + F]` (column 0 is the
field value). Finite differences instead of autograd keep the loss a plain function of the network
outputs (DVR's choice); the result is differentiable w.r.t. the field's parameters and the points.

Sign: the normal is the normalised gradient of the field, so it points towards increasing values:
INTO the object for an occupancy logit (DVR's decoder, positive inside; DVR uses it as is), out of
it for an SDF. Negate for outward normals of an occupancy field.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from taichi_sdf.core.validation import FLOAT_DTYPES, check_tensor

__all__ = ["central_difference_normals", "neighbour_normals"]

MIN_NORM = 1e-5  # DVR's normalize_tensor(min_norm=1e-5), applied to the un-divided differences


def central_difference_normals(
    fn: Callable[[torch.Tensor], torch.Tensor],
    points: torch.Tensor,  # [N, 3]
    h: float = 1e-3,
) -> torch.Tensor:  # [N, 3]
    """Unit normals `[N, 3]` of the field `fn` at `points [N, 3]`: `d / max(||d||, 1e-5)` with
    `d_i = f(x + h/2 e_i) - f(x - h/2 e_i)` (DVR: h = 1e-3; it does not divide by h, and neither is it
    divided here, so the 1e-5 floor acts on the same numbers). One call of `fn` on all `6N` points,
    point-major (rows 6i..6i+5 are point i's +x, -x, +y, -y, +z, -z), so a field with one code per
    point takes `codes.repeat_interleave(6, dim=0)`.
    Points where the field is flat (`||d|| < 1e-5`) get a short, not unit, vector, as in DVR."""
    if not callable(fn):
        raise TypeError(f"fn: expected a callable points [M, 3] -> [M] or [M, 1 + F], got {type(fn).__name__}")
    check_tensor("points", points, shape=(None, 3), dtype=FLOAT_DTYPES, device=None, contiguous=False)
    if not (isinstance(h, (int, float)) and h > 0):
        raise ValueError(f"h: expected a step > 0, got {h!r}")
    n = points.shape[0]
    if n == 0:
        return points.new_zeros(0, 3)
    eye = torch.eye(3, dtype=points.dtype, device=points.device)
    offsets = torch.stack([eye, -eye], dim=1).reshape(6, 3) * (h / 2)  # +x, -x, +y, -y, +z, -z
    out = fn((points.unsqueeze(1) + offsets).reshape(6 * n, 3))
    if not isinstance(out, torch.Tensor) or out.dim() not in (1, 2) or out.shape[0] != 6 * n:
        shape = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"fn: expected output [M] or [M, 1 + F] for M={6 * n} points, got {shape}")
    f = (out[:, 0] if out.dim() == 2 else out).reshape(n, 3, 2)
    d = f[..., 0] - f[..., 1]
    return d / d.norm(dim=-1, keepdim=True).clamp_min(MIN_NORM)


def neighbour_normals(
    fn: Callable[[torch.Tensor], torch.Tensor],
    points: torch.Tensor,  # [N, 3]
    h_sample: float = 1e-3,
    h: float = 1e-3,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:  # [N, 3], [N, 3]
    """The two normal sets of DVR's smoothness loss: at `points [N, 3]` and at one random neighbour
    per point, `points + U(-h_sample/2, h_sample/2)^3` (DVR `get_normals`: h_sample = h = 1e-3), both
    by `central_difference_normals` with step `h`. DVR passes detached surface points (gradients go
    to the network only); detach them before calling to do the same. Returns `(n [N, 3], n_nb [N, 3])`."""
    check_tensor("points", points, shape=(None, 3), dtype=FLOAT_DTYPES, device=None, contiguous=False)
    if not (isinstance(h_sample, (int, float)) and h_sample >= 0):
        raise ValueError(f"h_sample: expected a neighbourhood size >= 0, got {h_sample!r}")
    jitter = torch.rand(points.shape, generator=generator, dtype=points.dtype, device=points.device)
    neighbours = points + (jitter - 0.5) * h_sample
    return central_difference_normals(fn, points, h), central_difference_normals(fn, neighbours, h)
