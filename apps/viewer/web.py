"""The browser viewer: `python -m apps.view SOURCE --web [--port P] [--host H]`, served with viser.

Every SOURCE the desktop viewer takes works here (same `Renderer`, same sources). The page shows:
- the project's own render at the browser's camera as the background image (render-on-demand: 1/`coarse`
  of the width while the camera moves, the full width once it has been still for `MOVING_SECONDS`);
- a real 3D scene beside it: the extracted mesh (marching cubes of the source's field at the iso-level
  of the slider; a mesh SOURCE shows itself), the dataset's cameras as frusta with their images (IDR
  runs), and the ground-truth point cloud (IDR / DeepSDF runs), each with a visibility toggle;
- widgets: shading, resolution, iso-level, checkpoint / shape picker (runs with several), reload
  (`.py` files; `watch` reloads on save), screenshot (PNG), turntable video (MP4 when imageio-ffmpeg is
  installed, else GIF), and a camera-path recorder (keyframes, play, render, save / load JSON).

All rendering, meshing and reloading runs on the main thread (`serve` / `work_once`): Taichi compiles
kernels only on the thread that initialised it, and the source is never used from two threads. viser's
callbacks (its own threads) only queue jobs or flip settings.

The viewer executes the code of `.py` SOURCE files (that is the point of them): serve only files you
trust. It listens on 127.0.0.1 unless `host` says otherwise; reach it from another machine with an SSH
port-forward (`ssh -L 8080:localhost:8080 server`) rather than exposing it.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from pathlib import Path

import numpy as np
import torch

from taichi_sdf.cameras.viser_camera import vertical_fov, viser_pose
from taichi_sdf.data.image_io import write_image
from taichi_sdf.train.live import client_camera, import_viser, to_uint8

from .camera_path import CameraPath
from .controller import OrbitController
from .render import MODES, Renderer
from .sources import CHECKPOINT_SUFFIXES, DeepSDFSource, FieldSource, IDRSource, MeshSource, MLPSource, SourceError

__all__ = ["WebViewer", "field_function", "write_video", "checkpoint_choices", "MOVING_SECONDS"]

MOVING_SECONDS = 0.25  # a camera updated this recently is moving: render coarse
BAND_SECONDS = 0.25  # a still image renders in bands of rows of about this long (checking for camera moves between)
RESOLUTIONS = ("128", "256", "512", "768", "1024")


def field_function(source):
    """A torch callable `points [N, 3] -> values [N]` of the source's SDF (for marching cubes), or None
    for sources with no field (a rasterized mesh shows its own triangles)."""
    if isinstance(source, MLPSource):
        return source.sdf_fn
    field = getattr(source, "field", None)
    if isinstance(source, (FieldSource, MeshSource)) and field is not None:
        return lambda p: field.values(p.to(field.params.device, field.params.dtype).contiguous()).reshape(-1)
    return None


def write_video(frames: list[np.ndarray], stem: str | Path, fps: float = 24.0) -> tuple[Path, str]:
    """Write uint8 `[H, W, 3]` frames to `stem.mp4` (libx264 through imageio-ffmpeg) or, when that is not
    installed, to `stem.gif`; returns the path and a message for the user."""
    import imageio.v3 as iio

    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    h = min(f.shape[0] for f in frames) // 2 * 2  # x264 wants even sizes
    w = min(f.shape[1] for f in frames) // 2 * 2
    stack = np.stack([f[:h, :w] for f in frames])
    try:
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        path = stem.with_suffix(".gif")
        iio.imwrite(path, stack, duration=1000.0 / fps, loop=0)
        return path, f"wrote {path} (GIF: install imageio-ffmpeg for MP4)"
    path = stem.with_suffix(".mp4")
    iio.imwrite(path, stack, fps=fps, codec="libx264")
    return path, f"wrote {path}"


def checkpoint_choices(source_text: str) -> list[Path]:
    """The checkpoints of the run a SOURCE string names (run folder or checkpoint file, `#selector`
    dropped), newest name last; empty for other sources."""
    head = source_text.rsplit("#", 1)[0] if "#" in source_text and not Path(source_text).exists() else source_text
    path = Path(head).expanduser()
    if path.is_file() and path.suffix.lower() in CHECKPOINT_SUFFIXES:
        folder = path.parent
    elif path.is_dir():
        folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    else:
        return []
    found = sorted(p for p in folder.glob("*") if p.suffix.lower() in CHECKPOINT_SUFFIXES)
    latest = [p for p in found if p.stem == "latest"]
    return [p for p in found if p.stem != "latest"] + latest


class WebViewer:
    """A viser server showing a `Renderer`'s source (see the module docstring).

    Args:
        renderer: what to show.
        host, port: where to listen (127.0.0.1: this machine only).
        size: image width when the camera is still; `coarse` divides it while the camera moves.
        controller: the initial camera (default: `OrbitController()`).
        out_dir: where screenshots, videos and camera paths are written.
        mesh_resolution: marching-cubes samples per axis for the mesh in the 3D scene (0: no mesh).
        source_text: the SOURCE string (for the checkpoint / shape pickers and reloads of run sources).
        watch: reload a `.py` SOURCE when its file changes.
    """

    def __init__(self, renderer: Renderer, host: str = "127.0.0.1", port: int = 8080, size: int = 512, coarse: int = 4,
                 controller: OrbitController | None = None, mode: str | None = None, out_dir: str | Path = "screenshots",
                 mesh_resolution: int = 64, source_text: str | None = None, load_kw: dict | None = None,
                 watch: bool = False, verbose: bool = True) -> None:  # fmt: skip
        viser = import_viser()
        self.renderer = renderer
        self.size, self.coarse = int(size), max(1, int(coarse))
        self.mode = mode or renderer.default_mode()
        if self.mode not in MODES:
            raise ValueError(f"mode: expected one of {MODES}, got {self.mode!r}")
        self.ctrl = controller or OrbitController()
        self.out_dir = Path(out_dir)
        self.mesh_resolution = int(mesh_resolution)
        self.level = 0.0
        self.source_text = source_text or ""
        self.load_kw = dict(load_kw or {})
        self.watch = watch
        self.verbose = verbose
        self.version = 0  # bumped by anything that changes the picture: forces a re-render
        self.frame_log: list[dict] = []  # one entry per image: width, height, moving, seconds
        self.seconds_per_pixel: float | None = None  # measured render speed (sizes the bands)
        self.messages: list[str] = []
        self.path = CameraPath()
        self.jobs: queue.Queue = queue.Queue()
        self._shown: dict[int, tuple] = {}
        self._stop = threading.Event()
        self.server = viser.ViserServer(host=host, port=int(port), verbose=False)
        self.url = f"http://{host}:{self.server.get_port()}"
        self.server.scene.set_up_direction("+y")
        self.server.initial_camera.position = tuple(self.ctrl.eye())
        self.server.initial_camera.look_at = tuple(self.ctrl.target)
        self.server.initial_camera.up = (0.0, 1.0, 0.0)
        self.server.initial_camera.fov = self._fov_y()
        self._build_gui()
        self._build_scene()
        t0 = time.perf_counter()  # compile the tracer now, not when the first browser connects
        self.renderer.render(self.ctrl.camera(16, 16), (self.mode,))
        self.warmup_seconds = time.perf_counter() - t0

    def _fov_y(self) -> float:
        return vertical_fov(self.ctrl.camera(self.size, self.size))

    # -- messages -------------------------------------------------------------------------------------------

    def say(self, text: str) -> None:
        self.messages.append(text)
        self.status.content = text
        if self.verbose:
            print(f"[view] {text}", flush=True)

    # -- page -----------------------------------------------------------------------------------------------

    def _build_gui(self) -> None:
        gui = self.server.gui
        self.status = gui.add_markdown(f"**{self.renderer.source.describe()}**")
        self.stats = gui.add_markdown("")
        with gui.add_folder("Render"):
            self.mode_dropdown = gui.add_dropdown("Shading", MODES, initial_value=self.mode)
            self.mode_dropdown.on_update(lambda _: self.set_mode(self.mode_dropdown.value))
            res = str(self.size) if str(self.size) in RESOLUTIONS else RESOLUTIONS[2]
            self.res_dropdown = gui.add_dropdown("Resolution", RESOLUTIONS, initial_value=res)
            self.res_dropdown.on_update(lambda _: self.set_size(int(self.res_dropdown.value)))
        with gui.add_folder("Scene"):
            self.level_slider = gui.add_slider("Iso-level", -0.3, 0.3, 0.01, 0.0)
            self.level_slider.on_update(lambda _: self.jobs.put(("mesh", float(self.level_slider.value))))
            self.mesh_box = gui.add_checkbox("Mesh", False)  # off: it would hide the render it matches
            self.mesh_box.on_update(lambda _: self._set_visible("/mesh", self.mesh_box.value))
            self.frusta_box = gui.add_checkbox("Dataset cameras", True)
            self.frusta_box.on_update(lambda _: self._set_visible("/dataset", self.frusta_box.value))
            self.gt_box = gui.add_checkbox("Ground-truth points", False)
            self.gt_box.on_update(lambda _: self.jobs.put(("gt", bool(self.gt_box.value))))
        self._build_pickers()
        with gui.add_folder("Export"):
            self.shot_button = gui.add_button("Screenshot (PNG)")
            self.shot_button.on_click(lambda e: self.jobs.put(("screenshot", e.client)))
            self.frames_slider = gui.add_slider("Turntable frames", 8, 120, 4, 36)
            self.turntable_button = gui.add_button("Turntable video")
            self.turntable_button.on_click(lambda e: self.jobs.put(("turntable", e.client)))
        with gui.add_folder("Camera path"):
            self.path_info = gui.add_markdown("0 keyframes")
            gui.add_button("Add keyframe").on_click(lambda e: self.add_keyframe(e.client))
            gui.add_button("Clear").on_click(lambda _: self._clear_path())
            self.path_file = gui.add_text("JSON file", str(self.out_dir / "camera_path.json"))
            gui.add_button("Save").on_click(lambda e: self.jobs.put(("save_path", e.client)))
            gui.add_button("Load").on_click(lambda _: self.jobs.put(("load_path", None)))
            gui.add_button("Play").on_click(lambda e: self.jobs.put(("play_path", e.client)))
            gui.add_button("Render path video").on_click(lambda e: self.jobs.put(("render_path", e.client)))

    def _build_pickers(self) -> None:
        gui = self.server.gui
        self.reload_button = None
        if getattr(self.renderer.source, "kind", "") == "python":
            self.reload_button = gui.add_button("Reload .py")
            self.reload_button.on_click(lambda _: self.jobs.put(("reload", None)))
        ckpts = checkpoint_choices(self.source_text) if self.source_text else []
        self.ckpt_dropdown = None
        if len(ckpts) > 1:
            names = tuple(str(p) for p in ckpts)
            self.ckpt_dropdown = gui.add_dropdown("Checkpoint", names, initial_value=names[-1])
            self.ckpt_dropdown.on_update(lambda _: self.jobs.put(("source", self._source_for(self.ckpt_dropdown.value))))
        self.shape_dropdown = None
        src = self.renderer.source
        if isinstance(src, DeepSDFSource):
            shapes = self._deepsdf_shapes()
            if len(shapes) > 1:
                self.shape_dropdown = gui.add_dropdown("Shape", shapes, initial_value=shapes[self._shape_index(shapes)])
                self.shape_dropdown.on_update(lambda _: self.jobs.put(("source", self._source_for())))

    def _deepsdf_shapes(self) -> tuple[str, ...]:
        from taichi_sdf.train.checkpoint import load_checkpoint

        ckpt = self.renderer.source.name.rsplit("#", 1)[0]
        try:
            state = load_checkpoint(ckpt, map_location="cpu")
        except Exception:  # noqa: BLE001 - a picker is optional; the source itself loaded
            return ()
        names = [tuple(it)[-1] for it in state.get("instances", [])]
        return tuple(f"{i}: {n}" for i, n in enumerate(names)) or tuple(str(i) for i in range(len(state["latents"])))

    def _shape_index(self, shapes) -> int:
        inst = self.renderer.source.instance
        for i, s in enumerate(shapes):
            if inst is not None and s.endswith(f": {inst[-1]}"):
                return i
        return 0

    def _source_for(self, checkpoint: str | None = None) -> str:
        """The SOURCE string of the picked checkpoint and shape."""
        text = checkpoint or (self.ckpt_dropdown.value if self.ckpt_dropdown is not None else self.renderer.source.name)
        text = text.rsplit("#", 1)[0] if not Path(text).exists() else text
        if self.shape_dropdown is not None:
            text += "#" + self.shape_dropdown.value.split(":")[0]
        return text

    def _build_scene(self) -> None:
        scene = self.server.scene
        self.gt_handle = None
        self.mesh_handle = None
        self.frusta: list = []
        src = self.renderer.source
        if isinstance(src, MeshSource) and getattr(src, "mode", "raster") == "raster":
            self.mesh_handle = scene.add_mesh_simple("/mesh", src.vertices_np, src.faces_np, color=(200, 140, 80),
                                                     visible=self.mesh_box.value)  # fmt: skip
        elif self.mesh_resolution > 0:
            self.jobs.put(("mesh", self.level))
        self._add_frusta()
        self.frusta_box.visible = bool(self.frusta)  # only sources with a dataset have cameras to show

    def _add_frusta(self) -> None:
        src = self.renderer.source
        if not (isinstance(src, IDRSource) and src.cfg is not None):
            return
        from taichi_sdf.data.multiview.source import load_multiview

        try:
            data = load_multiview(src.cfg.data, log=None)
        except (ValueError, OSError) as exc:
            self.say(f"dataset cameras not shown: {exc}")
            return
        cams = data.cameras.to("cpu", torch.float32)
        step = max(1, len(cams) // 64)  # each frustum carries its image to the browser
        for i in range(0, len(cams), step):
            wxyz, pos = viser_pose(cams, i)
            self.frusta.append(self.server.scene.add_camera_frustum(
                f"/dataset/cam_{i:03d}", vertical_fov(cams, i), cams.width / cams.height, scale=0.1,
                image=to_uint8(data.images[i]), wxyz=wxyz, position=pos))  # fmt: skip

    def _set_visible(self, name: str, visible: bool) -> None:
        for h in [self.mesh_handle] if name == "/mesh" else self.frusta:
            if h is not None:
                h.visible = bool(visible)

    # -- settings (any thread) ------------------------------------------------------------------------------

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
        self.mode = mode
        self.version += 1

    def set_size(self, size: int) -> None:
        if size < 16:
            raise ValueError(f"size: expected >= 16 pixels, got {size}")
        self.size = int(size)
        self.version += 1

    def add_keyframe(self, client) -> None:
        cam = client.camera
        self.path.add(cam.position, cam.wxyz, cam.fov)
        self.path_info.content = f"{len(self.path)} keyframes"

    def _clear_path(self) -> None:
        self.path.clear()
        self.path_info.content = "0 keyframes"

    # -- the main thread ------------------------------------------------------------------------------------

    def serve(self, seconds: float | None = None) -> None:
        """Work until `seconds` have passed (None: until `stop()` or Ctrl-C), on the calling thread, which
        must be the one that initialised Taichi. A failing job or render is shown, not raised."""
        end = None if seconds is None else time.perf_counter() + seconds
        while not self._stop.is_set() and (end is None or time.perf_counter() < end):
            try:
                busy = self.work_once()
            except Exception as exc:  # noqa: BLE001 - keep serving; show what went wrong
                self.say(f"error: {type(exc).__name__}: {exc}")
                busy = False
            if not busy:
                time.sleep(0.02)

    def work_once(self) -> bool:
        """One round: run one queued job, poll a watched file, render for each client whose image is
        stale. Returns whether it did anything."""
        did = False
        try:
            job, arg = self.jobs.get_nowait()
        except queue.Empty:
            pass
        else:
            getattr(self, f"_job_{job}")(arg)
            did = True
        src = self.renderer.source
        if self.watch and hasattr(src, "poll_changed") and src.poll_changed():
            self._job_reload(None)
            did = True
        return self.render_clients() or did

    def render_clients(self) -> bool:
        """Render for each connected client whose image is stale: a moving camera gets one coarse image,
        a still one the full width in bands of rows, abandoned as soon as the camera moves again (a slow
        source then answers the mouse after one band, not after a whole image)."""
        rendered = False
        for client_id, client in list(self.server.get_clients().items()):
            stamp = getattr(client.camera, "update_timestamp", 0.0)
            moving = time.time() - stamp < MOVING_SECONDS
            width = max(16, self.size // self.coarse) if moving else self.size
            cam = client_camera(client, width)
            if cam is None:
                continue
            key = (tuple(cam.T_cam_world.flatten().tolist()), cam.K[0, 1, 1].item(), width, cam.height, self.mode, self.version)
            if self._shown.get(client_id) == key:
                continue
            abort = None if moving else (lambda c=client, s=stamp: c.camera.update_timestamp != s)
            img = self.render_image(cam, moving, abort=abort)
            if img is None:  # the camera moved: the next round starts over, coarse
                continue
            client.scene.set_background_image(img, format="jpeg", jpeg_quality=90)
            self._shown[client_id] = key
            rendered = True
        return rendered

    def render_image(self, camera, moving: bool = False, mode: str | None = None, abort=None) -> np.ndarray | None:
        """uint8 `[H, W, 3]` of `camera` in the current (or the given) shading, rendered in bands of about
        `BAND_SECONDS` each; `abort()` is asked between bands (None is returned when it says so). Logs the
        frame time."""
        from .app import band_camera

        mode = mode or self.mode
        H, W = camera.height, camera.width
        rows = H if self.seconds_per_pixel is None else max(1, min(H, int(BAND_SECONDS / (self.seconds_per_pixel * W))))
        img = np.zeros((H, W, 3), np.uint8)
        seconds = 0.0
        for r0 in range(0, H, rows):
            if r0 and abort is not None and abort():
                return None
            band = camera if rows == H else band_camera(camera, r0, min(H, r0 + rows))
            img[r0 : r0 + band.height] = to_uint8(self.renderer.render(band, (mode,))[mode])
            seconds += self.renderer.stats["seconds"]
            spp = self.renderer.stats["seconds"] / (band.width * band.height)
            self.seconds_per_pixel = spp if self.seconds_per_pixel is None else 0.5 * (self.seconds_per_pixel + spp)
        self.frame_log.append({"width": W, "height": H, "moving": moving, "seconds": seconds})
        self.stats.content = f"{W}x{H} {'moving' if moving else 'still'}: {seconds * 1e3:.0f} ms"
        return img

    def _camera_of(self, client, width: int | None = None):
        cam = client_camera(client, width or self.size) if client is not None else None
        return cam if cam is not None else self.ctrl.camera(width or self.size, width or self.size)

    # -- jobs (worker thread) --------------------------------------------------------------------------------

    def _job_mesh(self, level: float) -> None:
        if not self.jobs.empty() and any(j == "mesh" for j, _ in list(self.jobs.queue)):
            return  # a newer iso-level is queued (the slider is being dragged)
        self.level = float(level)
        fn = field_function(self.renderer.source)
        if fn is None or self.mesh_resolution <= 0:
            return
        from taichi_sdf.geometry.meshing import extract_mesh

        r = float(self.renderer.source.bound_radius)
        t0 = time.perf_counter()
        try:
            mesh = extract_mesh(fn, resolution=self.mesh_resolution, bound=((-r, -r, -r), (r, r, r)), level=self.level)
        except ValueError as exc:  # e.g. the level is never crossed
            self.say(f"no mesh at iso-level {self.level:+.2f}: {exc}")
            if self.mesh_handle is not None:
                self.mesh_handle.visible = False
            return
        self.mesh_handle = self.server.scene.add_mesh_simple(
            "/mesh", np.asarray(mesh.vertices, np.float32), np.asarray(mesh.faces, np.int32), color=(200, 140, 80),
            visible=bool(self.mesh_box.value))  # fmt: skip
        self.say(f"mesh at iso-level {self.level:+.2f}: {len(mesh.faces)} faces ({time.perf_counter() - t0:.2f} s)")

    def _job_gt(self, show: bool) -> None:
        if not show:
            if self.gt_handle is not None:
                self.gt_handle.visible = False
            return
        if self.gt_handle is None:
            gt = self.renderer.overlay()
            if gt.kind != "points" or gt.points is None:
                self.say(f"no ground-truth points for this source ({gt.message or 'it has none'})")
                return
            self.gt_handle = self.server.scene.add_point_cloud("/gt", gt.points.astype(np.float32), colors=(30, 230, 90),
                                                               point_size=0.005)  # fmt: skip
        self.gt_handle.visible = True

    def _job_reload(self, _) -> None:
        try:
            self.renderer.reload()
        except SourceError as exc:
            self.say(f"reload failed (previous version kept): {exc}")
            return
        self.version += 1
        self.say(f"reloaded {self.renderer.source.describe()}")
        self._job_mesh(self.level)

    def _job_source(self, text: str) -> None:
        try:
            renderer = Renderer(text, **self.load_kw)
        except SourceError as exc:
            self.say(f"cannot load {text}: {exc}")
            return
        self.renderer = renderer
        if self.gt_handle is not None:
            self.gt_handle.remove()
            self.gt_handle = None
        self.version += 1
        self.say(f"showing {renderer.source.describe()}")
        self._job_mesh(self.level)
        if self.gt_box.value:
            self._job_gt(True)

    def _next_path(self, stem: str, suffix: str) -> Path:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        n = len(list(self.out_dir.glob(f"{stem}_*")))
        return self.out_dir / f"{stem}_{n:03d}{suffix}"

    def _send(self, client, path: Path) -> None:
        if client is not None:
            client.send_file_download(path.name, path.read_bytes())

    def _job_screenshot(self, client) -> Path:
        img = self.render_image(self._camera_of(client))
        path = write_image(self._next_path("web", ".png"), img.astype(np.float32) / 255.0)
        self.say(f"screenshot {path}")
        self._send(client, Path(path))
        return Path(path)

    def _job_turntable(self, client) -> Path:
        """An orbit around the target at the current distance, elevation and shading (the turntable axis
        is +y, like `apps.view --offscreen`)."""
        frames = int(self.frames_slider.value)
        width = min(self.size, 512)
        start = self._camera_of(client, width)
        eye = start.centers[0].double().numpy()
        ctrl = OrbitController.from_eye(eye, tuple(self.ctrl.target), math.degrees(2 * math.atan(
            0.5 * start.width / float(start.K[0, 0, 0]))))  # fmt: skip
        images = []
        for i in range(frames):
            ctrl.azimuth += 2 * math.pi / frames if i else 0.0
            cam = ctrl.camera(width, start.height)
            images.append(self.render_image(cam))
        path, msg = write_video(images, self._next_path("turntable", ""), fps=24)
        self.say(msg)
        self._send(client, path)
        return path

    def _job_save_path(self, client) -> None:
        if not len(self.path):
            self.say("camera path: add keyframes first")
            return
        path = self.path.save(self.path_file.value)
        self.say(f"camera path saved: {path} ({len(self.path)} keyframes)")
        self._send(client, path)

    def _job_load_path(self, _) -> None:
        try:
            self.path = CameraPath.load(self.path_file.value)
        except (OSError, ValueError) as exc:
            self.say(f"camera path not loaded: {exc}")
            return
        self.path_info.content = f"{len(self.path)} keyframes"
        self.say(f"camera path loaded: {self.path_file.value} ({len(self.path)} keyframes)")

    def _job_play_path(self, client) -> None:
        if client is None or not len(self.path):
            return
        for k in self.path.interpolate(max(2, 30 * (len(self.path) - 1))):
            with client.atomic():
                client.camera.position = k.position
                client.camera.wxyz = k.wxyz
                client.camera.fov = k.fov_y
            time.sleep(1 / 30)

    def _job_render_path(self, client) -> Path | None:
        if not len(self.path):
            self.say("camera path: add keyframes first")
            return None
        from taichi_sdf.cameras.viser_camera import camera_from_viser

        width = min(self.size, 512)
        aspect = client.camera.aspect if client is not None else 1.0
        height = max(2, int(round(width / aspect)))
        images = [self.render_image(camera_from_viser(k.position, k.wxyz, k.fov_y, width, height))
                  for k in self.path.interpolate(max(2, 24 * (len(self.path) - 1)))]  # fmt: skip
        path, msg = write_video(images, self._next_path("path", ""), fps=24)
        self.say(msg)
        self._send(client, path)
        return path

    # -- lifetime -------------------------------------------------------------------------------------------

    def run_forever(self) -> None:
        """Serve until Ctrl-C, then stop the server."""
        try:
            self.serve()
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop serving (`serve` returns) and shut the server down; safe to call twice."""
        self._stop.set()
        self.server.stop()

    def summary(self) -> dict:
        """Median render milliseconds per (width x height, moving/still), over the frames logged."""
        groups: dict[str, list[float]] = {}
        for f in self.frame_log:
            groups.setdefault(f"{f['width']}x{f['height']} {'moving' if f['moving'] else 'still'}", []).append(f["seconds"])
        return {k: {"frames": len(v), "median_ms": 1e3 * float(np.median(v))} for k, v in groups.items()}
