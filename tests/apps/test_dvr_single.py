"""DVR single-view: a tiny generated ShapeNet layout, a few steps, generation + eval_meshes tables with
the retrieval baseline, exact resume."""

import json

import pytest
import torch

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


def _prior_system():
    import torch

    from apps.dvr.single import SingleViewSystem
    from taichi_sdf.models.dvr import DVRDecoder

    # class 0: a logit that grows with x (inside for x > 0); class 1: its mirror image
    axis = torch.linspace(-0.55, 0.55, 12)
    x = axis[:, None, None].expand(12, 12, 12)
    prior = torch.stack([4.0 * x, -4.0 * x])  # [2, 12, 12, 12], index order (x, y, z)
    torch.manual_seed(0)
    decoder = DVRDecoder(c_dim=4, hidden_size=8, n_blocks=1, out_dim=4).double()
    return SingleViewSystem(torch.nn.Identity(), decoder, None, {}, prior).double(), decoder


def test_class_prior_is_looked_up_in_x_y_z_order_and_added_to_the_logit_only():
    import torch

    system, decoder = _prior_system()
    p = torch.tensor([[0.3, -0.2, 0.1], [-0.3, 0.4, -0.5], [0.0, 0.0, 0.0]], dtype=torch.float64)
    assert system.prior_logit(p, 0).tolist() == pytest.approx([1.2, -1.2, 0.0], abs=1e-6)  # trilinear is exact on a linear grid
    assert system.prior_logit(p, 1).tolist() == pytest.approx([-1.2, 1.2, 0.0], abs=1e-6)
    code = torch.randn(4, dtype=torch.float64)
    base, with_prior = decoder.field(code)(p), system.field(code, 1)(p)
    assert torch.allclose(with_prior[:, 0], base[:, 0] + system.prior_logit(p, 1))
    assert torch.equal(with_prior[:, 1:], base[:, 1:])
    with pytest.raises(ValueError, match="prior_index: the system has a shape prior"):
        system.field(code)


def test_class_prior_field_matches_float64_finite_differences_in_the_points():
    import torch

    system, _ = _prior_system()
    code = torch.randn(4, dtype=torch.float64)
    p = (torch.rand(5, 3, dtype=torch.float64) - 0.5).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda q: system.field(code, 0)(q)[:, 0], (p,), eps=1e-6, atol=1e-6)


def test_class_prior_run_trains_a_step(workdir):
    trainer = SingleViewTrainer(tiny_cfg(workdir / "prior", "shape_prior=class_mean", "prior_resolution=12"))
    assert trainer.system.prior.shape == (2, 1, 12, 12, 12)
    row = trainer.step()
    assert row["loss"] > 0 and row["loss"] == row["loss"]


def test_object_sampling_draws_its_share_in_the_mask(workdir):
    trainer = SingleViewTrainer(tiny_cfg(workdir / "near", "train.object_fraction=0.5", "train.object_margin=0",
                                         "train.pixels=40"))  # fmt: skip
    N, V, H, W = trainer.views["mask"].shape[:4]
    assert len(trainer.object_pixels) == N * V
    batch = trainer.make_batch()
    masks = torch.cat([view["mask"] for view in batch["views"]]).bool()
    assert all(view["mask"][:20].bool().all() for view in batch["views"])  # margin 0: the share lies in the mask
    assert not masks.all()  # the uniform rest meets background, so the check above can fail
    row = trainer.step()
    assert row["loss"] > 0 and row["loss"] == row["loss"]


def test_object_fraction_outside_0_1_is_named(workdir):
    with pytest.raises(ValueError, match="object_fraction"):
        tiny_cfg(workdir / "bad", "train.object_fraction=1.5")
    with pytest.raises(ValueError, match="prior_floor"):
        tiny_cfg(workdir / "bad", "prior_floor=0.5")


def test_nearest_objects_returns_the_owner_of_the_nearest_view_and_honours_exclusions():
    from apps.dvr.single import nearest_objects

    inputs = torch.zeros(3, 2, 3, 2, 2)  # 3 objects x 2 views of 3x2x2 images
    for i in range(3):
        for k in range(2):
            inputs[i, k] += 10 * i + k  # view k of object i: constant 10 i + k
    queries = torch.full((2, 3, 2, 2), 21.2)  # nearest: object 2 (view 1), then object 1 (its view 1 = 11)
    queries[1] = 0.4  # nearest: object 0
    assert nearest_objects(queries, inputs).tolist() == [2, 0]
    assert nearest_objects(queries, inputs, exclude=torch.tensor([2, 0])).tolist() == [1, 1]


