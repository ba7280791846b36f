"""The viewer (`python -m apps.view`): every kind of SOURCE renders offscreen with the object where it
should be, the orbit controller's math, the window's event handling and progressive refinement
(ti.GUI with show_gui=False), and reload errors that are reported, not raised."""

import math
import os
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from apps.view import OrbitController, Renderer, SourceError, Viewer, load_source, main, render_orbit
from apps.viewer.sources import MeshSource
from taichi_sdf.cameras.camera import orbit_cameras

SIZE = 48
# Square images of a centred object inside the unit sphere seen from 2.75 with a 40 degree field of
# view: a sphere of radius r covers a disc of radius ~ W * 0.5 / tan(20 deg) * r / sqrt(2.75^2 - r^2).


def disc_fraction(r: float, dist: float = 2.75, fov_deg: float = 40.0) -> float:
    rad = 0.5 / math.tan(math.radians(fov_deg) / 2) * r / math.sqrt(dist**2 - r**2)
    return math.pi * rad**2


def check_image(img, hit=None, size=SIZE):
    """Right size, not blank, object in the centre, background in the corners."""
    img = torch.as_tensor(img).float()
    assert img.shape == (size, size, 3)
    assert float(img.std()) > 0.02, "blank image"
    c = size // 2
    corners = img[[0, 0, -1, -1], [0, -1, 0, -1]]
    assert torch.allclose(corners, corners[0].expand_as(corners)), "corners differ: object reaches them?"
    assert not torch.allclose(img[c, c], corners[0], atol=0.02), "centre pixel is background"
    if hit is not None:
        assert bool(hit[c, c]) and not bool(hit[0, 0]) and not bool(hit[-1, -1])


def front_camera(size=SIZE):
    return OrbitController.from_degrees(30.0, 20.0).camera(size, size)


# -- sources ----------------------------------------------------------------------------------------------


def test_builtin_scene_orbit_offscreen(tmp_path):
    files = main(["sphere", "--offscreen", "--frames", "2", "--size", str(SIZE), "--out", str(tmp_path),
                  "--shading", "all"])["files"]  # fmt: skip
    assert (tmp_path / "orbit.gif").is_file()
    from taichi_sdf.data.image_io import read_image

    for mode in ("normals", "depth", "lambert", "color"):
        assert (tmp_path / f"frame_001_{mode}.png") in [Path(f) for f in files]
        check_image(read_image(tmp_path / f"frame_000_{mode}.png"))
    r = Renderer("sphere")
    out = r.render(front_camera())
    check_image(out["lambert"], out["hit"])
    # The sphere of radius 0.5 covers the disc it should (pixel-count accuracy).
    assert float(out["hit"].float().mean()) == pytest.approx(disc_fraction(0.5), rel=0.08)
    assert r.stats["rays"] == SIZE * SIZE and r.stats["seconds"] > 0


SPHERE_SDF = """
import taichi as ti

PARAMS = [{r}]
BOUND_RADIUS = 1.0


@ti.func
def helper(x):
    return x


@ti.func
def sdf(p, params: ti.template()):
    return helper(p.norm() - params[0])
"""


