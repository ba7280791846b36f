"""The live browser view of a training run (`viewer: true` in an app's config), served with viser.

`Trainer.train` creates a `LiveView` when the config asks for one and calls `after_step(row)` on the
training thread after every iteration. Everything that touches the model happens there, between
iterations, so a render can never race an optimiser step; viser's own threads only flip flags (pause,
shading, size) and serve the page. Rendering is rate-bounded by a time budget: the renders of a run take
at most `share` of its wall time (10% by default), whatever the browser asks for; plot updates count
toward the same budget, and nothing is sent while no browser is connected.

What the page shows: the loss terms of every step as plots, the current model rendered at the browser's
camera (low resolution while the camera moves, `size` when it is still) as the background image,
the dataset's cameras as frusta when the trainer has `cams` and `images`, and a pause/resume button
(while paused, the view keeps rendering without a budget, since training waits).

A trainer shows its model by defining `live_render(camera) -> dict of [H, W, 3] images in [0, 1]`
(`MultiViewExport` does: "color" and "normals"); without it the page has the plots and pause only.
viser is an optional dependency (`pip install taichi-sdf[viewer]`), imported here only.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from taichi_sdf.cameras.viser_camera import camera_from_viser, vertical_fov, viser_pose
from taichi_sdf.core.errors import InputError

__all__ = ["LiveView", "import_viser", "client_camera"]

MOVING_SECONDS = 0.3  # a camera updated this recently is moving: render at 1/`coarse` resolution
PLOT_SECONDS = 1.0  # at most one plot update per this many seconds
PLOT_POINTS = 1000  # points per plot (older steps are strided)


def import_viser():
    """The viser module, or an `InputError` that says how to install it."""
    try:
        import viser
    except ImportError:
        raise InputError("the browser viewer needs viser: pip install 'taichi-sdf[viewer]' "
                         "(or pip install -r requirements-viewer.txt)") from None  # fmt: skip
    return viser


def client_camera(client, width: int):
    """The `Camera` of a connected viser client's view for an image `width` pixels wide (the height
    follows the browser canvas' aspect); None before the browser has reported its camera."""
    cam = client.camera
    if getattr(cam, "update_timestamp", 0.0) == 0.0:
        return None
    height = max(1, int(round(width / max(cam.aspect, 1e-3))))
    return camera_from_viser(cam.position, cam.wxyz, float(cam.fov), int(width), height)


