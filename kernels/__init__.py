"""Taichi code only: `@ti.func` libraries and `@ti.kernel` factories.

Kernels take torch tensors as `ti.types.ndarray` arguments and know nothing else of torch. Every
kernel comes from a `functools.cache`d factory keyed by hashable options (a dtype name, a frozen
config), so float32 and float64 variants coexist in one Taichi runtime.

NB: modules here must not use `from __future__ import annotations`: Taichi reads the annotations
of kernels and funcs as objects when they are decorated.
"""
