"""SDF function library (vector and lane forms), scenes, grids, the fused tracer and wavefront kernels."""
