"""Torch twin of `taichi_sdf.mesh.render.render_mesh`: the same pipeline on the torch twins of the
rasterizer and of the texture sampler (the shading is plain torch and shared)."""

from __future__ import annotations

from taichi_sdf.mesh.render import MeshRender, _Backend, _render
from taichi_sdf.reference.mesh import raster as _raster
from taichi_sdf.reference.mesh import texture as _texture

_TWIN = _Backend(_raster.soft_rasterize, _raster.hard_rasterize, _texture.sample_texture)


def render_mesh(vertices, faces, cameras, *, colors=None, texture=None, normals="smooth", shading="lambert",
                light=None, material=None, mode="softras", settings=None, address="clamp",
                **overrides) -> MeshRender:  # fmt: skip
    """Twin of `taichi_sdf.mesh.render.render_mesh`."""
    return _render(_TWIN, vertices, faces, cameras, colors, texture, normals, shading, light, material, mode,
                   settings, address, overrides)  # fmt: skip
