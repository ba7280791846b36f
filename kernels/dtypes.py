"""Map dtype names to Taichi types (kernel factories are keyed by the name, which is hashable)."""


import taichi as ti

FLOAT_TYPES = {"f32": ti.f32, "f64": ti.f64}


def ti_float(name: str):
    """Taichi float type for "f32" | "f64"."""
    try:
        return FLOAT_TYPES[name]
    except KeyError:
        raise ValueError(f"dtype: expected 'f32' or 'f64', got {name!r}") from None
