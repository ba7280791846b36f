"""Twins of taichi_sdf.geometry ops."""
