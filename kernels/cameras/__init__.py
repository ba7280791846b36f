"""Ray generation kernels."""