def test_retrieval_prior_pairs_each_training_input_with_another_object_and_stays_out_of_checkpoints(workdir):
    trainer = SingleViewTrainer(tiny_cfg(workdir / "retr", "shape_prior=retrieval", "prior_resolution=12"))
    N, V = trainer.views["inputs"].shape[:2]
    assert trainer.system.prior.shape == (N, 1, 12, 12, 12)
    assert trainer.retrieved.shape == (N, V)
    assert (trainer.retrieved != torch.arange(N)[:, None]).all()  # leave-one-out: never the object itself
    # each object's own grid is its occupancy: +logit(0.99) inside, -logit(0.99) outside
    import math

    import trimesh

    from taichi_sdf.geometry.class_mean import occupancy_grids

    grids = trainer.system.prior[:, 0]
    mesh = trimesh.load(trainer.train_set.mesh_path(N - 1), force="mesh", process=False)
    inside = torch.from_numpy(occupancy_grids([mesh], 12)[0])
    assert inside.any() and not inside.all()  # both signs occur, so the check below can fail
    expected = torch.where(inside, math.log(99), -math.log(99)).float()
    assert torch.allclose(grids[N - 1], expected, atol=1e-5)
    from apps.dvr.single import object_prior_logits  # prior_floor: a softer prior, logits +-logit(1 - floor)

    soft = object_prior_logits(trainer.train_set, 12, floor=0.1)
    assert torch.allclose(soft[N - 1], torch.where(inside, math.log(9), -math.log(9)).float(), atol=1e-5)
    row = trainer.step()
    assert row["loss"] > 0 and row["loss"] == row["loss"]
    trainer.save()
    assert "prior" not in trainer.state()["system"]  # rebuilt from the training set, not stored
    resumed = SingleViewTrainer(tiny_cfg(workdir / "retr", "shape_prior=retrieval", "prior_resolution=12"), mode="resume")
    assert torch.equal(resumed.system.prior, trainer.system.prior) and resumed.iteration == 1


def test_occupancy_3d_loss_is_occnets_bce_and_runs_without_rays(workdir):
    # OccNet's loss: BCE of the logits at points.npz points, summed over the points, mean over the objects
    cfg = tiny_cfg(workdir / "occ3d", "train.points_3d=64", "train.rgb_weight=0", "train.depth_weight=0",
                   "train.normal_weight=0", "train.freespace_weight=0", "train.occupied_weight=0",
                   "shape_prior=retrieval", "prior_resolution=12")  # fmt: skip
    trainer = SingleViewTrainer(cfg)
    batch = trainer.make_batch()
    B = len(batch["views"])
    assert batch["points_3d"].shape == (B, 64, 3) and batch["occupancy_3d"].shape == (B, 64)
    assert batch["occupancy_3d"].any() and not batch["occupancy_3d"].all()
    out = trainer.system(batch)
    codes = trainer.system.encoder(batch["inputs"])
    expected = 0.0
    for b, view in enumerate(batch["views"]):
        logit = trainer.system.field(codes[b], view["prior_index"])(batch["points_3d"][b])[:, 0]
        p = torch.sigmoid(logit.double())
        y = batch["occupancy_3d"][b].double()
        expected += float(-(y * p.log() + (1 - y) * (1 - p).log()).sum().detach()) / B
    got = float(out["occupancy_3d"].detach())
    assert abs(got - expected) < 1e-4 * expected
    assert float(out["loss"].detach()) == pytest.approx(got)
    assert out["evals"] == 0  # no ray was marched
    row = trainer.step()
    assert row["loss"] > 0 and row["loss"] == row["loss"]
    with pytest.raises(ValueError, match="points_3d"):
        tiny_cfg(workdir / "bad", "train.points_3d=-1")



