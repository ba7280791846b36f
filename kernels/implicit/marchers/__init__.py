"""Kernels of the marchers of torch-callable fields: `common` (bounds, compaction, sampling) and one module per algorithm."""
