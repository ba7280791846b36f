"""The live browser view of a training run (`viewer: true`): the trainer base's hook creates and closes
it, renders happen on the training thread within the time budget, plots and pause work, and a run with
the view on trains exactly like one without."""

import socket
import threading
import time
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import pytest
import torch

pytest.importorskip("viser")

from taichi_sdf.cameras.camera import look_at  # noqa: E402
from taichi_sdf.cameras.viser_camera import vertical_fov, viser_pose  # noqa: E402
from taichi_sdf.train.live import LiveView  # noqa: E402
from tests.train.test_trainer import Toy, ToyModel, ToyTrain  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LiveConfig:
    model: ToyModel = field(default_factory=ToyModel)
    data: dict = field(default_factory=dict)
    train: ToyTrain = field(default_factory=ToyTrain)
    viewer: bool = True
    viewer_host: str = "127.0.0.1"
    viewer_port: int = 8080


class RenderingToy(Toy):
    """The toy regression with a `live_render` that takes `view_seconds` and records its thread."""

    view_seconds = 0.0

    def live_render(self, cam):
        self.render_threads = getattr(self, "render_threads", set()) | {threading.current_thread().name}
        time.sleep(self.view_seconds)
        return {"color": torch.full((cam.height, cam.width, 3), 0.5), "normals": torch.zeros(cam.height, cam.width, 3)}


def fake_client(moved_at=0.0):
    cam = look_at(torch.tensor([[0.0, 0.5, 2.5]]), width=32, height=32)
    wxyz, pos = viser_pose(cam)
    images = []
    camera = SimpleNamespace(position=pos, wxyz=wxyz, fov=vertical_fov(cam), aspect=1.0, update_timestamp=moved_at or 1.0)
    return SimpleNamespace(camera=camera, images=images, scene=SimpleNamespace(set_background_image=lambda img, **kw: images.append(img)))


def test_viewer_true_serves_during_train_and_stops_after(tmp_path, monkeypatch):
    port = free_port()
    seen = {}
    real_after_step = LiveView.after_step

    def after_step(self, row):
        seen.setdefault("url", self.url)
        seen["open"] = socket.create_connection(("127.0.0.1", port), timeout=5) is not None
        real_after_step(self, row)

    monkeypatch.setattr(LiveView, "after_step", after_step)
    t = Toy(tmp_path / "run", cfg=LiveConfig(viewer_port=port))
    t.train(progress=False)
    assert seen == {"url": f"http://127.0.0.1:{port}", "open": True}
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0  # closed with the loop


def test_viewer_off_creates_no_server(tmp_path):
    assert Toy(tmp_path / "run", cfg=LiveConfig(viewer=False)).live_view() is None


def test_renders_run_on_the_training_thread_within_the_budget(tmp_path, monkeypatch):
    t = RenderingToy(tmp_path / "run", cfg=LiveConfig(), view_seconds=0.01)
    live = LiveView(t, port=free_port(), share=0.2, size=32, verbose=False)
    client = fake_client()
    monkeypatch.setattr(live.server, "get_clients", lambda: {1: client})
    try:
        for _ in range(60):
            t.iteration += 1
            time.sleep(0.002)  # a quick "training step"
            live.after_step({"loss": 1.0 / t.iteration, "psnr": float("nan")})
        elapsed = time.perf_counter() - live._start
        assert live.renders >= 2 and len(client.images) == live.renders
        # the budget: renders take at most `share` of the run (each render's cost is predicted before it
        # starts; the margin is for a render that takes longer than the previous ones on a loaded machine)
        assert live.view_seconds <= 0.2 * elapsed + 0.01
        assert t.render_threads == {threading.current_thread().name}
        assert client.images[-1].shape == (32, 32, 3) and client.images[-1].dtype == np.uint8
        live._update_plots(force=True)
        assert set(live._plots) == {"loss", "psnr"}
        x, y = live._plots["loss"].data
        assert len(x) == 60 and y[-1] == pytest.approx(1.0 / 60)
        assert "iteration 60" in live.status.content
    finally:
        live.close()


def test_a_moving_camera_renders_coarse(tmp_path, monkeypatch):
    t = RenderingToy(tmp_path / "run", cfg=LiveConfig())
    live = LiveView(t, port=free_port(), size=64, coarse=4, verbose=False)
    client = fake_client(moved_at=time.time())
    monkeypatch.setattr(live.server, "get_clients", lambda: {1: client})
    try:
        assert live.render_due(budget=False) and client.images[-1].shape == (16, 16, 3)
        assert not live.render_due(budget=False)  # same iteration and camera: nothing new to show
        # a slow model: the width shrinks so one render stays near max_render_seconds (1 s)
        live.seconds_per_pixel = 1e-4
        assert live.affordable_width(256, client) == 100 and live.affordable_width(64, client) == 64
    finally:
        live.close()


def test_pause_holds_the_training_thread_until_resumed(tmp_path):
    t = RenderingToy(tmp_path / "run", cfg=LiveConfig())
    live = LiveView(t, port=free_port(), verbose=False)
    try:
        live.toggle_pause()
        assert live.pause_button.label == "Resume training"
        threading.Timer(0.3, live.toggle_pause).start()  # the browser's click, from another thread
        t0 = time.perf_counter()
        live.after_step({"loss": 1.0})
        assert time.perf_counter() - t0 >= 0.25 and not live.paused
        live.toggle_pause()
        t.interrupted = 15  # Ctrl-C / SIGTERM while paused: the loop must get to save and stop
        live.after_step({"loss": 1.0})
    finally:
        live.close()


@pytest.mark.slow
def test_an_idr_run_rendering_every_step_trains_bit_exactly_like_one_without(tmp_path, monkeypatch):
    """The live renders (IDR's tracer and rendering network, on the training thread) must not touch the
    model, the optimiser or any RNG: weights after a run that renders at every step equal those of a
    run without the view, bit for bit."""
    from apps.idr.config import IDRConfig
    from apps.idr.trainer import IDRTrainer
    from taichi_sdf.data.builtin import render_scene_dataset, write_dataset
    from taichi_sdf.train.config import load_config
    from tests.apps.test_idr_app import TINY

    data = tmp_path / "scan"
    write_dataset(render_scene_dataset("sphere_box", views=4, size=16, test_every=3, test_offset=1), data, "idr", "sphere_box")
    renders = []

    def render_every_step(self, budget=True):
        renders.append(self.trainer.live_render(look_at(torch.tensor([[0.3, 0.4, 2.5]]), width=12, height=12)))
        return True

    monkeypatch.setattr(LiveView, "render_due", render_every_step)
    runs = {}
    for name, viewer in (("off", False), ("on", True)):
        cfg = load_config(IDRConfig, "configs/idr/cpu.yaml", TINY + [f"data.data={data}", f"out={tmp_path / name}",
                                                                     f"viewer={viewer}", f"viewer_port={free_port()}"])  # fmt: skip
        runs[name] = IDRTrainer(cfg)
        runs[name].train(iterations=4, progress=False)
    assert len(renders) == 4 and renders[-1]["color"].shape == (12, 12, 3) and float(renders[-1]["normals"].std()) > 0
    for a, b in zip(runs["off"].system.state_dict().values(), runs["on"].system.state_dict().values()):
        assert torch.equal(a, b)