def test_python_sdf_file_renders_and_reloads(tmp_path):
    path = tmp_path / "my_sdf.py"
    path.write_text(SPHERE_SDF.format(r=0.5))
    r = Renderer(str(path))
    assert r.source.kind == "python" and r.source.name == "my_sdf.py:sdf"
    out = r.render(front_camera())
    check_image(out["normals"], out["hit"])
    big = float(out["hit"].float().mean())
    assert big == pytest.approx(disc_fraction(0.5), rel=0.08)

    path.write_text(SPHERE_SDF.format(r=0.3))  # edit, reload, see it
    os.utime(path, (r.source.mtime + 5, r.source.mtime + 5))  # --watch sees each change once
    assert r.source.poll_changed() and not r.source.poll_changed()
    r.reload()
    small = float(r.render(front_camera())["hit"].float().mean())
    assert small == pytest.approx(disc_fraction(0.3), rel=0.12)

    # A syntax error and a Taichi compile error: clear SourceErrors naming the file; the last good SDF stays.
    path.write_text("import taichi as ti\n\n@ti.func\ndef sdf(p, params: ti.template())\n    return p.norm()\n")
    with pytest.raises(SourceError, match=r"my_sdf\.py: import failed(.|\n)*SyntaxError"):
        r.reload()
    path.write_text("import taichi as ti\n\n@ti.func\ndef sdf(p, params: ti.template()):\n    return no_such_fn(p)\n")
    with pytest.raises(SourceError, match=r"my_sdf\.py: the SDF does not compile(.|\n)*no_such_fn"):
        r.reload()
    assert float(r.render(front_camera())["hit"].float().mean()) == pytest.approx(small)

    # The window reports the error instead of crashing and keeps drawing.
    viewer = Viewer(r, SIZE, SIZE, front_camera_ctrl(), show_gui=False, print_every=0)
    assert viewer.reload() is False and "no_such_fn" in viewer.error
    assert viewer.step() and viewer.image.std() > 0


def test_python_sdf_discovery_rules(tmp_path):
    one = tmp_path / "one.py"
    one.write_text(
        textwrap.dedent("""
        import taichi as ti

        @ti.func
        def blob(p, params: ti.template()):
            return p.norm() - params[1]
    """)
    )
    src = load_source(str(one), params=[0.0, 0.4])
    assert src.name == "one.py:blob" and src.field.params.tolist() == pytest.approx([0.0, 0.4])
    two = tmp_path / "two.py"
    two.write_text(one.read_text() + "\n\n@ti.func\ndef other(p, params: ti.template()):\n    return p.norm() - 0.2\n")
    with pytest.raises(SourceError, match="several @ti.func SDF candidates \\(blob, other\\)"):
        load_source(str(two))
    assert load_source(str(two), func="other", params=[0.0]).name == "two.py:other"
    bare = tmp_path / "bare.py"  # params without ti.template(): Taichi would read it as a scalar constant
    bare.write_text("import taichi as ti\n\n@ti.func\ndef sdf(p, params):\n    return p.norm() - 0.5\n")
    with pytest.raises(SourceError, match=r"sdf\(p, params\): expected the signature \(p, params: ti.template\(\)\)"):
        load_source(str(bare))
    none = tmp_path / "none.py"
    none.write_text("X = 1\n")
    with pytest.raises(SourceError, match="no SDF found"):
        load_source(str(none))
    with pytest.raises(SourceError, match="not a built-in scene"):
        load_source("no_such_scene_or_file")


def front_camera_ctrl():
    return OrbitController.from_degrees(30.0, 20.0)


@pytest.mark.parametrize("mode", ["sdf", "raster"])
def test_mesh_file(tmp_path, mode):
    import trimesh

    path = tmp_path / "ball.ply"
    trimesh.creation.icosphere(subdivisions=3, radius=3.0).apply_translation([5.0, 0.0, 0.0]).export(path)
    r = Renderer(str(path), mesh_mode=mode, grid=32)
    assert isinstance(r.source, MeshSource) and r.source.mode == mode
    out = r.render(front_camera(), overlay=True)
    check_image(out["lambert"], out["hit"])
    # Normalised into the unit sphere: the ball has radius 0.8 in the view frame.
    assert float(out["hit"].float().mean()) == pytest.approx(disc_fraction(0.8), rel=0.08)
    # The overlay draws the mesh's surface points (green dots) on the object, up to its outline.
    from scipy.ndimage import binary_dilation

    dots = (out["lambert"][..., 1] > 0.95) & (out["lambert"][..., 0] < 0.2)
    assert dots.sum() > 20 and not (dots.numpy() & ~binary_dilation(out["hit"].numpy())).any()


