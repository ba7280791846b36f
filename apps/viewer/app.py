"""The interactive window (`Viewer`, on `ti.GUI`), the offscreen orbit (`render_orbit`) and the CLI."""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

import taichi_sdf
from taichi_sdf.core.errors import app_main
from taichi_sdf.data.image_io import to_uint8, write_image

from .controller import OrbitController
from .render import MODES, Renderer, draw_overlay
from .sources import SourceError, describe_kinds

KEYS_HELP = ("drag: orbit | right/shift-drag: pan | wheel: zoom",
             "1-4, m: shading | g: GT overlay | s: screenshot | c: camera | r: reload | q/esc: quit")  # fmt: skip
KEYS_HELP_SHORT = ("drag orbit, right/shift pan, wheel zoom", "1-4/m shade g GT s shot c cam r reload q")


# A refinement band takes about this many frame budgets (1 / fps_target) to render: longer bands waste less on
# per-call overhead (the wavefront tracer's launches), shorter ones answer the mouse sooner.
REFINE_FRAMES = 5.0
LINE_PX = 18  # text line height in pixels


def _wheel_dy(delta) -> float:
    if delta is None:
        return 0.0
    return float(delta.y if hasattr(delta, "y") else delta[1])


def band_camera(cam, row0: int, row1: int):
    """The camera of image rows [row0, row1) of `cam` (one camera): same pose, principal point shifted."""
    from taichi_sdf.cameras.camera import Camera

    K = cam.K.clone()
    K[:, 1, 2] -= row0
    return Camera(K, cam.T_cam_world, cam.width, row1 - row0)


