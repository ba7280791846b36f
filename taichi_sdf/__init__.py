"""taichi-sdf: differentiable sphere tracing, ray marching and soft rasterization in Taichi,
bridged zero-copy to PyTorch.

Importing this package has no side effects (Taichi is imported but not initialised): call
`taichi_sdf.init(arch=...)` first, or let the first op initialise with arch="auto".
"""

from taichi_sdf import _checkout  # noqa: F401  (first: gives a source checkout the installed names)
from taichi_sdf.cameras.camera import Camera, fibonacci_cameras, look_at, orbit_cameras
from taichi_sdf.core.runtime import device, init, is_initialized, sync
from taichi_sdf.geometry.mesh_sdf import MeshSDF
from taichi_sdf.implicit.fields import TaichiField, field_gradients, field_values, grid_field
from taichi_sdf.implicit.implicit_diff import TraceResult
from taichi_sdf.implicit.marchers import DISTMarcher, DVRMarcher, IDRMarcher, Marcher
from taichi_sdf.implicit.ray_march import ray_march
from taichi_sdf.implicit.scenes import make_scene
from taichi_sdf.implicit.sphere_trace import sphere_trace
from taichi_sdf.implicit.wavefront import DISTTracer, IDRTracer, march_field, sphere_trace_mlp
from taichi_sdf.mesh.raster import RasterSettings, SoftRasterizer, hard_rasterize, soft_rasterize
from taichi_sdf.mesh.render import MeshRender, MeshRenderer, render_mesh
from taichi_sdf.mesh.shading import DirectionalLight, Material, face_normals, sh_irradiance, vertex_normals
from taichi_sdf.mesh.texture import sample_texture

__version__ = "0.1.0"
__all__ = [
    "init", "is_initialized", "device", "sync",
    "Camera", "look_at", "orbit_cameras", "fibonacci_cameras",
    "TaichiField", "grid_field", "make_scene", "MeshSDF",
    "soft_rasterize", "hard_rasterize", "SoftRasterizer", "RasterSettings",
    "render_mesh", "MeshRenderer", "MeshRender", "sample_texture", "DirectionalLight", "Material",
    "vertex_normals", "face_normals", "sh_irradiance",
    "sphere_trace", "field_values", "field_gradients", "TraceResult",
    "march_field", "Marcher", "IDRMarcher", "DISTMarcher", "DVRMarcher", "ray_march",
    "sphere_trace_mlp", "IDRTracer", "DISTTracer",
    "__version__",
]  # fmt: skip
