"""The DIST app on a tiny DeepSDF experiment of spheres (radius 0.3 / 0.5 / 0.7; the 0.5 one held
out): observations, single-shape and single-camera fits, run folders."""

import json

import numpy as np
import pytest
import torch
import trimesh

from apps.deepsdf.train import DeepSDFTrainer
from apps.dist.__main__ import main as dist_main
from apps.dist.__main__ import run_mode
from apps.dist.config import DISTConfig
from taichi_sdf.train.config import load_config
from tests.apps.test_deepsdf import FAST, RADII, make_sphere_data, tiny_cfg


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    root = make_sphere_data(tmp_path_factory.mktemp("dist") / "data")
    offset, scale = np.array([-1.0, 0.0, 0.0]), 0.5  # as make_sphere_data
    for name, r in RADII.items():
        m = trimesh.creation.icosphere(3, radius=r)
        m.vertices = m.vertices / scale - offset
        (root / "meshes").mkdir(exist_ok=True)
        m.export(root / "meshes" / f"{name}.ply")
    out = tmp_path_factory.mktemp("exp")
    cfg = tiny_cfg(root, out, "train.epochs=150", "model.dropout_prob=0.0", *FAST)
    DeepSDFTrainer(cfg).train(progress=False)
    return out


TINY_DIST = ["views.views=3", "views.size=24", "eval.resolution=24", "eval.points=2000", "single.iterations=15",
             "single.lr=2e-2", "camera.iterations=10", "camera.initial_errors_deg=[10]", "camera.trials=1",
             "render.march_steps=40"]  # fmt: skip


def dist_cfg(experiment, out, *extra):
    return load_config(DISTConfig, "configs/dist/cpu.yaml", [f"shapes.experiment={experiment}", f"out={out}", *TINY_DIST, *extra])


@pytest.mark.slow
def test_single_shape_improves_on_its_initialisation(experiment, tmp_path):
    cfg = dist_cfg(experiment, tmp_path, "single.init=mean")
    summary = run_mode("single-shape", cfg, progress=False)
    run = tmp_path / "single-shape"
    rows = json.loads((run / "metrics.json").read_text())["shapes"]
    assert len(rows) == 1 and rows[0]["status"] == "ok"
    assert summary["dist"]["chamfer_l1"]["mean"] < summary["initial"]["chamfer_l1"]["mean"]
    assert (run / "images" / "r50.png").is_file() and len(list((tmp_path / "views").glob("*/r50.npz"))) == 1


class AsymmetricShape:
    """A stand-in decoder whose `field(code)` is an analytic SDF without rotational symmetry (a sphere
    with a smaller sphere attached), so that a camera pose is identifiable from one view."""

    def field(self, code):
        c1, c2 = torch.tensor([0.0, 0.0, 0.0]), torch.tensor([0.35, 0.3, 0.1])
        return lambda x: torch.minimum((x - c1.to(x)).norm(dim=-1) - 0.4, (x - c2.to(x)).norm(dim=-1) - 0.22)


def test_fit_camera_recovers_a_pose_on_an_asymmetric_shape():
    from apps.dist.data import Observations, view_cameras
    from apps.dist.render import render_sdf
    from apps.dist.single_camera import errors, fit_camera, perturbed_pose

    cfg = load_config(DISTConfig, "configs/dist/cpu.yaml", ["views.size=32", "camera.iterations=60", "camera.lr=1e-2"])
    cam = view_cameras(cfg.views, 0)[0].to(dtype=torch.float32)
    shape = AsymmetricShape()
    with torch.no_grad():
        img = render_sdf(shape.field(None), cam, cfg.render, normals=False)
    obs = Observations(cam, torch.zeros(1, 32, 32, 3), img.mask[None], img.depth[None], img.depth[None], img.normal[None])
    T_gt = cam.T_cam_world[0]
    T0 = perturbed_pose(T_gt, 10.0, 0.0, torch.Generator().manual_seed(3))
    T, history = fit_camera(shape, torch.zeros(1), obs, T0, cfg)
    before, after = errors(T0, T_gt), errors(T, T_gt)
    assert before["rotation_deg"] == pytest.approx(10.0, abs=1e-4)
    assert history[-1]["loss"] < history[0]["loss"]
    assert after["rotation_deg"] < 0.3 * before["rotation_deg"] and after["center"] < before["center"]


@pytest.mark.slow
def test_single_camera_mode_writes_its_sweep(experiment, tmp_path):
    cfg = dist_cfg(experiment, tmp_path, "camera.iterations=3", "camera.initial_errors_deg=[15]", "camera.translation_noise=0.0")
    summary = run_mode("single-camera", cfg, progress=False)
    s = summary["15"]
    assert s["trials"] == 1 and s["before_rotation_deg_median"] == pytest.approx(15.0, abs=1e-4)
    assert {"success_rate", "after_rotation_deg_median", "after_center_median"} <= set(s)
    assert list((tmp_path / "single-camera" / "images").glob("r50_15deg.png"))
    assert json.loads((tmp_path / "single-camera" / "metrics.json").read_text())["summary"] == summary


