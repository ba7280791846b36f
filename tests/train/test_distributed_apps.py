"""The other trainers and the DeepSDF sampler under DDP (2 gloo ranks spawned on 127.0.0.1, as
tests/train/test_distributed.py): DVR single-view and DIB-R single-image split the global batch's objects,
IDR and DVR multi-view the global batch's pixels (patches) and eikonal points. After 3 steps every
trainer's parameters are bit-identical across the ranks and equal to one process on the same global
batches; `apps.deepsdf sample` on 2 ranks writes the files of one process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from taichi_sdf.train.trainer import UserError
from tests.train.test_distributed import run_ranks

ROOT = Path(__file__).resolve().parents[2]
STEPS = 3
# Two processes sum the per-sample gradients in another order (two half batches + all-reduce) than one,
# which moves the float32 weights by ~1e-7 per step; Adam's normalised steps keep that at this size.
ATOL = 2e-5  # measured: DVR single 6e-6, DIB-R single 3e-6, IDR and DVR 3e-8 (the steps move weights by 3e-3)

COMMON = ["arch=cpu", "torch_threads=1", "train.log_every=1", "train.lr=1e-3"]  # lr: the 3 steps move the weights by ~3e-3
APPS = {  # name -> (preset, overrides); the batches are split unevenly on purpose (3 objects, 15 patches, 63 pixels)
    "dvr_single": ("configs/dvr/single_cpu.yaml", [
        "data.classes=[chair,table]", "data.views=2", "data.size=32", "data.input_size=64", "data.points=200",
        "model.hidden_size=16", "model.c_dim=8", "train.batch_size=3", "train.pixels=16", "marcher.init_steps=8"]),
    "dibr_single": ("configs/dibr/single_cpu.yaml", [
        "data.classes=[chair,table]", "data.input_size=64", "model.c_dim=8", "model.hidden_size=16", "model.n_blocks=2",
        "train.batch_size=3", "model.template=class_mean", "model.template_resolution=16"]),
    "idr": ("configs/idr/cpu.yaml", [
        "train.pixels=63", "train.eikonal_points=31", "model.hidden=32", "model.n_layers=2", "model.skip_in=[]",
        "model.multires=2", "model.d_feature=8", "model.render_hidden=16", "model.render_layers=1",
        "tracer.n_steps=16", "tracer.min_sdf_samples=8"]),
    "dvr": ("configs/dvr/cpu.yaml", ["train.pixels=60", "model.hidden_size=16", "marcher.init_steps=8"]),
}  # fmt: skip


def make_trainer(name: str, data: dict, out: Path):
    from taichi_sdf.train.config import load_config

    preset, extra = APPS[name]
    root = [f"data.root={data['shapenet']}"] if name in ("dvr_single", "dibr_single") else [f"data.data={data['scene']}"]
    args = COMMON + extra + root + [f"out={out / name}"]
    if name == "dvr_single":
        from apps.dvr.single import SingleViewConfig, SingleViewTrainer

        return SingleViewTrainer(load_config(SingleViewConfig, ROOT / preset, args))
    if name == "dibr_single":
        from apps.dibr.single import SingleImageConfig, SingleImageTrainer

        return SingleImageTrainer(load_config(SingleImageConfig, ROOT / preset, args))
    if name == "idr":
        from apps.idr.config import IDRConfig
        from apps.idr.trainer import IDRTrainer

        return IDRTrainer(load_config(IDRConfig, ROOT / preset, args))
    from apps.dvr.config import DVRConfig
    from apps.dvr.trainer import DVRTrainer

    return DVRTrainer(load_config(DVRConfig, ROOT / preset, args))


def train_all(rank: int, world: int, data: dict, out: str) -> dict:
    """Every trainer of APPS for STEPS steps in this process; its parameters and logged losses."""
    results = {}
    for name in APPS:
        tr = make_trainer(name, data, Path(out))
        start = {k: v.detach().clone() for k, v in tr.system.state_dict().items()}
        rows = [tr.step() for _ in range(STEPS)]
        results[name] = {k: v.detach().clone() for k, v in tr.system.state_dict().items()}
        results[name]["moved"] = torch.tensor(max(float((results[name][k].double() - start[k].double()).abs().max()) for k in start))
        results[name]["losses"] = torch.tensor([r["loss"] for r in rows], dtype=torch.float64)
    tr.save()  # rank 0 writes a checkpoint: the folder now holds a run ...
    try:  # ... which a new run refuses, on every rank (rank 0 decides, the others get its error)
        with make_trainer(name, data, Path(out)).locked():
            results["refusal"] = None
    except UserError as e:
        results["refusal"] = str(e)
    return results


@pytest.fixture(scope="module")
def app_data(tmp_path_factory) -> dict:
    from taichi_sdf.data.builtin import render_scene_dataset, write_dataset
    from taichi_sdf.data.shapenet import generate_shapenet_layout

    tmp = tmp_path_factory.mktemp("ddp_apps")
    scene = tmp / "scene"
    write_dataset(render_scene_dataset("sphere_box", views=4, size=24, test_every=3, test_offset=1), scene, "idr", "sphere_box")
    shapenet = generate_shapenet_layout(tmp / "shapenet", classes=("chair", "table"), n_per_class=3, views=2, input_views=2,
                                        image_size=32, input_size=64, resolution=32, n_pointcloud=200, n_points=200,
                                        progress=False)  # fmt: skip
    return {"scene": str(scene), "shapenet": str(shapenet)}


@pytest.mark.slow
def test_every_trainer_under_ddp_equals_one_process_on_the_union(app_data, tmp_path):
    res = run_ranks(tmp_path, train_all, app_data, str(tmp_path / "ddp"))
    assert all("ok" in r for r in res), [r.get("error") for r in res]
    single = train_all(0, 1, app_data, str(tmp_path / "single"))
    refusal = res[0]["ok"]["refusal"]
    assert refusal == res[1]["ok"]["refusal"] and "already holds a run" in refusal, refusal
    for name in APPS:
        r0, r1, one = res[0]["ok"][name], res[1]["ok"][name], single[name]
        assert r0.keys() == one.keys()
        for k in r0:
            assert torch.equal(r0[k], r1[k]), (name, k)  # bit-identical across the ranks
        diff = max(float((r0[k].double() - one[k].double()).abs().max()) for k in r0 if k not in ("losses", "moved"))
        print(f"{name}: max |2 ranks - 1 process| = {diff:.2e} after {STEPS} steps that moved the weights by up to {float(one['moved']):.2e}")
        assert float(one["moved"]) > 100 * ATOL, name  # the steps trained something
        assert diff < ATOL, (name, diff)  # = one process on the union of the ranks' shares
        assert torch.allclose(r0["losses"], one["losses"], rtol=1e-4, atol=1e-6), (name, r0["losses"], one["losses"])


# -- DeepSDF sampling ------------------------------------------------------------------------------------

SAMPLE_ARGS = ["--samples", "400", "--surface-samples", "100", "--arch", "cpu", "--quiet", "--test-fraction", "0.34"]


def sample_twice(rank: int, world: int, meshes: str, fresh: str, done: str) -> tuple[dict, dict]:
    """`apps.deepsdf sample` into the empty `fresh` folder, then again into `done` (sampled by one process)."""
    from apps.deepsdf.sample import main

    return main(["--meshes", meshes, "--out", fresh, *SAMPLE_ARGS]), main(["--meshes", meshes, "--out", done, *SAMPLE_ARGS])


def _layout(root: Path) -> dict[str, Path]:
    return {str(p.relative_to(root)): p for p in sorted(root.rglob("*")) if p.is_file() and p.name != "sample_report.json"}


@pytest.mark.slow
def test_sampling_on_two_ranks_writes_the_files_of_one_process_and_resumes(tmp_path):
    import trimesh

    from apps.deepsdf.sample import main

    meshes = tmp_path / "meshes"
    meshes.mkdir()
    for name, mesh in (("box", trimesh.creation.box((0.8, 0.5, 0.6))), ("ball", trimesh.creation.icosphere(2, 0.5)),
                       ("can", trimesh.creation.cylinder(0.3, 0.9, sections=16))):  # fmt: skip
        mesh.export(meshes / f"{name}.ply")
    one = main(["--meshes", str(meshes), "--out", str(tmp_path / "one"), *SAMPLE_ARGS])
    res = run_ranks(tmp_path, sample_twice, str(meshes), str(tmp_path / "two"), str(tmp_path / "one"))
    assert all("ok" in r for r in res), [r.get("error") for r in res]
    two, resumed = res[0]["ok"]
    assert two["sampled"] == one["sampled"] == ["ball", "box", "can"] and two["splits"].keys() == one["splits"].keys()
    a, b = _layout(tmp_path / "one"), _layout(tmp_path / "two")
    assert list(a) == list(b)  # the same files: samples, surface samples, normalisation, splits
    for rel, p in a.items():
        if p.suffix == ".npz":
            x, y = np.load(p), np.load(b[rel])
            assert x.files == y.files and all(np.array_equal(x[k], y[k]) for k in x.files), rel
        else:
            assert p.read_bytes() == b[rel].read_bytes(), rel
    assert resumed["skipped"] == ["ball", "box", "can"] and resumed["sampled"] == []  # a shape done is skipped