def test_distance_prior_puts_its_zero_set_on_the_surface(workdir):
    """`prior_logits=distance`: the trilinear lookup of the grid is ~0 on the object's surface (up to its
    curvature), where the occupancy prior's is off by up to half a grid spacing; signs agree at the
    corners; logits stay within +-logit(1 - floor)."""
    import math

    import numpy as np

    from apps.dvr.single import object_prior_logits

    trainer = SingleViewTrainer(tiny_cfg(workdir / "retr_dist", "shape_prior=retrieval", "prior_resolution=24",
                                         "prior_logits=distance"))  # fmt: skip
    dist = object_prior_logits(trainer.train_set, 24, kind="distance")
    occ = object_prior_logits(trainer.train_set, 24)
    assert torch.equal(trainer.system.prior[:, 0], dist)
    limit = math.log(99)
    assert dist.abs().max() <= limit + 1e-5 and (dist.abs() == limit).any()
    clear = occ.abs() > 0  # every corner: the sign is the winding number's in both
    assert torch.equal((dist > 0)[clear], (occ > 0)[clear])
    on_surface = torch.from_numpy(np.load(trainer.train_set.model_folder(0) / "pointcloud.npz")["points"][:400])
    lookups = {}
    for name, grids in (("distance", dist), ("occupancy", occ)):
        trainer.system.prior = grids[:, None].contiguous()
        lookups[name] = trainer.system.prior_logit(on_surface, 0).abs()
    # in units of the logit's slope (limit / (2 spacing)): the distance prior's zero set is within a small
    # fraction of a spacing, the occupancy prior's anywhere up to half of one
    assert lookups["distance"].median() < 0.25 * lookups["occupancy"].median()


def _box_system(own):
    """The linear class prior of `_prior_system` (logit 4x) with a box head and prior boxes `own [2, 6]`."""
    from apps.dvr.single import SingleViewSystem
    from taichi_sdf.models.dvr import BoxHead, DVRDecoder

    axis = torch.linspace(-0.55, 0.55, 12)
    x = axis[:, None, None].expand(12, 12, 12)
    prior = torch.stack([4.0 * x, -4.0 * x])
    torch.manual_seed(0)
    decoder = DVRDecoder(c_dim=4, hidden_size=8, n_blocks=1, out_dim=4)
    head = BoxHead(torch.nn.Flatten(), 4)
    system = SingleViewSystem(torch.nn.Identity(), decoder, None, {"box": 1.0}, prior, box_head=head,
                              prior_boxes=torch.tensor(own))  # fmt: skip
    return system.double(), decoder.double()


def test_box_fit_stretches_the_prior_from_its_box_to_the_predicted_one():
    import math

    own = [[0.0, 0.0, 0.0, 0.0, 0.0, 0.0], [math.log(0.8), 0.0, 0.0, 0.1, 0.0, 0.0]]
    box = torch.tensor([math.log(0.5), math.log(2.0), 0.0, 0.1, -0.1, 0.0], dtype=torch.float64)  # x half as wide, at x = 0.1
    system, decoder = _box_system(own)
    code = torch.randn(4, dtype=torch.float64)
    p = torch.tensor([[0.15, -0.2, 0.1], [0.0, 0.3, -0.4], [0.3, 0.0, 0.0]], dtype=torch.float64)
    base = decoder.field(code)(p)
    # prior 0 has the unit box at 0: x maps to (x - 0.1) / 0.5, where its logit is 4 times that
    got = system.field(code, 0, box)(p)
    assert torch.allclose(got[:, 0] - base[:, 0], 4.0 * (p[:, 0] - 0.1) / 0.5, atol=1e-6)
    assert torch.equal(got[:, 1:], base[:, 1:])
    # prior 1's box is 0.8 wide at x = 0.1: x maps to 0.1 + (x - 0.1) * 0.8 / 0.5; its logit is -4 times that
    expected = -4.0 * (0.1 + (p[:, 0] - 0.1) * 1.6)
    assert torch.allclose(system.field(code, 1, box)(p)[:, 0] - base[:, 0], expected, atol=1e-6)
    # a box equal to the prior's own leaves the prior as it is
    same = system.field(code, 1, torch.tensor(own[1], dtype=torch.float64))(p)[:, 0] - base[:, 0]
    assert torch.allclose(same, system.prior_logit(p, 1), atol=1e-6)
    with pytest.raises(ValueError, match="box: the system stretches its prior"):
        system.field(code, 1)
    # without the decoder's correction the occupancy is the stretched prior's alone; colours stay the decoder's
    system.occupancy_correction = False
    alone = system.field(code, 0, box)(p)
    assert torch.allclose(alone[:, 0], 4.0 * (p[:, 0] - 0.1) / 0.5, atol=1e-6) and torch.equal(alone[:, 1:], base[:, 1:])


