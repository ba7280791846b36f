"""The interactive viewer behind `python -m apps.view SOURCE` (see `apps/view.py`).

- `sources`: SOURCE strings -> `Source` objects (built-in scenes, @ti.func files, meshes, app checkpoints);
- `controller`: the orbit camera controller;
- `render`: `Renderer(source).render(camera) -> dict of images` (also for training apps' progress frames);
- `app`: the ti.GUI window (`Viewer`), the offscreen orbit (`render_orbit`) and the CLI (`main`).
"""

from .app import Viewer, main, render_orbit
from .controller import OrbitController
from .render import MODES, Renderer
from .sources import (
    CHECKPOINT_KINDS,
    DeepSDFSource,
    FieldSource,
    IDRSource,
    MeshSource,
    MLPSource,
    Overlay,
    PythonSDFSource,
    Source,
    SourceError,
    load_source,
)

__all__ = [
    "Viewer", "main", "render_orbit", "OrbitController", "MODES", "Renderer", "CHECKPOINT_KINDS", "DeepSDFSource", "FieldSource",
    "IDRSource", "MeshSource", "MLPSource", "Overlay", "PythonSDFSource", "Source", "SourceError", "load_source",
]  # fmt: skip