def test_idr_checkpoint(tmp_path):
    from apps.idr.config import IDRConfig
    from apps.idr.trainer import IDRTrainer
    from taichi_sdf.data.builtin import render_scene_dataset, write_dataset
    from taichi_sdf.train.config import load_config

    data = tmp_path / "scan"
    ds = render_scene_dataset("sphere", views=4, size=16, test_every=4, test_offset=1)
    write_dataset(ds, data, "idr")
    dirs = torch.randn(500, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    pts = 0.5 * dirs / dirs.norm(dim=1, keepdim=True)  # the sphere scene's surface, normalised frame
    np.save(data / "gt_points.npy", ds.to_world(pts).numpy())  # ground truth in world units, as apps.idr reads it
    # One wide layer: its geometric init is close to the sphere of radius 0.6 (narrow nets are far from it).
    small = ["model.hidden=256", "model.n_layers=1", "model.skip_in=[]", "model.multires=0", "model.d_feature=4",
             "model.render_hidden=8", "model.render_layers=1", f"data.data={data}", f"out={tmp_path / 'run'}"]  # fmt: skip
    IDRTrainer(load_config(IDRConfig, "configs/idr/cpu.yaml", small)).save()

    for source in (tmp_path / "run", tmp_path / "run" / "checkpoints" / "latest.pt"):
        r = Renderer(str(source))
        assert r.source.kind == "idr" and r.default_mode() == "color"
    out = r.render(front_camera(), overlay=True)
    for mode in ("color", "normals"):
        check_image(out[mode], out["hit"])
    assert disc_fraction(0.45) < float(out["hit"].float().mean()) < disc_fraction(0.75)
    gt = r.overlay()
    assert gt.kind == "points" and np.abs(np.linalg.norm(gt.points, axis=1) - 0.5).max() < 1e-4
    with pytest.raises(SourceError, match="unknown checkpoint"):
        torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
        load_source(str(tmp_path / "other.pt"))


# -- camera controller and window -------------------------------------------------------------------------


def test_controller_matches_orbit_cameras_and_round_trips():
    ref = orbit_cameras(8, 2.5, 30.0, 64, 48, 50.0)[1]  # azimuth 45 degrees
    cam = OrbitController.from_degrees(45.0, 30.0, distance=2.5, fov_x_deg=50.0).camera(64, 48)
    torch.testing.assert_close(cam.T_cam_world, ref.T_cam_world)
    torch.testing.assert_close(cam.K, ref.K)
    c = OrbitController.from_eye((0.3, 1.2, -2.0), (0.1, 0.0, 0.2), 35.0)
    np.testing.assert_allclose(c.eye(), (0.3, 1.2, -2.0), atol=1e-12)
    assert "--eye 0.3,1.2,-2 --target 0.1,0,0.2 --fov 35" in c.describe(64, 64)


def test_controller_orbit_zoom_pan():
    c = OrbitController.from_degrees(0.0, 0.0)
    c.orbit(0.25, 0.0)  # drag right a quarter of the window: the eye moves left by 45 degrees
    assert c.azimuth == pytest.approx(2 * math.pi - math.pi / 4) and c.eye()[0] < 0
    c.orbit(0.0, -10.0)  # dragging far down: the eye climbs to the clamp, never over the pole
    assert math.degrees(c.elevation) == pytest.approx(89.0)
    c.zoom(2)
    assert c.distance == pytest.approx(2.75 * 0.81)
    c.zoom(-1e4)
    assert c.distance == c.max_distance
    # Panning drags the scene with the cursor: the old target follows the mouse in the image.
    c = OrbitController.from_degrees(30.0, 20.0)
    W, H = 80, 60
    old = torch.tensor(c.target[None], dtype=torch.float64)
    c.pan(0.1, 0.05, H / W)
    uv, _ = c.camera(W, H).project(old)
    assert uv[0, 0].tolist() == pytest.approx([W / 2 + 0.1 * W, H / 2 - 0.05 * H], abs=1e-6)
    assert c.distance == pytest.approx(2.75)


def event(kind, key, pos=(0.5, 0.5), delta=(0, 0), modifier=()):
    import taichi as ti

    t = {"press": ti.GUI.PRESS, "release": ti.GUI.RELEASE, "motion": ti.GUI.MOTION}[kind]
    return SimpleNamespace(type=t, key=key, pos=pos, delta=delta, modifier=list(modifier))


def test_window_events_and_progressive_refinement(tmp_path):
    import taichi as ti

    v = Viewer(Renderer("sphere"), 64, 64, OrbitController.from_degrees(60.0, 20.0), show_gui=False,
               screenshot_dir=tmp_path, print_every=0, coarse=4, fps_target=1000.0)  # fmt: skip
    # fps_target=1000: a 1 ms frame budget, so the refinement runs in several bands over several frames.
    assert v.mode == "color"  # scenes show the built-in dataset's colours
    for _ in range(100):
        v.step()
        if v.level == 1 and v._job is None:
            break
    assert [lv for lv, _, _ in v.frame_log] == [4, 2, 1]  # coarse first, then refine (in bands of rows)
    assert v.frames > 3
    assert not v.render_if_needed()  # still and refined: nothing more to render
    check_image(v.image, size=64)
    whole = v.renderer.render(v.ctrl.camera(64, 64), (v.mode,))[v.mode].numpy()
    np.testing.assert_array_equal(v.image, whole)  # the bands join into exactly the one-shot image

    v.handle(event("press", ti.GUI.LMB, (0.5, 0.5)))
    v.handle(event("motion", ti.GUI.MOVE, (0.75, 0.5)))
    v.handle(event("release", ti.GUI.LMB, (0.75, 0.5)))
    assert v.ctrl.azimuth == pytest.approx(math.radians(60.0 - 45.0))
    v.step()
    assert v.frame_log[-1][0] == 4  # moved: a coarse frame
    target = v.ctrl.target.copy()
    v.handle(event("press", ti.GUI.LMB, (0.5, 0.5), modifier=["Shift"]))  # shift-drag pans
    v.handle(event("motion", ti.GUI.MOVE, (0.6, 0.5)))
    v.handle(event("release", ti.GUI.LMB))
    v.handle(event("press", ti.GUI.RMB, (0.5, 0.5)))  # so does a right-drag
    v.handle(event("motion", ti.GUI.MOVE, (0.5, 0.4)))
    assert np.linalg.norm(v.ctrl.target - target) > 0.1 and v.ctrl.azimuth == pytest.approx(math.radians(15.0))
    v.handle(event("release", ti.GUI.RMB))
    v.handle(event("motion", ti.GUI.WHEEL, delta=SimpleNamespace(x=0, y=120)))  # how ti.GUI reports a notch
    assert v.ctrl.distance == pytest.approx(2.75 * 0.9)
    v.handle(event("press", "2"))
    assert v.mode == "depth"
    v.handle(event("press", "m"))
    assert v.mode == "lambert"
    v.handle(event("press", "g"))
    assert v.overlay
    v.step()
    v.handle(event("press", "s"))
    assert len(list(tmp_path.glob("view_*.png"))) == 1
    v.handle(event("press", "q"))
    assert not v.running and not v.step()
    summary = v.summary()
    assert summary["1/1"]["size"] == "64x64" and summary["1/4"]["size"] == "16x16"
    # Auto coarse level: the finest resolution whose frame fits the frame-rate target.
    v.coarse, v.fps_target = 0, 10.0
    for rays_per_s, level in ((1e6, 1), (64 * 64 * 10 / 4, 2), (1000.0, 8), (1.0, 16)):
        v.rays_per_s = rays_per_s
        assert v.coarse_level() == level


def test_render_orbit_modes_and_overlay(tmp_path):
    r = Renderer("sphere")
    files = render_orbit(r, tmp_path, frames=2, size=SIZE, overlay=True)
    assert sorted(f.name for f in files) == ["frame_000.png", "frame_001.png", "orbit.gif"]
    out = r.render(front_camera(), ("lambert",), overlay=True)
    from apps.viewer.render import OUTLINE_RGB, outline

    ring = outline(out["hit"].numpy())
    assert ring.sum() > 20
    np.testing.assert_allclose(out["lambert"].numpy()[ring], np.broadcast_to(OUTLINE_RGB, (int(ring.sum()), 3)))