def test_box_fit_field_matches_float64_finite_differences_in_points_and_box():
    system, _ = _box_system([[0.0] * 6, [0.1, 0.0, 0.2, 0.0, 0.05, 0.0]])
    code = torch.randn(4, dtype=torch.float64)
    box = torch.tensor([-0.3, 0.1, -0.1, 0.05, 0.0, -0.02], dtype=torch.float64, requires_grad=True)
    p = ((torch.rand(5, 3, dtype=torch.float64) - 0.5) * 0.8).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda q, b: system.field(code, 1, b)(q)[:, 0], (p, box), eps=1e-6, atol=1e-6)


def test_box_fit_trains_the_head_on_the_objects_boxes_alone(workdir):
    from pathlib import Path

    preset = Path(__file__).resolve().parents[2] / "configs/dvr/single_box.yaml"  # the preset that sets prior_fit=box
    cfg = load_config(SingleViewConfig, preset, TINY + [f"out={workdir / 'box'}", "train.points_3d=64", "prior_resolution=12",
                                                        "train.box_weight=2"])  # fmt: skip
    assert (cfg.prior_fit, cfg.shape_prior, cfg.prior_logits) == ("box", "retrieval", "distance")
    trainer = SingleViewTrainer(cfg)
    N = len(trainer.train_set)
    pts = trainer.train_set.pointcloud(N - 1)[0].float()
    lo, hi = pts.min(0).values, pts.max(0).values
    assert torch.allclose(trainer.boxes[N - 1], torch.cat([(hi - lo).log(), (hi + lo) / 2]))
    assert torch.equal(trainer.system.prior_boxes, trainer.boxes)
    batch = trainer.make_batch()
    out = trainer.system(batch)
    head = trainer.system.box_head
    assert head.encoder is not trainer.system.encoder  # an encoder of its own
    expected = (head(batch["inputs"]) - (batch["boxes"] - head.mean) / head.std).abs().mean()
    assert float(out["box"].detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
    assert float(out["loss"].detach()) == pytest.approx(float(out["occupancy_3d"].detach()) + 2 * float(expected.detach()), rel=1e-6)
    # the occupancy loss does not reach the head (its boxes are detached), the box loss does
    trainer.system.zero_grad(set_to_none=True)
    out["occupancy_3d"].backward(retain_graph=True)
    assert all(q.grad is None for q in head.parameters())
    out["box"].backward()
    assert head.fc.weight.grad.abs().sum() > 0
    row = trainer.step()
    assert row["box"] > 0 and row["loss"] == row["loss"]
    state = trainer.state()["system"]
    assert "box_head.mean" in state and "prior_boxes" not in state  # statistics saved, boxes rebuilt
    with pytest.raises(ValueError, match="prior_fit"):
        tiny_cfg(workdir / "bad", "prior_fit=box", "shape_prior=class_mean")
    with pytest.raises(ValueError, match="occupancy_correction"):
        tiny_cfg(workdir / "bad", "occupancy_correction=false")  # no prior: nothing would be left of the shape
    alone = SingleViewTrainer(load_config(SingleViewConfig, preset, TINY + [f"out={workdir / 'box_alone'}", "prior_resolution=12",
                                                                           "occupancy_correction=false"]))  # fmt: skip
    assert alone.system.occupancy_correction is False and trainer.system.occupancy_correction is True
    # with DVR's ray losses on, the box term joins them
    rays = SingleViewTrainer(load_config(SingleViewConfig, preset, TINY + [f"out={workdir / 'box_rays'}", "prior_resolution=12",
                                                                          "train.points_3d=0", "train.rgb_weight=1"]))  # fmt: skip
    out = rays.system(rays.make_batch())
    assert out["evals"] > 0 and float(out["box"].detach()) > 0
    w = rays.system.weights
    expected = sum(w[k] * float(out[k].detach()) for k in ("rgb", "image_gradient", "normal", "freespace", "occupied", "depth", "box"))
    assert float(out["loss"].detach()) == pytest.approx(expected, rel=1e-6)
