"""python -m apps.view SOURCE [--size 512] [--shading normals|depth|lambert|color] [--offscreen --frames N --out DIR]

Interactive sphere-tracing viewer on `ti.GUI`. SOURCE is one of:
- a built-in scene name (`csg`, `sphere`, `sphere_box`, `blobs`);
- a Python file defining a `@ti.func sdf(p, params: ti.template())` (optional `PARAMS = [...]`,
  `BOUND_RADIUS`, `sdf_xyz`); `r` reloads it (`--watch`: on every save), errors show in the window;
- a mesh file (.obj/.ply/.glb/.gltf/.stl/.off), normalised into the unit sphere; rasterized by
  `taichi_sdf.mesh.raster` (or sphere-traced as a voxel SDF: `--mesh-mode sdf`);
- an app run folder or checkpoint (IDR: `outputs/idr` or `.../checkpoints/latest.pt`), traced with the
  wavefront DIST tracer and shaded with the app's rendering network.

Mouse: left-drag orbits, right-drag or shift+left-drag pans, the wheel zooms. Keys: 1-4 or m shading
(normals, depth, Lambert, model colour), g ground-truth overlay, s screenshot (PNG), c print the camera,
r reload, q/esc quit. The image renders at 1/4 resolution while the camera moves and refines when it
stops; the window shows the frame time and rays/s, and the console repeats them every 2 s.

`--web` serves the same viewer to a browser instead (viser, `pip install '.[viewer]'`; see
`apps/viewer/web.py`): `--port` (8080), `--host` (127.0.0.1 by default: this machine or an SSH
port-forward only). A `.py` SOURCE is executed as Python code in either viewer: open only files you trust.

`--offscreen` opens no window: it renders an orbit of `--frames` views to `--out` (PNGs, orbit.gif, and
orbit.mp4 when imageio-ffmpeg is installed). Without a display, run the window under `xvfb-run`.

Library use (progress frames from training apps):

    from apps.view import OrbitController, Renderer
    images = Renderer("outputs/idr").render(OrbitController().camera(256, 256))  # normals, depth, lambert, color
"""

from .viewer import (
    MODES,
    IDRSource,
    MLPSource,
    OrbitController,
    Renderer,
    SourceError,
    Viewer,
    load_source,
    main,
    render_orbit,
)

__all__ = ["MODES", "IDRSource", "MLPSource", "OrbitController", "Renderer", "SourceError", "Viewer", "load_source",
           "main", "render_orbit"]  # fmt: skip

if __name__ == "__main__":
    main()
