"""The DIST app on a tiny DeepSDF experiment of spheres (radius 0.3 / 0.5 / 0.7; the 0.5 one held
out): observations, single-shape and single-camera fits, run folders."""

import json

import numpy as np
import pytest
import trimesh

from apps.deepsdf.train import DeepSDFTrainer
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
