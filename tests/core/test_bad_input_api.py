"""Bad input on the API and app side (issue 17): every case either does the right thing or is refused
with a message naming what is wrong. One test per case of the issue's lists, plus the cases found by
trying more (marked "found:")."""

import importlib
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import taichi as ti
import torch

from taichi_sdf.cameras.camera import Camera, look_at, orbit_cameras
from taichi_sdf.core.errors import InputError, app_main, is_user_error, user_errors
from taichi_sdf.implicit.fields import TaichiField
from taichi_sdf.implicit.marchers import DISTMarcher, DVRMarcher, IDRMarcher
from taichi_sdf.implicit.ray_march import ray_march
from taichi_sdf.implicit.scenes import make_scene
from taichi_sdf.implicit.sphere_trace import sphere_trace
from taichi_sdf.implicit.wavefront import march_field, sphere_trace_mlp
from taichi_sdf.mesh.raster import hard_rasterize, soft_rasterize, soft_rasterize_screen
from taichi_sdf.mesh.render import render_mesh
from taichi_sdf.mesh.shading import DirectionalLight
from taichi_sdf.train.checkpoint import atomic_write_bytes
from taichi_sdf.train.config import ConfigValueError, check, load_config, validate_config

ROOT = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------------- ray tracers


@ti.func
def _occupancy(p, params: ti.template()):  # a sphere's occupancy logit, positive inside
    return params[1] * (params[0] - p.norm())


def _sdf(x):  # [M, 3] -> [M], a sphere of radius 0.5
    return x.norm(dim=-1) - 0.5


def _occ(x):  # [M, 3] -> [M], occupancy logit of a sphere of radius 0.3 (inside DVR's unit cube)
    return 10.0 * (0.3 - x.norm(dim=-1))


def _rays(device, n=8):
    """`[n*n, 3]` rays from z = -3 towards a grid in the z = 0 plane: some hit the spheres, some miss."""
    s = torch.linspace(-0.7, 0.7, n)
    gx, gy = torch.meshgrid(s, s, indexing="ij")
    target = torch.stack([gx.flatten(), gy.flatten(), torch.zeros(n * n)], -1)
    o = torch.tensor([0.05, -0.03, -3.0]).expand(n * n, 3).contiguous()
    d = target - o
    return o.to(device), (d / d.norm(dim=-1, keepdim=True)).to(device)


TRACERS = {
    "sphere_trace": lambda o, d: sphere_trace(make_scene("sphere"), o, d),
    "ray_march": lambda o, d: ray_march(TaichiField(_occupancy, torch.tensor([0.3, 10.0], device=o.device)), o, d),
    "march_field-idr": lambda o, d: march_field(_sdf, o, d, marcher=IDRMarcher()),
    "march_field-dist": lambda o, d: march_field(_sdf, o, d, marcher=DISTMarcher()),
    "march_field-dvr": lambda o, d: march_field(_occ, o, d, marcher=DVRMarcher()),
    "sphere_trace_mlp": lambda o, d: sphere_trace_mlp(_sdf, o, d),
}


@pytest.mark.parametrize("tracer", sorted(TRACERS))
def test_tracers_give_the_same_hits_for_any_direction_length(tracer, device):
    """Issue: x0.5 / x2 / x5 directions gave 0 / 22 / 0 hits instead of 71 (unit directions assumed)."""
    o, d = _rays(device)
    ref = TRACERS[tracer](o, d)
    assert 0 < int(ref.hit.sum()) < len(d)
    for scale in (0.5, 2.0, 5.0):
        r = TRACERS[tracer](o, d * scale)
        assert torch.equal(r.hit, ref.hit), scale
        torch.testing.assert_close(r.t[r.hit], ref.t[ref.hit], atol=1e-4, rtol=0)
        torch.testing.assert_close(r.points[r.hit], ref.points[ref.hit], atol=1e-4, rtol=0)


