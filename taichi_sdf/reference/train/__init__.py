"""Twins of taichi_sdf.train ops."""