def to_uint8(img) -> np.ndarray:
    """`[H, W, 3]` float in [0, 1] (tensor or array) -> uint8 array."""
    if isinstance(img, torch.Tensor):
        img = img.detach().float().cpu().numpy()
    return (np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


class LiveView:
    """A viser server showing `trainer` while it trains (see the module docstring).

    Args:
        trainer: a `Trainer`; optional `live_render(camera)`, `cams` + `images` (frusta).
        host, port: where to serve (127.0.0.1 by default: only this machine, or an SSH port-forward).
        share: the largest fraction of the run's wall time spent rendering for the browser.
        size: image width when the camera is still; `coarse` divides it while the camera moves.
        max_render_seconds: the width shrinks so that one render is predicted (from the seconds per pixel of
            the previous renders) to take at most this long: the budget then holds within one short render,
            even for a slow model on a CPU.
    """

    def __init__(self, trainer, host: str = "127.0.0.1", port: int = 8080, share: float = 0.1, size: int = 256,
                 coarse: int = 4, max_render_seconds: float = 1.0, verbose: bool = True) -> None:  # fmt: skip
        if not 0 < share <= 1:
            raise ValueError(f"share: expected a fraction in (0, 1], got {share!r}")
        viser = import_viser()
        self.trainer = trainer
        self.share, self.size, self.coarse = float(share), int(size), max(1, int(coarse))
        self.max_render_seconds = float(max_render_seconds)
        self.seconds_per_pixel: float | None = None  # measured on the renders so far
        self.server = viser.ViserServer(host=host, port=int(port), verbose=False)
        self.server.scene.set_up_direction("+y")
        self.url = f"http://{host}:{self.server.get_port()}"
        self.paused = False
        self.mode = "color"
        self.history: dict[str, list[float]] = {}
        self.iterations: list[int] = []
        self.view_seconds = 0.0  # time spent on the training thread for the page (renders, plot updates)
        self.renders = 0
        self._start = time.perf_counter()
        self._last_plot = 0.0
        self._plots: dict = {}
        self._shown: dict[int, tuple] = {}  # client id -> (iteration, camera state, mode, size) of its image
        self._build_gui()
        self._add_frusta()
        if verbose:
            trainer.message(f"live view at {self.url} (viewer=true; renders take at most {self.share:.0%} of the run)")

    # -- page ---------------------------------------------------------------------------------------------

    def _build_gui(self) -> None:
        gui = self.server.gui
        self.status = gui.add_markdown("waiting for the first iteration")
        self.pause_button = gui.add_button("Pause training")
        self.pause_button.on_click(lambda _: self.toggle_pause())
        has_render = callable(getattr(self.trainer, "live_render", None))
        self.mode_dropdown = gui.add_dropdown("Shading", ("color", "normals"), initial_value="color", visible=has_render)
        self.mode_dropdown.on_update(lambda _: setattr(self, "mode", self.mode_dropdown.value))
        self.size_slider = gui.add_slider("Render width", 16, 1024, 16, min(max(self.size, 16), 1024), visible=has_render)
        self.size_slider.on_update(lambda _: setattr(self, "size", int(self.size_slider.value)))
        self.plot_folder = gui.add_folder("Losses")

    def toggle_pause(self) -> None:
        self.paused = not self.paused
        self.pause_button.label = "Resume training" if self.paused else "Pause training"

    def _add_frusta(self) -> None:
        cams, images = getattr(self.trainer, "cams", None), getattr(self.trainer, "images", None)
        if cams is None or images is None:
            return
        cams = cams.to("cpu", torch.float32)
        step = max(1, len(cams) // 64)  # at most ~64 frusta: each carries its image to the browser
        for i in range(0, len(cams), step):
            wxyz, pos = viser_pose(cams, i)
            self.server.scene.add_camera_frustum(f"/dataset/cam_{i:03d}", vertical_fov(cams, i), cams.width / cams.height,
                                                 scale=0.1, image=to_uint8(images[i]), wxyz=wxyz, position=pos)  # fmt: skip

    def _update_plots(self, force: bool = False) -> None:
        """Send the loss curves (at most every PLOT_SECONDS, and only while a browser is connected)."""
        now = time.perf_counter()
        if not self.iterations or (not force and (now - self._last_plot < PLOT_SECONDS or not self.server.get_clients())):
            return
        self._last_plot = now
        stride = max(1, len(self.iterations) // PLOT_POINTS)
        x = np.asarray(self.iterations[::stride], dtype=np.float64)
        for key, values in self.history.items():
            data = (x, np.asarray(values[::stride], dtype=np.float64))
            if key in self._plots:
                self._plots[key].data = data
            else:
                with self.plot_folder:
                    self._plots[key] = self.server.gui.add_uplot(
                        data, ({"label": "iteration"}, {"label": key, "stroke": "#d95f02", "width": 1.5}),
                        title=key, aspect=2.0)  # fmt: skip
        it, total = self.trainer.iteration, self.trainer.total_iterations
        share = self.view_seconds / max(now - self._start, 1e-9)
        self.status.content = (f"**{self.trainer.name}** iteration {it} / {total}{' (paused)' if self.paused else ''}  \n"
                               f"renders: {self.renders}; the view took {share:.1%} of the run's time")  # fmt: skip

    # -- the training thread --------------------------------------------------------------------------------

    def after_step(self, row: dict) -> None:
        """Record the step's values, update the page, render if the budget allows; while paused, wait
        here (rendering on demand) until resumed or the run is interrupted."""
        self.iterations.append(int(self.trainer.iteration))
        for key, value in row.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                series = self.history.setdefault(key, [math.nan] * (len(self.iterations) - 1))
                series.append(float(value) if math.isfinite(value) else math.nan)
        for series in self.history.values():  # keys missing from this row
            if len(series) < len(self.iterations):
                series.append(math.nan)
        t0 = time.perf_counter()
        self._update_plots()
        self.view_seconds += time.perf_counter() - t0
        self.render_due(budget=True)
        while self.paused and getattr(self.trainer, "interrupted", None) is None:
            self._update_plots()
            if not self.render_due(budget=False):
                time.sleep(0.05)

    def render_due(self, budget: bool = True) -> bool:
        """Render for each client whose image is stale (new iteration, camera, shading or size), within
        the time budget when `budget`. Returns whether anything was rendered."""
        render = getattr(self.trainer, "live_render", None)
        if not callable(render):
            return False
        rendered = False
        for client_id, client in list(self.server.get_clients().items()):
            moving = time.time() - getattr(client.camera, "update_timestamp", 0.0) < MOVING_SECONDS
            width = self.affordable_width(max(16, self.size // self.coarse) if moving else self.size, client)
            cam = client_camera(client, width)
            if cam is None:
                continue
            # the budget, with this render's predicted cost counted in: renders stay under `share` of the run
            predicted = (self.seconds_per_pixel or 0.0) * cam.width * cam.height
            if budget and self.view_seconds + predicted > self.share * (time.perf_counter() - self._start):
                break
            key = (self.trainer.iteration, tuple(cam.T_cam_world.flatten().tolist()), cam.K[0, 1, 1].item(), self.mode, width)
            if self._shown.get(client_id) == key:
                continue
            t0 = time.perf_counter()
            images = render(cam)
            img = images.get(self.mode, next(iter(images.values())))
            client.scene.set_background_image(to_uint8(img), format="jpeg", jpeg_quality=85)
            seconds = time.perf_counter() - t0
            spp = seconds / (cam.width * cam.height)
            self.seconds_per_pixel = spp if self.seconds_per_pixel is None else 0.5 * (self.seconds_per_pixel + spp)
            if budget:  # renders while paused cost the run nothing
                self.view_seconds += seconds
            self.renders += 1
            self._shown[client_id] = key
            rendered = True
        return rendered

    def affordable_width(self, width: int, client) -> int:
        """`width`, or less when a render that wide is predicted to take over `max_render_seconds`."""
        if self.seconds_per_pixel is None:
            return min(width, 64)  # the first render measures the model's speed cheaply
        aspect = max(float(getattr(client.camera, "aspect", 1.0)), 1e-3)
        fit = int(math.sqrt(self.max_render_seconds / self.seconds_per_pixel * aspect))
        return max(16, min(width, fit))

    def close(self) -> None:
        self._update_plots(force=True)
        self.server.stop()