@pytest.mark.parametrize("tracer", ["sphere_trace", "march_field-idr"])
def test_depth_does_not_depend_on_the_direction_length(tracer, device):
    """The ray distance is a function of the unit direction: its gradient w.r.t. the direction has no
    radial part (it had, when the length entered t), and z-depth is the same for scaled directions."""
    o, d = _rays(device)
    d3 = (d * 3.0).requires_grad_()
    r = TRACERS[tracer](o, d3)
    r.t[r.hit].sum().backward()
    radial = (d3.grad * d3.detach()).sum(-1)
    assert d3.grad[r.hit].abs().max() > 1e-3
    torch.testing.assert_close(radial, torch.zeros_like(radial), atol=1e-4, rtol=0)
    cam = look_at(torch.tensor([[0.05, -0.03, -3.0]]), width=8, height=8).to(device, torch.float32)
    z_unit = TRACERS[tracer](o, d).reshape(1, len(d)).z_depth(cam.T_cam_world, d[None])
    z_scaled = r.reshape(1, len(d)).z_depth(cam.T_cam_world, d3.detach()[None])
    torch.testing.assert_close(z_scaled[0, r.hit], z_unit[0, r.hit], atol=1e-4, rtol=0)


@pytest.mark.parametrize("tracer", sorted(TRACERS))
def test_zero_length_directions_are_refused(tracer, device):
    o, d = _rays(device)
    d[3] = 0.0
    with pytest.raises(ValueError, match=r"directions: 1 of 64 directions have zero length"):
        TRACERS[tracer](o, d)


def _grad_tracers(device):
    """(name, trace(o, d) -> TraceResult, the parameter that must receive a gradient)."""
    radius = torch.tensor(0.5, device=device, requires_grad=True)
    field = make_scene("sphere")
    field = field.with_params(field.params.clone().requires_grad_())
    occ = TaichiField(_occupancy, torch.tensor([0.3, 10.0], device=device, requires_grad=True))
    fn = lambda x: x.norm(dim=-1) - radius
    return [
        ("sphere_trace", lambda o, d: sphere_trace(field, o, d), field.params),
        ("ray_march", lambda o, d: ray_march(occ, o, d), occ.params),
        ("idr", lambda o, d: march_field(fn, o, d, marcher=IDRMarcher()), radius),
        ("dist", lambda o, d: march_field(fn, o, d, marcher=DISTMarcher()), radius),
        (
            "dist-approximate",
            lambda o, d: march_field(fn, o, d, marcher=DISTMarcher(buffer_size=3), gradient="approximate"),
            radius,
        ),
        ("dvr", lambda o, d: march_field(lambda x: 10 * (radius * 0.6 - x.norm(dim=-1)), o, d, marcher=DVRMarcher()), radius),
    ]


@pytest.mark.parametrize("rays", ["none", "all-miss"])
@pytest.mark.parametrize("output", ["t", "points"])
def test_outputs_stay_in_the_graph_without_hits(rays, output, device):
    """Issue: zero rays (or no hit) with parameters requiring grad: `loss.backward()` crashed with
    "element 0 of tensors does not require grad"; the outputs now stay connected (zero gradients)."""
    n = 0 if rays == "none" else 4
    o = torch.tensor([[0.0, 0.0, -3.0]], device=device).expand(n, 3).contiguous()
    d = torch.tensor([[0.0, 0.0, -1.0]], device=device).expand(n, 3).contiguous()  # pointing away
    for name, trace, param in _grad_tracers(device):
        r = trace(o, d)
        assert not r.hit.any(), name
        param.grad = None
        getattr(r, output).sum().backward()
        assert param.grad is not None and float(param.grad.abs().sum()) == 0.0, name


# ----------------------------------------------------------------------------------- meshes


def _tri(device, bad=float("nan")):
    v = torch.tensor([[0.0, 0.0, 0.0], [0.5, 0.0, 0.0], [0.0, 0.5, 0.0], [0.3, 0.3, 0.1]], device=device)
    v[2, 1] = bad
    faces = torch.tensor([[0, 1, 2], [0, 1, 3]], device=device)
    cam = look_at(torch.tensor([[0.0, 0.0, 3.0]]), width=16, height=16).to(device, torch.float32)
    return v, faces, cam


