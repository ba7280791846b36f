"""Mesh distance kernels (LBVH closest point, winding numbers)."""
