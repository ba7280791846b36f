"""The DVR multi-view app: DVR's ray-sampling schedule and patch sampling, the loss terms it turns on,
exact resume, clear data errors, and a smoke run that writes every output."""

import json
import shutil

import pytest
import torch

from apps.dvr.config import DVRConfig
from apps.dvr.trainer import DVRTrainer
from taichi_sdf.cameras.rays import ray_box_interval
from taichi_sdf.data.builtin import render_scene_dataset, write_dataset
from taichi_sdf.train.config import load_config

TINY = [
    "train.pixels=64", "train.epochs=2", "train.log_every=1", "model.hidden_size=16",
    "marcher.init_steps=8", "marcher.eval_steps=8", "marcher.render_steps=8",
    "mesh.resolution_0=8", "mesh.upsampling_steps=1", "mesh.refinement_steps=2", "turntable_frames=2",
]  # fmt: skip


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data") / "scan"
    write_dataset(render_scene_dataset("sphere_box", views=6, size=24, test_every=3, test_offset=1), folder, "idr", "sphere_box")
    return folder


def tiny_cfg(data, out, *extra):
    return load_config(DVRConfig, "configs/dvr/cpu.yaml", TINY + [f"data.data={data}", f"out={out}", *extra])


def test_ray_box_interval_closed_form():
    o = torch.tensor([[0.0, 0.0, -2.0], [0.0, 0.0, 0.0], [2.0, 2.0, -2.0], [0.3, 0.0, -2.0]])
    d = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    near, far, hit = ray_box_interval(o, d, 0.5)
    assert hit.tolist() == [True, True, False, True]
    assert torch.allclose(near, torch.tensor([1.5, 0.0, 0.0, 1.5])) and torch.allclose(far, torch.tensor([2.5, 0.5, 0.0, 2.5]))
    near, far, _ = ray_box_interval(o[:1], d[:1], 0.5, padding=0.1)  # DVR's padded cube: side 1.1
    assert torch.allclose(near, torch.tensor([1.45])) and torch.allclose(far, torch.tensor([2.55]))


def test_ray_sampling_schedule_doubles_at_the_milestones(tiny_data, tmp_path):
    tr = DVRTrainer(load_config(DVRConfig, "configs/dvr/dtu.yaml", [f"data.data={tiny_data}", f"out={tmp_path}",
                                                                    "model.hidden_size=16"]))  # fmt: skip
    expected = {0: 16, 49999: 16, 50000: 32, 99999: 32, 100000: 64, 250000: 128, 10**6: 128}
    assert {it: tr.n_steps(it) for it in expected} == expected


def test_pixels_come_in_whole_patches(tiny_data, tmp_path):
    tr = DVRTrainer(tiny_cfg(tiny_data, tmp_path))
    _, rows, cols = tr.sample_batch()
    assert rows.shape == (64,)
    r, c = rows.reshape(-1, 4), cols.reshape(-1, 4)  # 2x2 patches, row-major inside each patch
    assert torch.equal(r - r[:, :1], torch.tensor([[0, 0, 1, 1]]).expand_as(r))
    assert torch.equal(c - c[:, :1], torch.tensor([[0, 1, 0, 1]]).expand_as(c))
    assert int(rows.max()) < 24 and int(cols.max()) < 24


def test_loss_terms_follow_the_masks(tiny_data, tmp_path):
    tr = DVRTrainer(tiny_cfg(tiny_data, tmp_path))
    batch = tr.make_batch(*tr.sample_batch())
    out = tr.system(batch)
    assert torch.isfinite(out["loss"])
    assert batch["mask"].any() and not batch["mask"].all()
    # Pixels outside the mask always get the freespace term; those inside get RGB (hit) or occupancy (missed).
    assert out["freespace"] > 0 and out["rgb"] + out["occupied"] > 0
    total = sum(tr.system.weights[k] * out[k] for k in tr.system.weights)
    assert torch.allclose(out["loss"], total)
    out["loss"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in tr.decoder.parameters() if p.requires_grad)


def test_resume_gives_the_same_next_loss(tiny_data, tmp_path):
    a = DVRTrainer(tiny_cfg(tiny_data, tmp_path / "a"))
    for _ in range(3):
        a.step()
    a.save()
    next_a = a.step()
    b = DVRTrainer(tiny_cfg(tiny_data, tmp_path / "a"), mode="resume")
    assert b.iteration == 3
    next_b = b.step()
    assert next_b["loss"] == pytest.approx(next_a["loss"], rel=1e-6, abs=1e-7)


def test_missing_masks_is_a_clear_error(tiny_data, tmp_path):
    broken = tmp_path / "scan"
    shutil.copytree(tiny_data, broken)
    shutil.rmtree(broken / "mask")
    with pytest.raises(ValueError, match="mask: mask folder not found"):
        DVRTrainer(tiny_cfg(broken, tmp_path / "out"))


def test_patch_larger_than_the_image_is_a_clear_error(tiny_data, tmp_path):
    with pytest.raises(ValueError, match="train.patch_size: expected at most the image size"):
        DVRTrainer(tiny_cfg(tiny_data, tmp_path, "train.patch_size=32", "train.pixels=1024"))


@pytest.mark.slow
def test_smoke_run_writes_all_outputs(tiny_data, tmp_path):
    from apps.dvr.__main__ import main

    metrics = main(["--config", "configs/dvr/cpu.yaml", *TINY, f"data.data={tiny_data}", f"out={tmp_path}"])
    for name in ["config.yaml", "mesh.ply", "metrics.json", "turntable.gif", "checkpoints/latest.pt", "log.csv"]:
        assert (tmp_path / name).is_file(), name
    assert any((tmp_path / "renders").glob("*_rgb.png"))
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["iterations"] == metrics["iterations"] > 0
    assert 0.0 <= saved["test"]["mask_iou"] <= 1.0
    assert saved["mise_queries"] > 0


def test_dvr_folders_are_read_and_marched_in_their_unit_cube(tmp_path):
    from taichi_sdf.data.multiview.dvr import write_dvr_scene

    ds = render_scene_dataset("sphere_box", views=4, size=24, test_every=2, test_offset=1)
    folder = write_dvr_scene(tmp_path / "dvr_scene", ds)
    tr = DVRTrainer(tiny_cfg(folder, tmp_path / "out"))
    assert tr.system.frame_scale == 1.0  # DVR folders are in the unit cube already (IDR/NeRF: 0.5)
    assert torch.isfinite(torch.tensor(tr.step()["loss"]))
