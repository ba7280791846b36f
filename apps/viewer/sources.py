"""What the viewer can show: a SOURCE string becomes a `Source` that traces camera rays.

Dispatch of `load_source(SOURCE)` (first match wins):

1. a built-in scene name (`csg`, `sphere`, ...; also written `scene:NAME`) -> `FieldSource`;
2. a `.py` file -> `PythonSDFSource`: the file defines a `@ti.func` SDF (rule in its docstring);
3. a mesh file (`.obj .ply .glb .gltf .stl .off`) -> `MeshSource` (hard rasterization, or a voxel SDF);
4. a run folder or a checkpoint file (`.pt .pth .ckpt`): the checkpoint's keys pick the app through
   `CHECKPOINT_KINDS` (IDR -> `IDRSource`, DeepSDF -> `DeepSDFSource`). A run folder means its
   `checkpoints/latest.pt` (else the newest checkpoint in `checkpoints/` or in the folder itself).
   A `#SELECTOR` suffix picks a part of the checkpoint: for DeepSDF, the training shape whose code
   is rendered, by index or instance name (`outputs/deepsdf#3`, `outputs/deepsdf#chair_0007`).

New kinds plug in without touching the dispatcher: append `(name, predicate(state), loader(state,
name, tracer, selector=None))` to `CHECKPOINT_KINDS`.

Every source works in the frame the object was normalised to (inside the sphere of radius
`bound_radius` around the origin, 1 for everything built in here) and implements

    trace(camera, origins [N, 3], directions [N, 3]) -> Hits   (N = H * W, row-major pixels)
    color(points [M, 3], normals [M, 3], directions [M, 3]) -> [M, 3] in [0, 1] or None
    ground_truth() -> Overlay (what the `g` key draws)
    reload()  (the `r` key; raises SourceError and keeps the previous state on failure)
"""

from __future__ import annotations

import importlib.util
import inspect
import itertools
import re
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import taichi_sdf
from taichi_sdf.cameras.camera import Camera
from taichi_sdf.implicit.fields import TaichiField, grid_field
from taichi_sdf.implicit.marchers.dist import DISTMarcher
from taichi_sdf.implicit.marchers.idr import IDRMarcher
from taichi_sdf.implicit.scenes import SCENES, make_scene
from taichi_sdf.implicit.sphere_trace import sphere_trace
from taichi_sdf.implicit.wavefront import march_field
from taichi_sdf.mesh.raster import hard_rasterize, interpolate

MESH_SUFFIXES = (".obj", ".ply", ".glb", ".gltf", ".stl", ".off")
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")


class SourceError(ValueError):
    """A SOURCE that cannot be loaded, reloaded or traced; the message says what and where."""


@dataclass
class Hits:
    """Per-ray tracer output, `[N]` / `[N, 3]` (N = H * W pixels, row-major)."""

    hit: torch.Tensor  # bool
    t: torch.Tensor  # ray distance of the hit
    points: torch.Tensor
    normals: torch.Tensor  # unit, world frame
    evals: int = 0  # field evaluations (0 when not meaningful, e.g. rasterization)


@dataclass
class Overlay:
    """What the ground-truth overlay draws: the silhouette `outline` of the render itself, GT `points`
    `[P, 3]` (same frame as the source) as dots, or nothing with a `message` saying why."""

    kind: str  # "outline" | "points" | "none"
    points: np.ndarray | None = None
    message: str = ""


class Source:
    """Base class: see the module docstring for the contract."""

    kind = "source"
    name = "source"
    bound_radius = 1.0
    has_color = False  # the `color` shading shows the model's own colour (else Phong with an albedo)

    def trace(self, camera: Camera, origins: torch.Tensor, directions: torch.Tensor) -> Hits:
        raise NotImplementedError

    def color(self, points: torch.Tensor, normals: torch.Tensor, directions: torch.Tensor) -> torch.Tensor | None:
        return None

    def ground_truth(self) -> Overlay:
        return Overlay("outline")

    def reload(self) -> None:
        """Re-read the source from disk (a no-op for sources that have no file)."""

    def describe(self) -> str:
        return f"{self.kind} {self.name}"


# -- Taichi fields: built-in scenes and user @ti.func files -------------------------------------------


