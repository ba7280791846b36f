"""The browser viewer (`python -m apps.view SOURCE --web`) without a browser: its callbacks and jobs
called directly, the render function at a viser camera, the camera-path recorder, a loopback smoke test
(page served, a websocket client gets the initial scene, the server stops), and, where Debian's chromium
is installed, a slow test that opens the page headless and takes a screenshot."""

import asyncio
import math
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

viser = pytest.importorskip("viser")

from apps.viewer.camera_path import CameraPath, slerp  # noqa: E402
from apps.viewer.controller import OrbitController  # noqa: E402
from apps.viewer.render import Renderer  # noqa: E402
from apps.viewer.web import WebViewer, checkpoint_choices, field_function, write_video  # noqa: E402
from taichi_sdf.cameras.viser_camera import camera_from_viser, vertical_fov, viser_pose  # noqa: E402
from taichi_sdf.data.image_io import read_image  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


class FakeClient:
    """What `WebViewer` reads of a connected browser: its camera and its scene's background image."""

    def __init__(self, ctrl: OrbitController, aspect: float = 1.0, moved_at: float = 0.0):
        wxyz, pos = viser_pose(ctrl.camera(64, 64))
        self.camera = SimpleNamespace(position=pos, wxyz=wxyz, fov=vertical_fov(ctrl.camera(64, 64)), aspect=aspect,
                                      update_timestamp=moved_at or time.time() - 10.0)  # fmt: skip
        self.images = []
        self.downloads = []
        self.scene = SimpleNamespace(set_background_image=lambda img, **kw: self.images.append(img))

    def send_file_download(self, name, content):
        self.downloads.append((name, content))


@pytest.fixture
def viewer(tmp_path):
    v = WebViewer(Renderer("sphere"), port=free_port(), size=32, coarse=4, controller=OrbitController.from_degrees(30, 20),
                  out_dir=tmp_path, mesh_resolution=24, source_text="sphere", verbose=False)  # fmt: skip
    yield v
    v.stop()


def test_render_at_a_browser_camera_has_the_right_shape_and_content(viewer):
    client = FakeClient(viewer.ctrl)
    img = viewer.render_image(camera_from_viser(client.camera.position, client.camera.wxyz, client.camera.fov, 40, 30))
    assert img.shape == (30, 40, 3) and img.dtype == np.uint8
    assert img[15, 20].astype(int).sum() != img[0, 0].astype(int).sum()  # the sphere in the centre, background in the corner
    assert img.std() > 10
    assert viewer.frame_log[-1]["width"] == 40 and viewer.frame_log[-1]["seconds"] > 0


def test_coarse_while_moving_full_when_still_and_no_rerender_of_the_same_view(viewer, monkeypatch):
    client = FakeClient(viewer.ctrl, aspect=2.0)
    monkeypatch.setattr(viewer.server, "get_clients", lambda: {7: client})
    viewer.set_size(64)
    client.camera.update_timestamp = time.time()  # just moved
    assert viewer.render_clients()
    assert client.images[-1].shape == (8, 16, 3)  # 64 / coarse 4 wide, the canvas' aspect
    client.camera.update_timestamp = time.time() - 10.0  # still
    assert viewer.render_clients() and client.images[-1].shape == (32, 64, 3)
    assert not viewer.render_clients()  # nothing changed: nothing rendered
    viewer.set_mode("normals")
    assert viewer.render_clients() and len(client.images) == 3
    with pytest.raises(ValueError, match="mode"):
        viewer.set_mode("phong")
    viewer.set_size(96)
    viewer.render_clients()
    assert client.images[-1].shape == (48, 96, 3)


def test_still_images_render_in_bands_that_a_camera_move_abandons(viewer):
    cam = OrbitController.from_degrees(30, 20).camera(24, 20)
    whole = viewer.render_image(cam)
    viewer.seconds_per_pixel = 1.0  # a "slow source": one row per band
    assert np.array_equal(viewer.render_image(cam, abort=lambda: False), whole)  # bands join without seams
    calls = []
    viewer.seconds_per_pixel = 1.0  # (the last image measured the real speed)
    assert viewer.render_image(cam, abort=lambda: calls.append(1) or len(calls) > 2) is None  # moved after 3 bands
    assert len(calls) == 3


def test_mesh_follows_the_iso_level(viewer):
    viewer.jobs.queue.clear()
    viewer._job_mesh(0.1)  # the sphere scene has radius 0.5: its 0.1 level set is the sphere of radius 0.6
    radius = np.linalg.norm(viewer.mesh_handle.vertices, axis=1)
    assert radius.mean() == pytest.approx(0.6, abs=0.02)
    viewer._job_mesh(-0.1)
    assert np.linalg.norm(viewer.mesh_handle.vertices, axis=1).mean() == pytest.approx(0.4, abs=0.02)
    viewer._job_mesh(0.29)  # still crossed; a level the field never reaches is reported, not raised
    assert field_function(viewer.renderer.source)(torch.zeros(1, 3)).item() == pytest.approx(-0.5, abs=1e-4)


def test_queued_jobs_run_on_work_once_and_screenshot_turntable_export(viewer, tmp_path):
    client = FakeClient(viewer.ctrl)
    viewer.jobs.queue.clear()
    viewer.jobs.put(("screenshot", client))
    assert viewer.work_once()
    shot = read_image(next(tmp_path.glob("web_*.png")))
    assert shot.shape == (32, 32, 3) and float(shot.std()) > 0.05
    assert client.downloads[-1][0].endswith(".png")
    viewer.frames_slider.value = 8
    path = viewer._job_turntable(client)
    assert path.suffix in (".mp4", ".gif") and path.is_file()
    if path.suffix == ".gif":  # no imageio-ffmpeg: the GIF fallback, and the message says so
        import imageio.v3 as iio

        frames = iio.imread(path, index=None)
        assert frames.shape[0] == 8 and "imageio-ffmpeg" in viewer.messages[-1]
        assert not np.array_equal(frames[0], frames[2])  # the object turns


