"""Geometry: mesh-to-SDF queries, marching-cubes meshing, SDF sampling, procedural shape families."""
