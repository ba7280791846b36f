"""Soft/hard rasterizer and texture kernels."""