def upsample(img: np.ndarray, factor: int, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour upsampling of `[h, w, C]` by an integer factor, cropped to `height x width`."""
    if factor == 1:
        return img[:height, :width]
    return np.repeat(np.repeat(img, factor, axis=0), factor, axis=1)[:height, :width]


class Viewer:
    """A ti.GUI window that sphere-traces a `Renderer`'s source, with progressive resolution.

    While the camera moves every frame renders at 1/`coarse` of the window size; once it is still,
    the following frames refine (1/coarse, 1/(coarse/2), ..., 1) and then the window just redraws.
    `coarse=0` (auto) picks the finest of 1, 1/2, 1/4, 1/8, 1/16 whose frame fits `fps_target` at
    the rays/s measured so far (1/4 before the first measurement), so fast sources move at full
    resolution and MLPs stay responsive. `show_gui=False` makes an offscreen window (tests drive it
    with `handle` and `step`).
    """

    def __init__(self, renderer: Renderer, width: int = 512, height: int = 512, controller: OrbitController | None = None,
                 mode: str | None = None, show_gui: bool = True, progressive: bool = True, coarse: int = 0,
                 fps_target: float = 10.0,
                 overlay: bool = False, screenshot_dir: str | Path = "screenshots", watch: bool = False,
                 print_every: float = 2.0, title: str | None = None) -> None:  # fmt: skip
        import taichi as ti

        self.ti = ti
        self.renderer = renderer
        self.width, self.height = int(width), int(height)
        self.ctrl = controller or OrbitController()
        self.mode = mode or renderer.default_mode()
        if self.mode not in MODES:
            raise ValueError(f"mode: expected one of {MODES}, got {self.mode!r}")
        self.progressive = progressive
        self.coarse = max(0, int(coarse)) if progressive else 1
        self.fps_target = float(fps_target)
        self.rays_per_s: float | None = None  # running estimate (exponential average over renders)
        self.overlay = overlay
        self.screenshot_dir = Path(screenshot_dir)
        self.watch = watch
        self.print_every = print_every
        title = title or f"taichi-sdf view: {renderer.source.describe()}"
        self.gui = ti.GUI(title, res=(self.width, self.height), background_color=0x1C1C21, show_gui=show_gui)
        self.gui.fps_limit = 60
        self.running = True
        self.error: str | None = None
        self.drag: str | None = None
        self.drag_pos = (0.0, 0.0)
        self.version = 0  # bumped by reloads and option changes: forces a re-render
        self.level = self.coarse or 4
        self.image = np.zeros((self.height, self.width, 3), np.float32)  # what the window shows (top row first)
        self._shown: tuple | None = None  # (camera state, settings) of `image` (done or in progress)
        self._job: dict | None = None  # the image being rendered band by band
        self._last_camera = self.ctrl.state()
        self.frames = 0
        self.frames_rendered = 0
        self.frame_log: list[tuple[int, float, float]] = []  # (level, render seconds, frame seconds)
        self._last_print = time.perf_counter()
        self._printed = 0  # frame_log entries already reported on the console
        self._last_frame_end = time.perf_counter()
        self.screenshots: list[Path] = []

    # -- events -------------------------------------------------------------------------------------------

    def handle(self, e) -> None:
        """One ti.GUI event (anything with type, key, pos, delta and modifier attributes)."""
        G = self.ti.GUI
        if e.key == G.WHEEL:  # ti.GUI reports wheel steps as MOTION events with delta.y = +-120 per notch
            dy = _wheel_dy(e.delta)
            if dy:
                self.ctrl.zoom(dy / 120.0 if abs(dy) >= 60 else math.copysign(1.0, dy))
        elif e.type == G.PRESS:
            if e.key in (G.ESCAPE, "q", G.EXIT):
                self.running = False
            elif e.key == G.LMB:
                shift = "Shift" in (e.modifier or ()) or self.gui.is_pressed(G.SHIFT)
                self.drag, self.drag_pos = ("pan" if shift else "orbit"), tuple(e.pos)
            elif e.key == G.RMB:
                self.drag, self.drag_pos = "pan", tuple(e.pos)
            elif e.key in ("1", "2", "3", "4"):
                self.set_mode(MODES[int(e.key) - 1])
            elif e.key == "m":
                self.set_mode(MODES[(MODES.index(self.mode) + 1) % len(MODES)])
            elif e.key == "g":
                self.overlay = not self.overlay
                if self.overlay:
                    gt = self.renderer.overlay()
                    if gt.kind == "none":
                        print(f"[view] ground truth overlay: {gt.message}", flush=True)
                self.version += 1
            elif e.key == "s":
                self.screenshot()
            elif e.key == "c":
                print(self.ctrl.describe(self.width, self.height), flush=True)
            elif e.key == "r":
                self.reload()
        elif e.type == G.RELEASE:
            if e.key in (G.LMB, G.RMB):
                self.drag = None
        elif e.type == G.MOTION and self.drag is not None:
            x, y = e.pos
            dx, dy = x - self.drag_pos[0], y - self.drag_pos[1]
            self.drag_pos = (x, y)
            if self.drag == "orbit":
                self.ctrl.orbit(dx, dy)
            else:
                self.ctrl.pan(dx, dy, self.height / self.width)

    def set_mode(self, mode: str) -> None:
        self.mode = mode
        self.version += 1

    def reload(self) -> bool:
        t0 = time.perf_counter()
        try:
            self.renderer.reload()
        except SourceError as exc:
            self.error = f"reload failed (previous version kept):\n{exc}"
            print(f"[view] {self.error}", file=sys.stderr, flush=True)
            return False
        self.error = None
        self.version += 1
        for w in getattr(self.renderer.source, "warnings", []):
            print(f"[view] warning: {w}", flush=True)
        print(f"[view] reloaded {self.renderer.source.describe()} in {time.perf_counter() - t0:.2f} s", flush=True)
        return True

    def screenshot(self) -> Path:
        self.screenshot_dir.mkdir(parents=True, exist_ok=True)
        n = len(list(self.screenshot_dir.glob("view_*.png")))
        path = write_image(self.screenshot_dir / f"view_{n:03d}.png", self.image)
        self.screenshots.append(path)
        print(f"[view] screenshot {path}", flush=True)
        return path

    # -- frames --------------------------------------------------------------------------------------------

    def settings(self) -> tuple:
        return (self.mode, self.overlay, self.version, self.width, self.height)

    def coarse_level(self) -> int:
        """The resolution divisor for a moving camera (see the class docstring)."""
        if self.coarse:
            return self.coarse
        if not self.rays_per_s:
            return 4
        for level in (1, 2, 4, 8):
            rays = -(-self.width // level) * -(-self.height // level)
            if rays / self.rays_per_s <= 1.0 / self.fps_target:
                return level
        return 16

    def render_if_needed(self) -> bool:
        """Advance the rendering: a moving camera or changed settings start a new image at the coarse
        level (rendered whole, in this frame); a still camera refines level by level, in bands of rows
        that fit the frame budget, so events keep flowing during long refinements. Returns whether a
        level completed in this frame."""
        cam_state = self.ctrl.state()
        moving = cam_state != self._last_camera
        self._last_camera = cam_state
        key = (cam_state, self.settings())
        if moving or self._shown is None or self._shown != key:
            self._job = self._new_job(self.coarse_level(), key, whole=True)
        elif self._job is None:
            if self.level <= 1:
                return False
            self._job = self._new_job(max(1, self.level // 2), key, whole=False)
        return self._advance()

    def _new_job(self, level: int, key: tuple, whole: bool) -> dict:
        w, h = -(-self.width // level), -(-self.height // level)
        cam = self.ctrl.camera(self.width, self.height).resized(w, h)
        self._shown = key
        return {"level": level, "cam": cam, "w": w, "h": h, "row": 0, "seconds": 0.0, "whole": whole,
                "start": time.perf_counter()}  # fmt: skip

    def _advance(self) -> bool:
        job = self._job
        level, w, h = job["level"], job["w"], job["h"]
        deadline = time.perf_counter() + 1.0 / self.fps_target
        band_seconds = REFINE_FRAMES / self.fps_target
        while job["row"] < h:
            r0 = job["row"]
            rows = h - r0
            if not job["whole"]:
                if "rows" not in job:  # first band: from the measured speed (a quarter image before any)
                    job["rows"] = max(4, int(band_seconds * self.rays_per_s / w)) if self.rays_per_s else -(-h // 4)
                rows = min(rows, job["rows"])
            cam = band_camera(job["cam"], r0, r0 + rows)
            try:
                out = self.renderer.render(cam, (self.mode,))
            except Exception as exc:  # keep the window alive; show what went wrong
                self.error = f"render failed: {type(exc).__name__}: {exc}"
                print(f"[view] {self.error}", file=sys.stderr, flush=True)
                self._job, self.level = None, 1
                return False
            img = out[self.mode].cpu().numpy()
            if self.overlay:
                img = draw_overlay(img, self.renderer.overlay(), cam, out["hit"].cpu().numpy(), out["z"].cpu().numpy())
            y0, y1 = r0 * level, min((r0 + rows) * level, self.height)
            self.image[y0:y1] = upsample(img, level, y1 - y0, self.width)
            seconds = self.renderer.stats["seconds"]
            job["seconds"] += seconds
            job["row"] += rows
            if not job["whole"]:  # steer the band height toward band_seconds per band
                job["rows"] = int(min(max(4, rows * min(band_seconds / max(seconds, 1e-6), 4.0)), h))
            if self.frames_rendered > 0:  # the first render compiles kernels: not a speed
                rps = w * rows / max(seconds, 1e-9)
                self.rays_per_s = rps if self.rays_per_s is None else 0.5 * self.rays_per_s + 0.5 * rps
            self.frames_rendered += 1
            if time.perf_counter() > deadline:
                break
        if job["row"] < h:
            return False
        self.level, self._job = level, None
        self.frame_log.append((level, job["seconds"], time.perf_counter() - job["start"]))
        return True

    def step(self) -> bool:
        """One frame: events, (re)render, draw, show. Returns False once the window should close."""
        for e in self.gui.get_events():
            self.handle(e)
        if not self.gui.running:
            self.running = False
        if not self.running:
            return False
        if self.watch and getattr(self.renderer.source, "poll_changed", lambda: False)():
            self.reload()
        frame_start = self._last_frame_end
        rendered = self.render_if_needed()
        self.gui.set_image(np.ascontiguousarray(self.image[::-1].transpose(1, 0, 2)))
        self.draw_text()
        self.gui.show()
        now = time.perf_counter()
        if rendered:  # a level completed in this frame
            lv, secs, wall = self.frame_log[-1]
            self.frame_log[-1] = (lv, secs, max(wall, now - frame_start))  # whole frames: include the display
        self._last_frame_end = now
        self.frames += 1
        if self.print_every and now - self._last_print > self.print_every and len(self.frame_log) > self._printed:
            self._last_print, self._printed = now, len(self.frame_log)
            print(f"[view] {self.status_line()} | {self.renderer.source.describe()}", flush=True)
        return True

    def status_line(self) -> str:
        """The last completed image: shading, size, render time and rays/s (plus refinement progress)."""
        if self.frame_log:
            level, secs, _ = self.frame_log[-1]
        else:
            level, secs = self.level, self.renderer.stats["seconds"]
        w, h = -(-self.width // level), -(-self.height // level)
        mrays = w * h / max(secs, 1e-9) / 1e6
        text = f"{self.mode} {w}x{h} (1/{level}): {1e3 * secs:.1f} ms, {mrays:.3g} Mrays/s"
        if self._job is not None and not self._job["whole"]:
            text += f" | refining 1/{self._job['level']} {100 * self._job['row'] // self._job['h']}%"
        return text

    def draw_text(self) -> None:
        """Status (top left), source, overlay state and errors below it; key help at the bottom."""
        import textwrap

        gui, dy = self.gui, LINE_PX / self.height
        cols = max(20, self.width // 7)  # characters per line at font size 13-14

        def fit(text: str, keep_end: bool = False) -> str:
            if len(text) <= cols:
                return text
            return "..." + text[-(cols - 3):] if keep_end else text[: cols - 3] + "..."  # fmt: skip

        lines = [(fit(self.status_line()), 0xFFFFFF), (fit(self.renderer.source.describe(), keep_end=True), 0xC8C8C8)]
        if self.overlay:
            gt = self.renderer.overlay()
            lines.append((fit(f"GT overlay: {gt.kind}" + (f" ({gt.message})" if gt.kind == "none" else "")), 0xA0FFA0))
        if self.error:
            lines += [(fit(line), 0xFF6060) for line in self.error.splitlines()[:10]]
        for i, (text, color) in enumerate(lines):
            gui.text(text, (0.01, 1.0 - 0.2 * dy - i * dy), font_size=13, color=color)
        keys = KEYS_HELP if self.width >= 480 else KEYS_HELP_SHORT
        help_lines = [w for line in keys for w in textwrap.wrap(line, max(20, self.width // 6))]
        for i, text in enumerate(reversed(help_lines)):
            gui.text(text, (0.01, (i + 1.2) * dy), font_size=12, color=0xB0B0B0)

    def run(self, max_frames: int | None = None, auto_orbit_deg: float = 0.0) -> dict:
        """The event loop; `max_frames` stops it (smoke runs, benchmarks), `auto_orbit_deg` turns the
        camera by that many degrees per frame (a moving camera, for timing the coarse frames)."""
        try:
            while self.running and (max_frames is None or self.frames < max_frames):
                if auto_orbit_deg:
                    self.ctrl.azimuth = (self.ctrl.azimuth + math.radians(auto_orbit_deg)) % (2 * math.pi)
                if not self.step():
                    break
        finally:
            self.gui.close()
        return self.summary()

    def summary(self) -> dict:
        """Median render time, whole-frame time (events + render + display) and frame rate per
        resolution level, over the frames that rendered; the very first render (kernel compilation)
        is left out when there are others."""
        log = self.frame_log[1:] if len(self.frame_log) > 1 else self.frame_log
        out: dict = {"frames": self.frames}
        for level in sorted({lv for lv, _, _ in log}):
            rs = [r for lv, r, _ in log if lv == level]
            fs = [f for lv, _, f in log if lv == level]
            w, h = -(-self.width // level), -(-self.height // level)
            out[f"1/{level}"] = {"size": f"{w}x{h}", "renders": len(rs), "render_ms": 1e3 * float(np.median(rs)),
                                 "frame_ms": 1e3 * float(np.median(fs)), "fps": 1.0 / float(np.median(fs)),
                                 "mrays_per_s": w * h / float(np.median(rs)) / 1e6}  # fmt: skip
        return out


def render_orbit(renderer: Renderer, out: str | Path, frames: int = 24, size: int = 256,
                 controller: OrbitController | None = None, modes=None, overlay: bool = False,
                 fps: float = 12.0) -> list[Path]:  # fmt: skip
    """Render `frames` views on a turntable around the controller's target (starting at its azimuth)
    to `out/frame_NNN.png` (`frame_NNN_<mode>.png` for several modes), `out/orbit.gif` (first mode),
    and `out/orbit.mp4` when imageio-ffmpeg is installed. No window is opened."""
    import imageio.v3 as iio

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ctrl = controller or OrbitController()
    modes = tuple(modes or (renderer.default_mode(),))
    az0 = ctrl.azimuth
    written, movie = [], []
    for i in range(frames):
        ctrl.azimuth = az0 + 2 * math.pi * i / frames
        images = renderer.render(ctrl.camera(size, size), modes, overlay=overlay)
        for mode in modes:
            name = f"frame_{i:03d}.png" if len(modes) == 1 else f"frame_{i:03d}_{mode}.png"
            written.append(write_image(out / name, images[mode]))
        movie.append(to_uint8(images[modes[0]]))
    ctrl.azimuth = az0
    iio.imwrite(out / "orbit.gif", np.stack(movie), duration=1000.0 / fps, loop=0)
    written.append(out / "orbit.gif")
    try:
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        pass
    else:
        iio.imwrite(out / "orbit.mp4", np.stack(movie), fps=fps, codec="libx264")
        written.append(out / "orbit.mp4")
    return written


def _vec3(text: str) -> tuple[float, float, float]:
    vals = [float(v) for v in text.replace(" ", "").split(",")]
    if len(vals) != 3:
        raise argparse.ArgumentTypeError(f"expected x,y,z, got {text!r}")
    return tuple(vals)


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m apps.view",
        description="Interactive sphere-tracing viewer (ti.GUI, or a browser with --web). " + "; ".join(KEYS_HELP),
        epilog="A .py SOURCE is executed as Python code (by design: it defines the SDF); view only files you "
        "trust, and keep --web on 127.0.0.1 (the default) unless you mean to expose the viewer.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("source", metavar="SOURCE", help="what to show: " + describe_kinds())
    p.add_argument("--size", type=int, default=None, help="window / image width = height (default 512; 256 offscreen)")
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--height", type=int, default=None)
    p.add_argument(
        "--shading",
        default=None,
        choices=[*MODES, "all"],
        help="initial shading (default: the model's colour when it has one, else lambert)",
    )
    p.add_argument("--offscreen", action="store_true", help="no window: render an orbit to --out")
    p.add_argument("--frames", type=int, default=24, help="orbit frames (--offscreen)")
    p.add_argument("--out", default="outputs/view", help="output folder (--offscreen)")
    p.add_argument("--fps", type=float, default=12.0, help="orbit.gif / orbit.mp4 frame rate")
    p.add_argument("--gt", action="store_true", help="start with the ground-truth overlay on")
    p.add_argument(
        "--eye", type=_vec3, default=None, help="camera position x,y,z (default: from --distance/--azimuth/--elevation)"
    )
    p.add_argument("--target", type=_vec3, default=(0.0, 0.0, 0.0), help="look-at point x,y,z")
    p.add_argument("--distance", type=float, default=2.75)
    p.add_argument("--azimuth", type=float, default=30.0, help="degrees")
    p.add_argument("--elevation", type=float, default=20.0, help="degrees")
    p.add_argument("--fov", type=float, default=40.0, help="horizontal field of view, degrees")
    p.add_argument("--max-frames", type=int, default=None, help="close the window after this many frames")
    p.add_argument("--auto-orbit", type=float, default=0.0, help="turn the camera by this many degrees per frame")
    p.add_argument("--no-progressive", action="store_true", help="always render at full resolution")
    p.add_argument("--coarse", type=int, default=0, help="resolution divisor while the camera moves (0: auto, see --fps-target)")
    p.add_argument("--fps-target", type=float, default=10.0, help="auto --coarse: the frame rate to keep while moving")
    p.add_argument("--torch-threads", type=int, default=0, help="torch CPU threads (0: auto, the idle cores on <= 4 cores)")
    p.add_argument("--screenshot-dir", default="screenshots", help="where the s key writes PNGs")
    p.add_argument("--watch", action="store_true", help="reload a .py SOURCE whenever the file changes")
    p.add_argument("--func", default=None, help=".py SOURCE: name of the @ti.func SDF")
    p.add_argument("--params", type=_floats, default=None, help=".py SOURCE: params a,b,c when the file has no PARAMS")
    p.add_argument("--mesh-mode", default="auto", choices=["auto", "raster", "sdf"], help="mesh SOURCE: rasterize or voxel SDF")
    p.add_argument("--grid", type=int, default=64, help="mesh SOURCE, sdf mode: voxel grid resolution")
    p.add_argument("--tracer", default="dist", choices=["dist", "idr"], help="checkpoint SOURCE: wavefront algorithm")
    p.add_argument("--arch", default="auto", help="Taichi arch (auto, cpu, cuda, ...)")
    web = p.add_argument_group("browser viewer (--web; needs viser: pip install 'taichi-sdf[viewer]')")
    web.add_argument("--web", action="store_true", help="serve the viewer to a browser (viser) instead of a ti.GUI window")
    web.add_argument("--host", default="127.0.0.1",
                     help="--web: address to listen on; the default serves this machine only (use an SSH port-forward)")
    web.add_argument("--port", type=int, default=8080, help="--web: port (the next free one if taken)")
    web.add_argument("--mesh-resolution", type=int, default=64, help="--web: marching-cubes samples per axis of the scene mesh (0: none)")
    return p


def serve_web(renderer: Renderer, args, ctrl: OrbitController, width: int) -> dict:
    """`--web`: serve the browser viewer until Ctrl-C (see `apps.viewer.web`)."""
    from .web import WebViewer

    if not 1 <= args.port <= 65535:
        raise ValueError(f"--port: expected a TCP port in 1..65535, got {args.port}")
    if args.mesh_resolution < 0 or args.mesh_resolution == 1:
        raise ValueError(f"--mesh-resolution: expected 0 (no mesh) or >= 2, got {args.mesh_resolution}")
    mode = None if args.shading in (None, "all") else args.shading
    load_kw = {"func": args.func, "params": args.params, "mesh_mode": args.mesh_mode, "grid": args.grid, "tracer": args.tracer}
    viewer = WebViewer(renderer, args.host, args.port, width, args.coarse or 4, controller=ctrl, mode=mode, out_dir=args.screenshot_dir,
                       mesh_resolution=args.mesh_resolution, source_text=args.source, load_kw=load_kw, watch=args.watch)  # fmt: skip
    print(f"[view] serving {renderer.source.describe()} at {viewer.url} (Ctrl-C stops)", flush=True)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"[view] warning: listening on {args.host}: anyone who reaches this port sees the viewer", flush=True)
    viewer.run_forever()
    return {"url": viewer.url, "frames": viewer.summary()}


@app_main("python -m apps.view")
def main(argv=None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    for flag in ("size", "width", "height", "frames"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            parser.error(f"--{flag}: expected >= 1, got {getattr(args, flag)}")
    for flag, hi in (("fps", math.inf), ("fov", 180.0), ("distance", math.inf)):
        if not (math.isfinite(getattr(args, flag)) and 0 < getattr(args, flag) < hi):
            parser.error(f"--{flag}: expected a finite number > 0{f' and < {hi:g}' if hi < math.inf else ''}, "
                         f"got {getattr(args, flag)}")  # fmt: skip
    size = args.size or (256 if args.offscreen else 512)
    width, height = args.width or size, args.height or size
    taichi_sdf.init(args.arch)
    taichi_sdf.core.runtime.set_torch_threads(args.torch_threads)
    t0 = time.perf_counter()
    try:
        renderer = Renderer(args.source, func=args.func, params=args.params, mesh_mode=args.mesh_mode, grid=args.grid,
                            tracer=args.tracer)  # fmt: skip
    except SourceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    for w in getattr(renderer.source, "warnings", []):
        print(f"[view] warning: {w}", flush=True)
    print(f"[view] {renderer.source.describe()} loaded in {time.perf_counter() - t0:.2f} s", flush=True)
    if args.eye is not None:
        ctrl = OrbitController.from_eye(args.eye, args.target, args.fov)
    else:
        ctrl = OrbitController.from_degrees(args.azimuth, args.elevation, target=args.target, distance=args.distance,
                                            fov_x_deg=args.fov)  # fmt: skip
    if args.web:
        return serve_web(renderer, args, ctrl, width)
    if args.offscreen:
        if width != height:
            print("[view] --offscreen renders square frames of --size", flush=True)
        modes = MODES if args.shading == "all" else (args.shading,) if args.shading else None
        t0 = time.perf_counter()
        files = render_orbit(renderer, args.out, args.frames, width, ctrl, modes, args.gt, args.fps)
        dt = time.perf_counter() - t0
        print(f"[view] wrote {len(files)} files to {args.out} ({args.frames} frames at {width}x{width}, "
              f"{dt / max(args.frames, 1) * 1e3:.0f} ms/frame)", flush=True)  # fmt: skip
        return {"files": [str(f) for f in files]}
    mode = None if args.shading in (None, "all") else args.shading
    try:
        viewer = Viewer(renderer, width, height, ctrl, mode, show_gui=True, progressive=not args.no_progressive,
                        coarse=args.coarse, fps_target=args.fps_target, overlay=args.gt, screenshot_dir=args.screenshot_dir, watch=args.watch)  # fmt: skip
    except RuntimeError as exc:  # no display
        print(f"error: cannot open a window ({exc}); use --offscreen, or run under xvfb-run", file=sys.stderr)
        raise SystemExit(2) from None
    print("[view] " + "; ".join(KEYS_HELP), flush=True)
    summary = viewer.run(args.max_frames, args.auto_orbit)
    print("[view] median per resolution level: " + ", ".join(
        f"{k}: {v['size']} render {v['render_ms']:.1f} ms ({v['mrays_per_s']:.2f} Mrays/s), frame {v['frame_ms']:.1f} ms "
        f"= {v['fps']:.1f} fps ({v['renders']} frames)" for k, v in summary.items() if k != "frames"), flush=True)  # fmt: skip
    return summary
