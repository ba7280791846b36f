"""Argument checks for the public API: clear `TypeError`/`ValueError`s that name the argument.

Taichi silently copies tensors that live on the wrong device or are not contiguous (and copies them
back after the kernel), which hides bugs and costs time. The public wrappers call `check_tensor` on
every tensor before it reaches a kernel, so that never happens.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from taichi_sdf.core import runtime

FLOAT_DTYPES = (torch.float32, torch.float64)
ShapeSpec = Sequence[int | str | None]


def _fmt_shape(shape: ShapeSpec) -> str:
    return "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"


def check_tensor(
    name: str,
    value,
    *,
    shape: ShapeSpec | None = None,
    dims: dict[str, int] | None = None,
    dtype: torch.dtype | Sequence[torch.dtype] | None = None,
    device: torch.device | str | None = "runtime",
    contiguous: bool = True,
) -> torch.Tensor:
    """Validate one tensor argument and return it unchanged.

    Args:
        name: the argument's name, used in error messages.
        shape: expected shape; ints must match, None matches anything, a str names a dimension that
            must agree across calls sharing the same `dims` dict (it is filled on first sight).
        dtype: allowed dtype(s).
        device: required device; "runtime" (default) means the device Taichi reads zero-copy,
            None skips the check.
        contiguous: require a C-contiguous tensor (Taichi would copy otherwise).
    """
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(value).__name__}")
    if dtype is not None:
        allowed = (dtype,) if isinstance(dtype, torch.dtype) else tuple(dtype)
        if value.dtype not in allowed:
            names = " or ".join(str(d).replace("torch.", "") for d in allowed)
            raise ValueError(f"{name}: expected dtype {names}, got {str(value.dtype).replace('torch.', '')}")
    if shape is not None:
        ok = value.dim() == len(shape)
        if ok:
            for actual, want in zip(value.shape, shape):
                if want is None:
                    continue
                if isinstance(want, str):
                    if dims is None:
                        continue
                    if want in dims and dims[want] != actual:
                        ok = False
                        break
                    dims.setdefault(want, actual)
                elif actual != want:
                    ok = False
                    break
        if not ok:
            detail = ""
            if dims:
                detail = " with " + ", ".join(f"{k}={v}" for k, v in dims.items())
            raise ValueError(f"{name}: expected shape {_fmt_shape(shape)}{detail}, got {list(value.shape)}")
    if device is not None:
        want_dev = runtime.device() if device == "runtime" else torch.device(device)
        problem = device_mismatch(value.device, want_dev)
        if problem:
            raise ValueError(f"{name}: {problem}")
    if contiguous and not value.is_contiguous():
        raise ValueError(f"{name}: expected a contiguous tensor (call .contiguous() first)")
    return value


def device_mismatch(actual: torch.device, want: torch.device) -> str | None:
    """Why a tensor on `actual` cannot be read by kernels running on `want` (None if it can). Types must
    agree and, where `want` has an index, the index too: Taichi's CUDA backend reads the pointer on its
    own GPU, so a `cuda:1` tensor handed to a runtime on cuda:0 would be read on the wrong device (under
    torchrun every rank sees its one GPU as cuda:0; see `taichi_sdf.train.distributed`)."""
    if actual.type != want.type:
        return (f"expected a tensor on {want.type} (the device taichi_sdf runs on), got one on {actual}; "
                f"move it with .to('{want}') or call taichi_sdf.init(arch=...)")  # fmt: skip
    if want.index is not None and (actual.index or 0) != want.index:
        return (f"expected a tensor on {want} (the GPU taichi_sdf runs on), got one on {actual}; move it with "
                f".to('{want}'), or give each process one GPU (CUDA_VISIBLE_DEVICES, or init_distributed under torchrun)")  # fmt: skip
    return None


def check_same_dtype(**tensors: torch.Tensor) -> torch.dtype:
    """All named tensors share one floating dtype; return it."""
    items = list(tensors.items())
    first_name, first = items[0]
    for other_name, other in items[1:]:
        if other.dtype != first.dtype:
            raise ValueError(
                f"{other_name}: expected dtype {str(first.dtype).replace('torch.', '')} like {first_name}, "
                f"got {str(other.dtype).replace('torch.', '')}"
            )
    return first.dtype


def check_finite(name: str, value: torch.Tensor) -> torch.Tensor:
    """Reject NaN/Inf inputs up front instead of letting them spread through a render."""
    if not torch.isfinite(value).all():
        bad = int((~torch.isfinite(value)).sum())
        raise ValueError(f"{name}: contains {bad} non-finite value(s)")
    return value


def unit_directions(name: str, directions: torch.Tensor) -> torch.Tensor:
    """`directions [N, 3] / |directions|`, differentiable: the tracers take ray directions of any
    non-zero length and report `t` along the unit direction. Zero-length rows are refused (counted)."""
    norm = directions.norm(dim=-1, keepdim=True)
    zero = ~(norm[..., 0] > 0)
    if zero.any():
        raise ValueError(f"{name}: {int(zero.sum())} of {len(directions)} directions have zero length; expected "
                         "non-zero vectors (each is normalised)")  # fmt: skip
    return directions / norm
