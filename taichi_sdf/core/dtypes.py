"""The one map from torch float dtypes to the names that key the kernel factories (`"f32"`, `"f64"`)."""

import torch

DTYPE_NAMES = {torch.float32: "f32", torch.float64: "f64"}


def dtype_name(dtype: torch.dtype) -> str:
    """`"f32"` | `"f64"` for a torch float dtype (the key of the cached kernel factories in `kernels/`)."""
    try:
        return DTYPE_NAMES[dtype]
    except KeyError:
        raise TypeError(f"dtype: expected torch.float32 or torch.float64, got {dtype}") from None