MESH_OPS = {
    "soft_rasterize": lambda v, f, cam: soft_rasterize(v, f, cam),
    "soft_rasterize-dibr": lambda v, f, cam: soft_rasterize(v, f, cam, torch.ones_like(v), mode="dibr"),
    "hard_rasterize": lambda v, f, cam: hard_rasterize(v, f, cam),
    "soft_rasterize_screen": lambda v, f, cam: soft_rasterize_screen(
        v[None] * 8 + torch.tensor([8.0, 8.0, 3.0], device=v.device), f, 16, 16
    ),
    "render_mesh": lambda v, f, cam: render_mesh(v, f, cam),
    "render_mesh-hard": lambda v, f, cam: render_mesh(v, f, cam, mode="hard"),
}


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("op", sorted(MESH_OPS))
def test_non_finite_vertices_are_refused(op, bad, device):
    """Issue: NaN/inf vertices silently dropped their faces (alpha 0 where the face was)."""
    v, faces, cam = _tri(device, bad)
    with pytest.raises(ValueError, match=r"vertices: 1 of 4 vertices have NaN/inf coordinates"):
        MESH_OPS[op](v, faces, cam)


def test_non_finite_mesh_attributes_are_refused(device):
    v, faces, cam = _tri(device, 0.5)
    colors = torch.rand(4, 3, device=device)
    colors[1, 2] = float("nan")
    with pytest.raises(ValueError, match=r"colors: contains 1 non-finite"):
        soft_rasterize(v, faces, cam, colors)
    with pytest.raises(ValueError, match=r"colors: contains 1 non-finite"):
        render_mesh(v, faces, cam, colors=colors)
    normals = torch.ones(4, 3, device=device)
    normals[0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"normals: contains 1 non-finite"):
        render_mesh(v, faces, cam, normals=normals)
    tex = torch.full((4, 4, 3), float("nan"), device=device)
    with pytest.raises(ValueError, match=r"texture: contains 48 non-finite"):
        render_mesh(v, faces, cam, texture=(tex, v[:, :2].contiguous(), faces))


def test_hard_render_without_faces_stays_in_the_graph(device):
    v, _, cam = _tri(device, 0.5)
    colors = torch.rand(4, 3, device=device, requires_grad=True)
    out = render_mesh(v, torch.zeros(0, 3, dtype=torch.int64, device=device), cam, colors=colors, mode="hard")
    out.rgb.sum().backward()
    assert colors.grad is not None and float(colors.grad.abs().sum()) == 0.0


# found: a light that lights nothing, and cameras that are no cameras
@pytest.mark.parametrize("direction, match", [((0.0, 0.0, 0.0), "non-zero"), ((math.nan, 0.0, 1.0), "finite")])
@pytest.mark.parametrize("shading", ["lambert", "sh"])
def test_light_direction_must_be_a_finite_non_zero_vector(direction, match, shading, device):
    v, faces, cam = _tri(device, 0.5)
    with pytest.raises(ValueError, match=rf"light direction: expected .*{match}"):
        render_mesh(v, faces, cam, shading=shading, light=DirectionalLight(direction=direction))


def test_bad_cameras_are_refused():
    cam = look_at(torch.tensor([[0.0, 0.0, 3.0]]), width=8, height=8)
    with pytest.raises(ValueError, match=r"K: expected at least one camera"):
        Camera(cam.K[:0], cam.T_cam_world[:0], 8, 8)
    for bad in (math.nan, math.inf):
        T = cam.T_cam_world.clone()
        T[0, 1, 3] = bad
        with pytest.raises(ValueError, match=r"T_cam_world: expected finite poses, got NaN/inf in camera\(s\) \[0\]"):
            Camera(cam.K, T, 8, 8)
    with pytest.raises(ValueError, match=r"n: expected an int >= 1, got 0"):
        orbit_cameras(0)