class FieldSource(Source):
    """A `TaichiField` traced by the fused tracer (one kernel per frame). Built-in scenes show the
    built-in dataset's colours (`taichi_sdf.data.builtin.shade`) as their model colour."""

    kind = "field"

    def __init__(self, field: TaichiField, kind: str = "field", scene_colors: bool = False) -> None:
        self.field = field
        self.kind = kind
        self.name = field.name
        self.bound_radius = float(field.bound_radius)
        self.has_color = scene_colors

    @classmethod
    def scene(cls, name: str) -> FieldSource:
        return cls(make_scene(name), "scene", scene_colors=True)

    def trace(self, camera, origins, directions) -> Hits:
        return _trace_image(self.field, camera, origins, directions)

    def color(self, points, normals, directions):
        if not self.has_color:
            return None
        from taichi_sdf.data.builtin import shade

        return shade(points, normals)


def _trace_image(field: TaichiField, camera, origins, directions) -> Hits:
    """`sphere_trace` of one camera's `[H * W, 3]` rays given as the image they are (the CPU packet
    tracer then marches packets of two image rows together), without min-SDF (the view does not use
    it); `[N]` / `[N, 3]` hits."""
    h, w = camera.height, camera.width
    image = origins.shape[0] == h * w
    o, d = (origins.view(h, w, 3), directions.view(h, w, 3)) if image else (origins, directions)
    with torch.no_grad():
        r = sphere_trace(field, o, d, outputs=("points", "normals"))
    if image:
        r = r.reshape(-1)
    return Hits(r.hit, r.t, r.points, r.normals, r.num_evals)


def _is_ti_func(obj) -> bool:
    return callable(obj) and getattr(obj, "_is_taichi_function", False)


def _takes_p_params(fn) -> bool:
    try:
        names = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return False
    return len(names) == 2


_module_ids = itertools.count()


