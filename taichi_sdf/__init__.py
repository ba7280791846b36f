"""taichi-sdf: differentiable sphere tracing, ray marching and soft rasterization in Taichi,
bridged zero-copy to PyTorch.

Importing this package has no side effects: Taichi is initialised on the first op, or explicitly
with `taichi_sdf.init(arch=...)`.
"""

from .runtime import device, init, is_initialized, sync

__version__ = "0.1.0"
__all__ = ["init", "is_initialized", "device", "sync", "__version__"]
