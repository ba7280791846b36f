"""Twins of taichi_sdf.mesh ops."""