# found: tracer options that were accepted and gave nothing, or a misleading message
@pytest.mark.parametrize("call, match", [
    (lambda o, d: march_field(_sdf, o, d, level=math.nan), r"level: expected a finite float, got nan"),
    (lambda o, d: march_field(_sdf, o, d, level="0"), r"level: expected a finite float, got '0'"),
    (lambda o, d: march_field(_sdf, o, d, polish_steps=-1), r"polish_steps: expected an int >= 0"),
    (lambda o, d: march_field(_sdf, o, d, image_shape=(4, -4, -4)), r"image_shape: expected \(B, H, W\), positive ints"),
    (lambda o, d: march_field(_sdf, o, d, marcher=IDRMarcher(n_steps=0)), r"IDRMarcher.n_steps: expected an int >= 2"),
    (lambda o, d: march_field(_sdf, o, d, marcher=IDRMarcher(eps=-1e-5)), r"IDRMarcher.eps: expected a finite float > 0"),
    (lambda o, d: march_field(_sdf, o, d, marcher=DISTMarcher(eps=-1.0)), r"DISTMarcher.eps: expected a finite float > 0"),
    (lambda o, d: march_field(_sdf, o, d, marcher=DISTMarcher(alpha=math.nan)), r"DISTMarcher.alpha: expected a finite"),
    (lambda o, d: sphere_trace(make_scene("sphere"), o, d, eps=math.inf), r"eps: expected a finite float > 0, got inf"),
    (lambda o, d: sphere_trace(make_scene("sphere"), o, d, max_steps=True), r"max_steps: expected an int >= 1, got True"),
])  # fmt: skip
def test_bad_tracer_options_are_refused(call, match, device):
    o, d = _rays(device)
    with pytest.raises(ValueError, match=match):
        call(o, d)


# ----------------------------------------------------------------------------------- runtime

_INIT_SCRIPT = """
import os, sys
sys.path.insert(0, {root!r})
import taichi_sdf
from taichi_sdf.core.errors import InputError
for arch in ("cuda", "cuda", "auto"):
    try:
        taichi_sdf.init(arch)
        print("ACCEPTED", arch)
    except InputError as e:
        print("REFUSED", e)
print("FINAL", taichi_sdf.init("cpu").arch)
"""


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_init_cuda_without_a_gpu_is_refused_every_time():
    """Issue: init('cuda') fell back to CPU with only Taichi's warning, and a second init('cuda') then
    failed ("cannot switch"); now both are refused alike and init('cpu') still works."""
    env = dict(os.environ, TAICHI_SDF_ARCH="cuda")  # "auto" then asks for cuda too, by the variable
    out = subprocess.run([sys.executable, "-c", _INIT_SCRIPT.format(root=str(ROOT))], env=env, capture_output=True,
                         text=True, timeout=300).stdout.splitlines()  # fmt: skip
    lines = [ln for ln in out if ln.split(" ", 1)[0] in ("ACCEPTED", "REFUSED", "FINAL")]
    assert lines[0].startswith("REFUSED arch='cuda': the cuda backend is not available on this machine"), lines
    assert lines[1] == lines[0], lines
    assert lines[2].startswith("REFUSED TAICHI_SDF_ARCH=cuda: the cuda backend is not available"), lines
    assert lines[3] == "FINAL cpu", lines


# ----------------------------------------------------------------------------------- configs


def _app_configs():
    from apps.deepsdf.config import DeepSDFConfig
    from apps.demo import DemoConfig
    from apps.dist.config import DISTConfig
    from apps.dvr.config import DVRConfig
    from apps.dvr.single_config import SingleViewConfig
    from apps.idr.config import IDRConfig

    return {"idr": IDRConfig, "dvr": DVRConfig, "dvr-single": SingleViewConfig, "deepsdf": DeepSDFConfig,
            "dist": DISTConfig, "demo": DemoConfig}  # fmt: skip


NON_FINITE = [
    ("idr", "train.lr=inf", "train.lr"),
    ("idr", "train.eikonal_weight=inf", "train.eikonal_weight"),
    ("idr", "tracer.eps=inf", "tracer.eps"),
    ("idr", "model.init_radius=nan", "model.init_radius"),
    ("idr", "fscore_threshold=inf", "fscore_threshold"),
    ("dvr", "train.lr=inf", "train.lr"),
    ("dvr", "marcher.refine_margin=inf", "marcher.refine_margin"),
    ("dvr-single", "train.lr=inf", "train.lr"),
    ("deepsdf", "train.clamp=inf", "train.clamp"),
    ("deepsdf", "train.decoder_lr.initial=inf", "train.decoder_lr.initial"),
    ("dist", "views.depth_noise=nan", "views.depth_noise"),
    ("dist", "views.radius=inf", "views.radius"),
    ("demo", "camera_distance=inf", "camera_distance"),
]


