"""Twins of taichi_sdf.implicit ops."""
