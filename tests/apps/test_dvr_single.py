"""DVR single-view: a tiny generated ShapeNet layout, a few steps, generation + eval_meshes tables with
the retrieval baseline, exact resume."""

import json

import pytest

from apps.dvr.single import SingleViewTrainer, builtin_root
from apps.dvr.single_config import SingleViewConfig
from taichi_sdf.train.config import load_config

TINY = [
    "data.classes=[chair,table]", "data.instances=3", "data.views=2", "data.size=32", "data.input_size=64", "data.points=2000",
    "model.hidden_size=16", "model.c_dim=8", "train.batch_size=2", "train.pixels=32", "train.iterations=2",
    "train.log_every=1", "marcher.init_steps=8", "mesh.resolution_0=8", "mesh.upsampling_steps=1",
    "mesh.refinement_steps=2", "eval.n_points=500", "eval.split=test",
]  # fmt: skip


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, monkeypatch_module):
    folder = tmp_path_factory.mktemp("dvr_single")
    monkeypatch_module.chdir(folder)  # the built-in dataset is generated under ./outputs/cache
    return folder


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def tiny_cfg(out, *extra):
    from pathlib import Path

    preset = Path(__file__).resolve().parents[2] / "configs/dvr/single_cpu.yaml"
    return load_config(SingleViewConfig, preset, TINY + [f"out={out}", *extra])


def test_resume_gives_the_same_next_loss(workdir):
    a = SingleViewTrainer(tiny_cfg(workdir / "a"))
    assert builtin_root(a.cfg).is_dir()
    a.step()
    a.save()
    next_a = a.step()
    b = SingleViewTrainer(tiny_cfg(workdir / "a"), mode="resume")
    assert b.iteration == 1
    assert b.step()["loss"] == pytest.approx(next_a["loss"], rel=1e-6, abs=1e-7)


@pytest.mark.slow
def test_smoke_run_writes_the_tables(workdir):
    from apps.dvr.__main__ import main

    out = workdir / "run"
    metrics = main(["single", "--config", str(tiny_cfg.__globals__["__file__"]).replace("tests/apps/test_dvr_single.py", "configs/dvr/single_cpu.yaml"),
                    *TINY, f"out={out}"])  # fmt: skip
    for name in ["eval_meshes.csv", "eval_meshes.json", "eval_meshes_full.csv", "eval_meshes_retrieval.json",
                 "eval_meshes_class_mean.json", "metrics.json", "log.csv", "checkpoints/latest.pt"]:  # fmt: skip
        assert (out / name).is_file(), name
    assert list((out / "generation").rglob("*.ply"))
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["iterations"] == 2 and saved["objects"] == metrics["objects"] > 0
    assert {"retrieval_baseline", "class_mean_baseline"} <= set(saved)