@pytest.mark.parametrize("app, override, key", NON_FINITE)
def test_config_floats_must_be_finite(app, override, key):
    """Issue: `train.lr=nan` gave NaN; inf passed every `> 0` / `>= 0` check."""
    with pytest.raises(ConfigValueError, match=rf"config key '{key}' \(from override '{override}'\): expected a finite"):
        load_config(_app_configs()[app], None, [override])


def test_every_check_form_rejects_nan_and_inf():
    for value in (math.nan, math.inf, -math.inf, (1.0, math.nan)):
        with pytest.raises(ConfigValueError, match=r"config key 'k': expected < 1 \(a finite number\)"):
            check(True, "k", "< 1", value)  # whatever `ok` a check form computed


def test_validate_config_rejects_an_edited_non_finite_value():
    cfg = load_config(_app_configs()["idr"], None, [])
    cfg.train.lr = math.inf
    with pytest.raises(ConfigValueError, match=r"config key 'train.lr'"):
        validate_config(cfg)


@pytest.mark.parametrize("app", ["idr", "dvr"])
def test_data_format_without_data_is_refused(app):
    """Issue: `data.format=...` without `data.data` was ignored (the built-in scene was used)."""
    with pytest.raises(ConfigValueError, match=r"config key 'data.format' \(from override 'data.format=nerf'\): "
                                               r"expected 'auto' without data.data"):  # fmt: skip
        load_config(_app_configs()[app], None, ["data.format=nerf"])
    assert load_config(_app_configs()[app], None, ["data.format=nerf", "data.data=some/folder"]).data.format == "nerf"


# ----------------------------------------------------------------------------------- app handler

APP_MAINS = ["apps.idr.__main__", "apps.dvr.__main__", "apps.dvr.single", "apps.deepsdf.train", "apps.deepsdf.reconstruct",
             "apps.deepsdf.evaluate", "apps.deepsdf.sample", "apps.dist.__main__", "apps.demo", "apps.check_cameras",
             "apps.evaluate", "apps.make_dataset", "apps.viewer.app"]  # fmt: skip


@pytest.mark.parametrize("module", APP_MAINS)
def test_every_app_main_goes_through_the_handler(module):
    main = importlib.import_module(module).main
    assert getattr(main, "__wrapped__", None) is not None, f"{module}.main is not wrapped by app_main"


def _fails(exc: BaseException):
    def main(argv):
        raise exc

    return main


def test_user_errors_print_one_line_and_exit_1():
    with pytest.raises(SystemExit) as e:
        app_main("prog")(_fails(InputError("data.data: /x is not a folder")))([])
    assert e.value.code == "prog: error: data.data: /x is not a folder"

    def project_refusal(argv):
        make_scene("no_such_scene")  # a plain ValueError raised by a `raise` in the library

    with pytest.raises(SystemExit) as e:
        app_main("prog")(project_refusal)([])
    assert e.value.code.startswith("prog: error: scene: expected one of")

    def missing_file(argv):
        open("/nonexistent/dir/file.ply")

    with pytest.raises(SystemExit) as e:
        app_main("prog")(missing_file)([])
    assert e.value.code == "prog: error: No such file or directory: /nonexistent/dir/file.ply"


def test_unexpected_errors_keep_their_traceback():
    with pytest.raises(ValueError, match="a bug"):  # raised outside the project's code
        app_main("prog")(_fails(ValueError("a bug")))([])
    with pytest.raises(ValueError):  # raised inside numpy
        app_main("prog")(lambda argv: np.asarray("x", dtype=float))([])
    with pytest.raises(ZeroDivisionError):
        app_main("prog")(lambda argv: 1 / 0)([])
    assert not is_user_error(RuntimeError("x"))


