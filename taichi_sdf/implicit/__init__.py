"""Implicit surfaces: Taichi-native fields and scenes, voxel grids, the fused sphere tracer, tracing of
torch-callable fields (wavefront marchers) and implicit differentiation at the found surface."""