@pytest.mark.slow
@pytest.mark.parametrize("similarity", [False, True], ids=["synthetic", "sim3"])
def test_multi_view_fits_a_code_from_photometric_warps(experiment, tmp_path, similarity):
    extra = [
        "multi.epochs=3",
        "multi.pairs_per_epoch=4",
        f"multi.similarity={str(similarity).lower()}",
        "multi.similarity_noise=0.05",
    ]
    run_mode("multi-view", dist_cfg(experiment, tmp_path, *extra), progress=False)
    row = json.loads((tmp_path / "multi-view" / "shapes" / "r50.json").read_text())
    assert row["status"] == "ok" and row["steps"] == 12 and row["final_loss"]["warp"] >= 0
    assert row["dist"]["chamfer_l1"] <= row["initial"]["chamfer_l1"] or row["initial"]["status"] != "ok"
    if similarity:
        assert row["similarity_before"]["rotation_deg"] > 0.5


@pytest.mark.slow
def test_multi_view_on_a_dataset_folder(experiment, tmp_path):
    from taichi_sdf.data.builtin import render_scene_dataset, write_dataset

    folder = tmp_path / "scan"
    write_dataset(render_scene_dataset("sphere", views=6, size=24, test_every=3, test_offset=1), folder, "idr", "sphere")
    extra = [f"multi.data={folder}", "multi.epochs=2", "multi.pairs_per_epoch=3", "multi.similarity=true"]
    row = run_mode("multi-view", dist_cfg(experiment, tmp_path, *extra), progress=False)
    assert row["status"] == "ok" and row["steps"] == 6 and len(row["views"]) == 4
    assert 0 <= row["test_mask_iou"] <= 1 and row["chamfer_l1"] > 0
    assert (tmp_path / "multi-view" / "mesh.ply").is_file() and (tmp_path / "multi-view" / "metrics.json").is_file()


def test_run_folder_refuses_other_settings_and_cli_errors_are_one_line(experiment, tmp_path, capsys):
    from apps.dist.common import RunFolder
    from taichi_sdf.train.trainer import UserError

    RunFolder(tmp_path, "single-shape", {"a": 1})
    with pytest.raises(UserError, match="other settings"):
        RunFolder(tmp_path, "single-shape", {"a": 2})
    RunFolder(tmp_path, "single-shape", {"a": 2}, overwrite=True)
    with pytest.raises(SystemExit) as e:
        dist_main(["single-shape", f"out={tmp_path}", f"shapes.experiment={tmp_path / 'nowhere'}"])
    assert "shapes.experiment" in str(e.value) and "apps.deepsdf all" in str(e.value)
    with pytest.raises(SystemExit):
        dist_main(["single-shape", "views.size=30"])
    assert "multiple of 4" in capsys.readouterr().err


def test_downsampled_views_average_covered_pixels():
    from apps.dist.data import Observations, view_cameras
    from apps.dist.single_shape import downsample_view

    cfg = load_config(DISTConfig, "configs/dist/cpu.yaml", ["views.size=8"])
    cam = view_cameras(cfg.views, 0)[0]
    mask = torch.zeros(1, 8, 8, dtype=torch.bool)
    mask[0, :2, :2] = True  # one full 2x2 block
    mask[0, 2, 2] = True  # a quarter of another block
    depth = torch.where(mask, 1 + torch.arange(64.0).reshape(1, 8, 8), torch.zeros(1, 8, 8))
    normal = torch.zeros(1, 8, 8, 3)
    normal[..., 2] = mask.float()
    obs = Observations(cam, torch.ones(1, 8, 8, 3), mask, depth, depth, normal)
    half = downsample_view(obs, 2)
    assert half.cameras.width == 4 and half.mask.shape == (1, 4, 4)
    assert half.mask[0, 0, 0] and not half.mask[0, 1, 1] and half.mask.sum() == 1
    assert half.depth[0, 0, 0] == pytest.approx((1 + 2 + 9 + 10) / 4)
    assert half.depth[0, 1, 1] == pytest.approx(19.0)  # the mean of its covered pixels only
    assert torch.allclose(half.normal[0, 0, 0], torch.tensor([0.0, 0.0, 1.0]))
    assert torch.allclose(half.cameras.K[0, :2], cam.K[0, :2] / 2)


@pytest.mark.slow
def test_multiscale_fit_renders_three_resolutions(experiment, tmp_path):
    cfg = dist_cfg(experiment, tmp_path, "single.multiscale=true", "single.iterations=3", "single.init=mean", "views.size=32")
    run_mode("single-shape", cfg, progress=False)
    row = json.loads((tmp_path / "single-shape" / "shapes" / "r50.json").read_text())
    assert row["status"] == "ok" and row["iterations"] == 3
