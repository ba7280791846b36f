"""Slow, readable pure-PyTorch twins of every kernel, with the same signatures.

Tests compare each Taichi op with its twin (values and vector-Jacobian products); benchmarks time
them side by side. Each twin's docstring names the op it mirrors.
"""