def test_debug_flag_and_variable_show_the_traceback(monkeypatch):
    seen = []

    def main(argv):
        seen.append(argv)
        raise InputError("bad value")

    with pytest.raises(InputError, match="bad value"):
        app_main("prog")(main)(["a", "--debug", "b"])
    assert seen[-1] == ["a", "b"]  # the app's parser never sees --debug
    monkeypatch.setenv("TAICHI_SDF_DEBUG", "1")
    with pytest.raises(InputError):
        app_main("prog")(main)([])
    monkeypatch.setenv("TAICHI_SDF_DEBUG", "0")
    with pytest.raises(SystemExit):
        app_main("prog")(main)([])


def test_nested_apps_inherit_debug():
    inner = app_main("outer inner")(_fails(InputError("bad value")))
    outer = app_main("outer")(lambda argv: inner(argv))
    with pytest.raises(InputError):
        outer(["--debug"])
    with pytest.raises(SystemExit, match="outer inner: error: bad value"):
        outer([])


def test_ctrl_c_outside_the_training_loop_exits_130(capsys):
    """found: Ctrl-C while a dataset loads printed a long traceback."""
    with pytest.raises(SystemExit) as e, user_errors("prog"):
        raise KeyboardInterrupt
    assert e.value.code == 130 and "prog: interrupted" in capsys.readouterr().err


def test_deepsdf_commands_report_user_errors_in_one_line(tmp_path):
    """Through `python -m apps.deepsdf`'s dispatcher: the sub-command's error is one line; --debug (given to
    the dispatcher) reaches the sub-command and shows the traceback."""
    from apps.deepsdf.__main__ import main

    argv = ["evaluate", f"out={tmp_path / 'none'}"]
    with pytest.raises(SystemExit, match=r"^python -m apps.deepsdf evaluate: error: .*checkpoint"):
        main(argv)
    with pytest.raises(FileNotFoundError):
        main(["--debug"] + argv)


@pytest.mark.slow
def test_app_error_end_to_end(tmp_path):
    """`python -m apps.evaluate` on a missing file: one line on stderr and exit 1, no traceback
    (a traceback with --debug)."""
    cmd = [sys.executable, "-m", "apps.evaluate", str(tmp_path / "pred.ply"), str(tmp_path / "gt.ply")]
    plain = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert plain.returncode == 1 and "Traceback" not in plain.stderr
    errors = [ln for ln in plain.stderr.splitlines() if "error" in ln]
    assert len(errors) == 1 and errors[0].startswith("python -m apps.evaluate: error: ") and "pred.ply" in errors[0]
    debug = subprocess.run(cmd + ["--debug"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert debug.returncode == 1 and "Traceback" in debug.stderr


# found: command-line values that were accepted and failed late (or trained nothing)
@pytest.mark.parametrize("argv, match", [
    (["sphere", "--offscreen", "--frames", "0"], "--frames: expected >= 1"),
    (["sphere", "--offscreen", "--fps", "0"], "--fps: expected a finite number > 0"),
    (["sphere", "--size", "-4"], "--size: expected >= 1"),
    (["sphere", "--fov", "180"], "--fov: expected a finite number > 0 and < 180"),
])  # fmt: skip
def test_viewer_flags_are_checked(argv, match, capsys):
    from apps.viewer.app import main

    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and match in capsys.readouterr().err


def test_negative_iterations_are_refused(tmp_path, capsys):
    from apps.idr.__main__ import main

    with pytest.raises(SystemExit) as e:
        main(["--iterations", "-5", f"out={tmp_path}"])
    assert e.value.code == 2 and "--iterations: expected >= 0, got -5" in capsys.readouterr().err


# ----------------------------------------------------------------------------------- files


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_follow_the_umask(tmp_path, umask, mode):
    """Issue: checkpoints, configs and meshes were 0600 (the temp file's mode) while metrics were 0644."""
    old = os.umask(umask)
    try:
        path = atomic_write_bytes(tmp_path / "latest.pt", b"x")
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
    finally:
        os.umask(old)
    assert os.stat(path).st_mode & 0o777 == mode == os.stat(plain).st_mode & 0o777