class PythonSDFSource(FieldSource):
    """A Python file that defines a `@ti.func` SDF; `reload()` (the `r` key) re-imports it.

    The rule for which function is the SDF:
    - the function named by `func=` (`--func NAME`), else the module attribute `SDF` naming or
      holding one, else a function named `sdf`;
    - else the one `@ti.func` defined in the file itself (not imported) taking two arguments
      `(p, params)`; several candidates is an error that lists them.
    The SDF has the signature `sdf(p, params: ti.template())` (p a 3-vector, params an ndarray) and
    returns the signed distance, negative inside, Lipschitz <= 1 (true SDFs and underestimates).

    Optional module attributes: `PARAMS` (a list/array/tensor, the params ndarray; default the
    `params=` argument (`--params`), else zeros, one more than the highest `params[k]` in the SDF's
    source, with a warning), `BOUND_RADIUS` (default 1.0: the object lies in the unit
    sphere), `sdf_xyz` (a lane-generic `@ti.func sdf_xyz(x, y, z, params)` of the same SDF, see
    `taichi_sdf.kernels.implicit.sdf_lanes`, which turns on SIMD packet tracing on CPUs).

    Taichi caches compiled kernels per function object, so each reload gets fresh function objects
    and compiles new kernels (a second or two). The new SDF is test-traced before it replaces the old
    one: an import error, a missing function or a Taichi compile error raises `SourceError` and
    leaves the previous SDF in place.
    """

    def __init__(self, path: str | Path, func: str | None = None, params=None) -> None:
        self.path = Path(path)
        self.func_name = func
        self.default_params = params
        self.warnings: list[str] = []
        self.module = None
        super().__init__(self._load(), "python")
        self.mtime = self._mtime()

    def _mtime(self) -> float:
        try:
            return self.path.stat().st_mtime
        except OSError:
            return 0.0

    def poll_changed(self) -> bool:
        """True once after each change of the file on disk (`--watch`)."""
        m = self._mtime()
        changed, self.mtime = m != self.mtime, m
        return changed

    def _import(self):
        if not self.path.is_file():
            raise SourceError(f"{self.path}: file not found")
        name = f"_taichi_sdf_view_{next(_module_ids)}_{re.sub(r'[^0-9a-zA-Z_]', '_', self.path.stem)}"
        spec = importlib.util.spec_from_file_location(name, self.path)
        if spec is None or spec.loader is None:
            raise SourceError(f"{self.path}: cannot import as a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        import taichi as ti

        def no_init(*args, **kwargs):  # a second ti.init would reset the runtime under the viewer's kernels
            self.warnings.append(f"{self.path}: ignored ti.init(...) at import (the viewer owns the Taichi runtime)")

        real_init, ti.init = ti.init, no_init
        try:
            spec.loader.exec_module(module)
        except BaseException as exc:  # SyntaxError, NameError, SystemExit from the user's file, ...
            sys.modules.pop(name, None)
            if isinstance(exc, KeyboardInterrupt):
                raise
            raise SourceError(f"{self.path}: import failed\n{_short_traceback(exc, self.path)}") from None
        finally:
            ti.init = real_init
        return module

    def _find_sdf(self, module):
        wanted = self.func_name or getattr(module, "SDF", None)
        if callable(wanted):
            if not _is_ti_func(wanted):
                raise SourceError(f"{self.path}: SDF = {getattr(wanted, '__name__', wanted)!r} is not a @ti.func")
            return wanted
        if isinstance(wanted, str):
            fn = getattr(module, wanted, None)
            if not _is_ti_func(fn):
                raise SourceError(f"{self.path}: no @ti.func named {wanted!r} in the file")
            return fn
        if _is_ti_func(getattr(module, "sdf", None)):
            return module.sdf
        candidates = [
            (name, obj) for name, obj in vars(module).items()
            if _is_ti_func(obj) and getattr(obj, "__module__", None) == module.__name__ and _takes_p_params(obj)
            and name != "sdf_xyz"
        ]  # fmt: skip
        if len(candidates) == 1:
            return candidates[0][1]
        if not candidates:
            raise SourceError(
                f"{self.path}: no SDF found: define `@ti.func def sdf(p, params: ti.template())` "
                "(or one @ti.func taking (p, params), or pass --func NAME)"
            )
        names = ", ".join(n for n, _ in candidates)
        raise SourceError(f"{self.path}: several @ti.func SDF candidates ({names}): name one `sdf` or pass --func NAME")

    def _check_signature(self, fn) -> None:
        from taichi.types.annotations import Template

        try:
            params = list(inspect.signature(fn).parameters.values())
        except (TypeError, ValueError):
            return
        if len(params) != 2 or not isinstance(params[1].annotation, Template):
            names = ", ".join(p.name for p in params)
            raise SourceError(f"{self.path}: {fn.__name__}({names}): expected the signature "
                              f"({params[0].name if params else 'p'}, params: ti.template())")  # fmt: skip

    def _params(self, module, fn) -> torch.Tensor:
        raw = getattr(module, "PARAMS", None)
        if raw is None:
            raw = self.default_params
        if raw is None:
            raw = [0.0]
            try:
                used = [int(i) for i in re.findall(r"params\[(\d+)", inspect.getsource(fn))]
            except (OSError, TypeError):
                used = []
            if used and max(used) > 0:
                self.warnings.append(
                    f"{self.path}: the SDF reads params[{max(used)}] but the file defines no PARAMS; using "
                    f"{max(used) + 1} zeros (set PARAMS = [...] in the file or pass --params a,b,c)"
                )
                raw = [0.0] * (max(used) + 1)
        try:
            p = torch.as_tensor(np.asarray(raw, dtype=np.float32)).reshape(-1) if not isinstance(raw, torch.Tensor) else raw
        except (TypeError, ValueError) as exc:
            raise SourceError(f"{self.path}: PARAMS: expected a list of numbers, got {raw!r} ({exc})") from None
        if p.numel() == 0:
            p = torch.zeros(1)
        return p.to(taichi_sdf.device(), torch.float32).contiguous()

    def _load(self) -> TaichiField:
        self.warnings = []
        module = self._import()
        fn = self._find_sdf(module)
        self._check_signature(fn)
        params = self._params(module, fn)
        radius = getattr(module, "BOUND_RADIUS", 1.0)
        xyz = getattr(module, "sdf_xyz", None)
        try:
            field = TaichiField(fn, params, float(radius), name=f"{self.path.name}:{fn.__name__}",
                                sdf_xyz=xyz if _is_ti_func(xyz) else None)  # fmt: skip
        except (TypeError, ValueError) as exc:
            raise SourceError(f"{self.path}: {exc}") from None
        _test_trace(field, self.path)  # compile now: errors surface here, not in the render loop
        self.module = module
        return field

    def reload(self) -> None:
        field = self._load()  # raises SourceError; the old field stays
        self.mtime = self._mtime()
        self.field = field
        self.name = field.name
        self.bound_radius = float(field.bound_radius)


def _short_traceback(exc: BaseException, path: Path | None = None, limit: int = 6) -> str:
    """The last lines of a traceback, keeping the frames in the user's file when there are any."""
    lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
    text = "".join(lines).rstrip().splitlines()
    if path is not None:
        keep = [i for i, ln in enumerate(text) if str(path.name) in ln]
        if keep:
            return "\n".join(text[keep[0]:][-limit * 2:])  # fmt: skip
    return "\n".join(text[-limit:])


def _test_trace(field: TaichiField, path: Path) -> None:
    dev = field.params.device
    o = torch.tensor([[0.0, 0.0, 3.0], [0.0, 3.0, 0.0]], device=dev, dtype=field.params.dtype)
    d = torch.tensor([[0.0, 0.0, -1.0], [0.0, -1.0, 0.0]], device=dev, dtype=field.params.dtype)
    try:
        with torch.no_grad():
            sphere_trace(field, o, d, max_steps=4)
    except Exception as exc:  # Taichi compile errors come in many types
        raise SourceError(f"{path}: the SDF does not compile or trace\n{_short_traceback(exc, path)}") from None


# -- meshes -----------------------------------------------------------------------------------------------


def _load_mesh(path: Path):
    import trimesh

    try:
        mesh = trimesh.load(path, force="mesh", process=False)
    except Exception as exc:  # trimesh raises many types on bad files
        raise SourceError(f"{path}: cannot read mesh ({type(exc).__name__}: {exc})") from None
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise SourceError(f"{path}: expected a triangle mesh with faces, got {type(mesh).__name__}")
    return mesh


def mesh_sdf_grid(vertices: np.ndarray, faces: np.ndarray, resolution: int = 64, bound: float = 1.0,
                  samples: int | None = None) -> np.ndarray:  # fmt: skip
    """Signed distance `[R, R, R]` (float32, negative inside) of a triangle mesh at the nodes of a grid
    spanning [-bound, bound]^3 (node (i, j, k) at x, y, z), in numpy/scipy:

    - |distance|: to the nearest of `samples` (default 50 per grid node on a face of the grid, so the
      spacing stays well under a voxel) random points on the surface and the vertices (KD-tree);
    - sign near the surface (within 1.5 voxels): from the face normal at that nearest point;
    - sign elsewhere: outside = the part of the far-from-surface voxels connected to the grid's border
      (a flood fill), inside = the rest. Holes in a mesh leak the flood fill (the inside then reads as
      outside away from the surface) but leave the zero crossing near the surface in place.
    """
    import trimesh
    from scipy import ndimage
    from scipy.spatial import cKDTree

    mesh = trimesh.Trimesh(vertices, faces, process=False)
    area = float(mesh.area)
    if not area > 0:
        raise SourceError("mesh: zero surface area")
    samples = int(np.clip(50 * resolution**2, 20_000, 1_000_000)) if samples is None else int(samples)
    pts, face_idx = trimesh.sample.sample_surface(mesh, samples, seed=0)
    pts = np.concatenate([pts, mesh.vertices])  # corners and edges exactly represented
    vert_face = np.array([f[0] if len(f) else 0 for f in mesh.vertex_faces.tolist()])
    face_idx = np.concatenate([face_idx, np.clip(vert_face, 0, None)])
    normals = mesh.face_normals[face_idx]
    axis = np.linspace(-bound, bound, resolution)
    grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    dist, nearest = cKDTree(pts).query(grid, workers=-1)
    voxel = 2 * bound / (resolution - 1)
    sign_near = np.where(((grid - pts[nearest]) * normals[nearest]).sum(-1) < 0, -1.0, 1.0)
    band = dist < 1.5 * voxel
    free = ~band.reshape((resolution,) * 3)
    labels, _ = ndimage.label(free)
    border = np.unique(np.concatenate([labels[[0, -1]].ravel(), labels[:, [0, -1]].ravel(), labels[:, :, [0, -1]].ravel()]))
    outside = np.isin(labels, border[border > 0]).reshape(-1)
    sign = np.where(band, sign_near, np.where(outside, 1.0, -1.0))
    return (sign * dist).reshape((resolution,) * 3).astype(np.float32)


class MeshSource(Source):
    """A triangle mesh (trimesh reads .obj/.ply/.glb/...), normalised into the unit sphere (its bounding
    box centred at the origin, its farthest vertex at `radius`).

    mode "raster": `taichi_sdf.mesh.raster.hard_rasterize` (exact, flat face normals, vertex colours as the
    model colour); mode "sdf": sphere tracing of a `grid`^3 voxel SDF built by `mesh_sdf_grid` (an
    approximation: edges are rounded at the voxel size); "auto": raster.
    """

    kind = "mesh"

    def __init__(self, path: str | Path, mode: str = "auto", grid: int = 64, radius: float = 0.8) -> None:
        if mode not in ("auto", "raster", "sdf"):
            raise SourceError(f"mesh mode: expected auto, raster or sdf, got {mode!r}")
        self.path = Path(path)
        self.name = self.path.name
        mesh = _load_mesh(self.path)
        v = np.asarray(mesh.vertices, dtype=np.float64)
        lo, hi = v.min(0), v.max(0)
        self.center = (lo + hi) / 2
        extent = np.linalg.norm(v - self.center, axis=1).max()
        self.scale = radius / max(extent, 1e-12)
        self.vertices_np = ((v - self.center) * self.scale).astype(np.float32)
        self.faces_np = np.asarray(mesh.faces, dtype=np.int32)
        self.mesh = mesh
        if mode == "auto":
            mode = "raster"
        self.mode = mode
        dev = taichi_sdf.device()
        if mode == "raster":
            self.vertices = torch.from_numpy(self.vertices_np).to(dev).contiguous()
            self.faces = torch.from_numpy(self.faces_np).to(dev).contiguous()
            fn = np.asarray(_face_normals(self.vertices_np, self.faces_np), dtype=np.float32)
            self.face_normals = torch.from_numpy(fn).to(dev)
            vc = _vertex_colors(mesh)
            self.vertex_colors = None if vc is None else torch.from_numpy(vc).to(dev).contiguous()
            self.has_color = vc is not None
        else:
            values = mesh_sdf_grid(self.vertices_np, self.faces_np, grid)
            self.field = grid_field(torch.from_numpy(values).to(dev), -1.0, 1.0, name=self.name)
            self.bound_radius = 1.0
        self.kind = f"mesh ({mode})"

    def trace(self, camera, origins, directions) -> Hits:
        if self.mode == "sdf":
            return _trace_image(self.field, camera, origins, directions)
        cam = camera.to(self.vertices.device, self.vertices.dtype)
        out = hard_rasterize(self.vertices, self.faces, cam)
        fid = out.face_id.reshape(-1).long()
        hit = fid >= 0
        from taichi_sdf.cameras.rays import z_per_t

        z = out.depth.reshape(-1).to(origins.dtype)
        cos = z_per_t(cam.T_cam_world, directions.reshape(1, -1, 3)).reshape(-1)
        t = torch.where(hit, z / cos.clamp_min(1e-6), torch.zeros_like(z))
        points = origins + t[:, None] * directions
        normals = self.face_normals[fid.clamp(min=0)]
        # Show the side facing the camera (open meshes, inconsistent winding).
        flip = (normals * directions).sum(-1, keepdim=True) > 0
        normals = torch.where(flip, -normals, normals)
        normals = torch.where(hit[:, None], normals, torch.zeros_like(normals))
        self._last = (out, fid, hit)
        return Hits(hit, t, points, normals, 0)

    def color(self, points, normals, directions):
        if self.mode != "raster" or self.vertex_colors is None:
            return None
        out, fid, hit = self._last
        rgb = interpolate(self.vertex_colors, self.faces, out).reshape(-1, 3)
        return rgb[hit]

    def ground_truth(self) -> Overlay:
        from taichi_sdf.train.metrics import sample_surface

        m = type(self.mesh)(self.vertices_np, self.faces_np, process=False)
        pts, _ = sample_surface(m, 20000, seed=0)
        return Overlay("points", np.asarray(pts, dtype=np.float32))

    def describe(self) -> str:
        return f"{self.kind} {self.name} (x_view = (x - {np.round(self.center, 4).tolist()}) * {self.scale:.4g})"


def _face_normals(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-20)


def _vertex_colors(mesh) -> np.ndarray | None:
    visual = getattr(mesh, "visual", None)
    if visual is None or getattr(visual, "kind", None) != "vertex":
        return None
    c = np.asarray(visual.vertex_colors)[:, :3].astype(np.float32) / 255.0
    return c if c.shape[0] == len(mesh.vertices) and np.ptp(c) > 0 else None


# -- torch MLPs: IDR and DeepSDF checkpoints -----------------------------------------------------------


class MLPSource(Source):
    """A torch SDF `sdf_fn(points [M, 3]) -> [M]` traced by the wavefront tracer (DIST by default:
    coarse-to-fine over the image pyramid, the fast one for whole images), with an optional model
    colour `color_fn(points, normals, directions) -> [M, 3]` in [0, 1]. Training apps wrap their
    networks with this to render progress frames."""

    kind = "mlp"

    def __init__(self, sdf_fn, color_fn=None, name: str = "mlp", tracer: str = "dist", bound_radius: float = 1.0,
                 chunk_size: int = 65536) -> None:  # fmt: skip
        if tracer not in ("dist", "idr"):
            raise SourceError(f"tracer: expected dist or idr, got {tracer!r}")
        self.sdf_fn, self.color_fn, self.name = sdf_fn, color_fn, name
        self.bound_radius = float(bound_radius)
        self.marcher = DISTMarcher(bound_radius=bound_radius) if tracer == "dist" else IDRMarcher(bound_radius=bound_radius)
        self.chunk_size = chunk_size
        self.has_color = color_fn is not None

    def trace(self, camera, origins, directions) -> Hits:
        shape = (1, camera.height, camera.width)  # image rays: coarse-to-fine marchers use the pyramid
        with torch.no_grad():
            r = march_field(self.sdf_fn, origins, directions, marcher=self.marcher, image_shape=shape,
                            chunk_size=self.chunk_size, create_graph=False)  # fmt: skip
        return Hits(r.hit, r.t, r.points, r.normals, r.num_evals)

    def color(self, points, normals, directions):
        if self.color_fn is None or points.shape[0] == 0:
            return None
        with torch.no_grad():
            return self.color_fn(points, normals, directions).clamp(0, 1)


def is_idr_state(state) -> bool:
    return isinstance(state, dict) and {"implicit", "rendering", "config"} <= set(state)


class IDRSource(MLPSource):
    """An IDR run (`python -m apps.idr`): the implicit network rebuilt from the checkpoint's config and
    traced; the model colour is the rendering network's output. The overlay shows the run's ground-truth
    points (`gt`, or `gt_points.npy` next to the data) in the normalised frame.

    `IDRSource(trainer.implicit, trainer.rendering)` renders networks in training as they are (not
    modified); `from_state` builds its own copies and folds their weight norm for speed."""

    kind = "idr"

    def __init__(self, implicit, rendering, name: str = "idr", cfg=None, tracer: str = "dist") -> None:
        self.implicit, self.rendering, self.cfg = implicit, rendering, cfg
        self._gt: Overlay | None = None

        def color(points, normals, directions):
            feat = self.implicit(points)[:, 1:]
            return (self.rendering(points, directions, normals, feat) + 1) / 2

        super().__init__(self.implicit.sdf, color, name, tracer)
        self.kind = "idr"

    @classmethod
    def from_state(cls, state: dict, name: str, tracer: str = "dist") -> IDRSource:
        from taichi_sdf.data.multiview.source import MultiViewDataConfig
        from taichi_sdf.models.idr import IDRModelConfig, build_idr_networks
        from taichi_sdf.train.config import config_from_dict

        saved = state["config"]
        try:  # the sections of the saved config that the viewer needs, typed
            model_cfg = config_from_dict(IDRModelConfig, saved.get("model", {}), f"{name}: config 'model'")
            data_cfg = config_from_dict(MultiViewDataConfig, saved.get("data", {}), f"{name}: config 'data'")
        except (ValueError, AttributeError) as exc:
            raise SourceError(f"{name}: the checkpoint's config does not fit an IDR run: {exc}") from None
        cfg = RunData(data_cfg, saved.get("gt"), saved.get("gt_frame", "world"))
        dev = taichi_sdf.device()
        implicit, rendering = (net.to(dev) for net in build_idr_networks(model_cfg))
        try:
            implicit.load_state_dict(state["implicit"])
            rendering.load_state_dict(state["rendering"])
        except RuntimeError as exc:
            raise SourceError(f"{name}: the networks do not match the saved config: {str(exc).splitlines()[0]}") from None
        for net in (implicit, rendering):
            fold_weight_norm(net)
        return cls(implicit.eval(), rendering.eval(), name, cfg, tracer)

    def ground_truth(self) -> Overlay:
        if self._gt is None:
            self._gt = self._load_gt()
        return self._gt

    def _load_gt(self) -> Overlay:
        if self.cfg is None:
            return Overlay("none", message="no config: ground truth unknown")
        from taichi_sdf.data.multiview.source import default_ground_truth, load_multiview
        from taichi_sdf.train.metrics import load_geometry

        gt, frame = default_ground_truth(self.cfg.data, self.cfg.gt, self.cfg.gt_frame)
        if gt is None or not Path(gt).is_file():
            return Overlay("none", message=f"no ground truth found (looked for {gt})")
        try:
            S = np.eye(4) if frame == "normalized" else load_multiview(self.cfg.data).scale_mat.double().numpy()
            geom = load_geometry(gt, np.linalg.inv(S))
        except (ValueError, OSError) as exc:
            return Overlay("none", message=f"ground truth {gt}: {exc}")
        if isinstance(geom, tuple):
            geom = geom[0]
        if not isinstance(geom, np.ndarray):
            from taichi_sdf.train.metrics import sample_surface

            geom = np.asarray(sample_surface(geom, 20000, seed=0)[0])
        rng = np.random.default_rng(0)
        if len(geom) > 20000:
            geom = geom[rng.choice(len(geom), 20000, replace=False)]
        return Overlay("points", geom.astype(np.float32), message=str(gt))


@dataclass(frozen=True)
class RunData:
    """What the viewer needs of a multi-view run's config to find its ground truth."""

    data: object  # MultiViewDataConfig
    gt: str | None
    gt_frame: str


def fold_weight_norm(net: torch.nn.Module) -> torch.nn.Module:
    """Replace weight-norm parametrizations by their current weights, in place: the same function,
    without recomputing g * v / |v| at every call (the tracer calls the network ~100 times a frame)."""
    from torch.nn.utils import parametrize

    for m in net.modules():
        if parametrize.is_parametrized(m, "weight"):
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
    return net


def is_deepsdf_state(state) -> bool:
    return isinstance(state, dict) and state.get("kind") == "deepsdf" and {"decoder", "latents", "config"} <= set(state)


class DeepSDFSource(MLPSource):
    """A DeepSDF run (`python -m apps.deepsdf train`): the decoder with one training shape's code, traced
    in DeepSDF's normalised frame (shapes in the unit sphere). `#SELECTOR` on the SOURCE picks the
    shape by index or instance name (default 0); the overlay shows that shape's SurfaceSamples."""

    kind = "deepsdf"

    def __init__(self, decoder, code, name: str = "deepsdf", instance=None, data_root=None, tracer: str = "dist") -> None:
        self.decoder, self.code, self.instance, self.data_root = decoder, code, instance, data_root
        super().__init__(decoder.field(code), None, name, tracer)
        self.kind = "deepsdf"

    @classmethod
    def from_state(cls, state: dict, name: str, tracer: str = "dist", selector: str | None = None) -> DeepSDFSource:
        from taichi_sdf.models.deepsdf import DeepSDFModelConfig, build_decoder
        from taichi_sdf.train.config import config_from_dict

        saved = state["config"]
        try:
            model_cfg = config_from_dict(DeepSDFModelConfig, saved.get("model", {}), f"{name}: config 'model'")
            data_root = saved["data"]["root"]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise SourceError(f"{name}: the checkpoint's config does not fit a DeepSDF run: {exc}") from None
        dev = taichi_sdf.device()
        decoder = build_decoder(model_cfg).to(dev)
        try:
            decoder.load_state_dict(state["decoder"])
        except RuntimeError as exc:
            raise SourceError(f"{name}: the decoder does not match the saved config: {str(exc).splitlines()[0]}") from None
        fold_weight_norm(decoder)
        codes = state["latents"].to(dev, torch.float32)
        names = [tuple(it) for it in state.get("instances", [])]
        sel = "0" if selector is None else selector
        if sel.isdigit() and int(sel) < len(codes):
            index = int(sel)
        else:
            matches = [i for i, it in enumerate(names) if sel in (it[-1], "/".join(it))]
            if not matches:
                shown = ", ".join(it[-1] for it in names[:5]) + (", ..." if len(names) > 5 else "")
                raise SourceError(f"{name}#{sel}: no such training shape (indices 0..{len(codes) - 1}, or a name: {shown})")
            index = matches[0]
        code = codes[index]
        bound = model_cfg.code_bound
        if bound is not None and float(code.norm()) > bound:  # what the embedding's max_norm lookup returns
            code = code * (bound / float(code.norm()))
        instance = names[index] if index < len(names) else None
        label = f"{name}#{instance[-1] if instance else index}"
        return cls(decoder.eval(), code, label, instance, data_root, tracer)

    def ground_truth(self) -> Overlay:
        if self.instance is None:
            return Overlay("none", message="no instance name in the checkpoint")
        from taichi_sdf.data.deepsdf import Instance, load_normalization, load_surface_samples, normalize

        it = Instance(*self.instance)
        try:
            pts = load_surface_samples(it.surface_samples(self.data_root))
            offset, scale = load_normalization(it.normalization(self.data_root))
        except (ValueError, OSError) as exc:
            return Overlay("none", message=f"ground truth of {'/'.join(it)}: {exc}")
        pts = normalize(pts, offset, scale)
        if len(pts) > 20000:
            pts = pts[np.random.default_rng(0).choice(len(pts), 20000, replace=False)]
        return Overlay("points", pts.astype(np.float32), message=str(it.surface_samples(self.data_root)))


# name, predicate on the loaded checkpoint, loader(state, name, tracer[, selector=]) -> Source. Append to extend.
CHECKPOINT_KINDS: list = [("idr", is_idr_state, IDRSource.from_state), ("deepsdf", is_deepsdf_state, DeepSDFSource.from_state)]


def _checkpoint_in(folder: Path) -> Path | None:
    from taichi_sdf.train.checkpoint import latest_checkpoint

    for c in (folder / "checkpoints" / "latest.pt", folder / "latest.pt"):
        if c.is_file():
            return c
    for d in (folder / "checkpoints", folder):
        found = latest_checkpoint(d)
        if found:
            return Path(found)
    return None


def load_checkpoint_source(path: Path, tracer: str = "dist", selector: str | None = None) -> Source:
    from taichi_sdf.train.checkpoint import CheckpointError, load_checkpoint

    ckpt = _checkpoint_in(path) if path.is_dir() else path
    if ckpt is None:
        raise SourceError(f"{path}: a folder with no checkpoint (looked for checkpoints/latest.pt and *.pt)")
    try:
        state = load_checkpoint(ckpt, map_location=taichi_sdf.device())
    except (CheckpointError, FileNotFoundError) as exc:
        raise SourceError(str(exc)) from None
    for kind, matches, loader in CHECKPOINT_KINDS:
        if matches(state):
            if selector is None:
                return loader(state, str(ckpt), tracer)
            if "selector" not in inspect.signature(loader).parameters:
                raise SourceError(f"{ckpt}#{selector}: {kind} checkpoints take no #selector")
            return loader(state, str(ckpt), tracer, selector=selector)
    keys = sorted(state)[:12] if isinstance(state, dict) else type(state).__name__
    raise SourceError(f"{ckpt}: unknown checkpoint (keys {keys}); the viewer reads {[k[0] for k in CHECKPOINT_KINDS]}")


# -- dispatch ---------------------------------------------------------------------------------------------


def load_source(source, *, func: str | None = None, params=None, mesh_mode: str = "auto", grid: int = 64,
                tracer: str = "dist") -> Source:  # fmt: skip
    """A `Source` for a SOURCE string (see the module docstring for the dispatch); a `Source` is returned
    as it is. Raises `SourceError` with a message naming what was tried."""
    if isinstance(source, Source):
        return source
    taichi_sdf.init()
    text = str(source)
    name = text[len("scene:"):] if text.startswith("scene:") else text  # fmt: skip
    if name in SCENES:
        return FieldSource.scene(name)
    path = Path(text).expanduser()
    selector = None
    if "#" in text and not path.exists():  # RUN#SELECTOR: a part of a checkpoint (e.g. a DeepSDF shape)
        head, selector = text.rsplit("#", 1)
        path = Path(head).expanduser()
        if not (path.is_dir() or path.suffix.lower() in CHECKPOINT_SUFFIXES):
            raise SourceError(f"SOURCE {text!r}: a #SELECTOR needs a run folder or a checkpoint file before it")
    if path.is_dir():
        return load_checkpoint_source(path, tracer, selector)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".py":
            return PythonSDFSource(path, func, params)
        if suffix in MESH_SUFFIXES:
            return MeshSource(path, mesh_mode, grid)
        if suffix in CHECKPOINT_SUFFIXES:
            return load_checkpoint_source(path, tracer, selector)
        raise SourceError(f"{path}: unknown file type {suffix!r} (expected .py, {', '.join(MESH_SUFFIXES)}, "
                          f"{', '.join(CHECKPOINT_SUFFIXES)} or a run folder)")  # fmt: skip
    raise SourceError(f"SOURCE {text!r}: not a built-in scene ({', '.join(sorted(SCENES))}) and no such file or folder")


def describe_kinds() -> str:
    return (f"built-in scene ({', '.join(sorted(SCENES))}), a .py file with a @ti.func sdf(p, params), a mesh "
            f"({' '.join(MESH_SUFFIXES)}), or an app run folder / checkpoint ({', '.join(k[0] for k in CHECKPOINT_KINDS)}; RUN#N picks a DeepSDF shape)")  # fmt: skip


__all__ = [
    "Source", "SourceError", "Hits", "Overlay", "FieldSource", "PythonSDFSource", "MeshSource", "MLPSource",
    "IDRSource", "DeepSDFSource", "CHECKPOINT_KINDS", "load_source", "load_checkpoint_source", "mesh_sdf_grid", "describe_kinds",
]  # fmt: skip