def test_gt_points_toggle_says_why_when_there_are_none(viewer):
    viewer._job_gt(True)
    assert viewer.gt_handle is None and "no ground-truth points" in viewer.messages[-1]


def test_camera_path_records_saves_loads_and_renders(viewer, tmp_path):
    a, b = FakeClient(OrbitController.from_degrees(0, 10)), FakeClient(OrbitController.from_degrees(90, 30))
    viewer.add_keyframe(a)
    viewer.add_keyframe(b)
    assert viewer.path_info.content == "2 keyframes"
    viewer.path_file.value = str(tmp_path / "path.json")
    viewer._job_save_path(None)
    loaded = CameraPath.load(tmp_path / "path.json")
    assert loaded.keyframes == viewer.path.keyframes
    mid = loaded.interpolate(3)
    assert np.allclose(mid[0].position, a.camera.position) and np.allclose(mid[-1].position, b.camera.position)
    assert np.allclose(mid[1].position, (np.asarray(a.camera.position) + b.camera.position) / 2)
    viewer._clear_path()
    viewer._job_load_path(None)
    assert len(viewer.path) == 2
    path = viewer._job_render_path(None)
    assert path.is_file()
    (tmp_path / "bad.json").write_text('{"keyframes": [{"position": [0, 0]}]}')
    with pytest.raises(ValueError, match="bad.json"):
        CameraPath.load(tmp_path / "bad.json")


def test_slerp_is_unit_and_takes_the_short_way():
    q0, q1 = np.array([1.0, 0, 0, 0]), np.array([math.cos(0.5), 0, math.sin(0.5), 0])
    half = slerp(q0, q1, 0.5)
    assert np.linalg.norm(half) == pytest.approx(1.0)
    assert np.allclose(half, [math.cos(0.25), 0, math.sin(0.25), 0])
    assert np.allclose(slerp(q0, -q1, 0.5), half)


def test_write_video_falls_back_to_gif_without_ffmpeg(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # import fails
    frames = [np.full((9, 11, 3), 40 * i, np.uint8) for i in range(4)]
    path, msg = write_video(frames, tmp_path / "clip")
    assert path == tmp_path / "clip.gif" and path.is_file() and "imageio-ffmpeg" in msg


def test_checkpoint_choices_list_a_runs_snapshots(tmp_path):
    ck = tmp_path / "run" / "checkpoints"
    ck.mkdir(parents=True)
    for n in ("ckpt_00000010.pt", "latest.pt", "ckpt_00000020.pt"):
        (ck / n).write_bytes(b"")
    names = [p.name for p in checkpoint_choices(str(tmp_path / "run"))]
    assert names == ["ckpt_00000010.pt", "ckpt_00000020.pt", "latest.pt"]
    assert [p.name for p in checkpoint_choices(str(ck / "latest.pt") + "#3")] == names
    assert checkpoint_choices("csg") == []


def test_reload_of_a_python_source_failure_keeps_the_old_one(tmp_path):
    f = tmp_path / "ball.py"
    f.write_text("import taichi as ti\n\n@ti.func\ndef sdf(p, params: ti.template()):\n    return p.norm() - 0.5\n")
    v = WebViewer(Renderer(str(f)), port=free_port(), size=16, mesh_resolution=0, source_text=str(f), verbose=False)
    try:
        assert v.reload_button is not None
        f.write_text("this is not python\n")
        v._job_reload(None)
        assert "reload failed" in v.messages[-1] and v.renderer.source.field is not None
    finally:
        v.stop()


def test_loopback_page_websocket_initial_scene_and_bounded_stop(viewer):
    import websockets

    port = viewer.server.get_port()
    html = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10).read().decode()
    assert "<title>" in html.lower() and "viser" in html.lower()

    async def first_messages():
        proto = f"viser-v{viser.__version__}"
        async with websockets.connect(f"ws://127.0.0.1:{port}", subprotocols=[proto], max_size=None) as ws:
            assert ws.subprotocol == proto
            got = [await asyncio.wait_for(ws.recv(), 10.0)]
            try:
                while True:
                    got.append(await asyncio.wait_for(ws.recv(), 0.5))
            except asyncio.TimeoutError:
                pass
            return got

    messages = asyncio.run(first_messages())
    assert messages and all(isinstance(m, bytes) for m in messages) and sum(map(len, messages)) > 500
    stopper = threading.Thread(target=viewer.stop)
    stopper.start()
    stopper.join(30.0)  # bounded: a hung stop fails here instead of hanging the suite
    assert not stopper.is_alive()
    assert not port_open(port)


def test_cli_refuses_a_bad_port_in_one_line():
    from apps.view import main

    with pytest.raises(SystemExit) as e:
        main(["sphere", "--web", "--port", "70000"])
    assert str(e.value.code) == "python -m apps.view: error: --port: expected a TCP port in 1..65535, got 70000"


CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed")
def test_headless_chromium_opens_the_page_and_shows_the_render(viewer, tmp_path):
    shot = tmp_path / "page.png"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=640,480",
           "--virtual-time-budget=8000", viewer.url]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    while proc.poll() is None:  # serve the page (and render for it) while chromium loads it
        viewer.work_once()
        time.sleep(0.01)
    assert proc.returncode == 0 and shot.is_file()
    assert viewer._shown, "the browser never reported its camera"
    img = read_image(shot)
    assert img.shape[:2] == (480, 640) and float(img.std()) > 0.05
