"""Twins of taichi_sdf.cameras ops."""
