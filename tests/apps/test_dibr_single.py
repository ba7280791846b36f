"""DIB-R single-image network (`python -m apps.dibr train|eval`): the decoder-at-vertices path against
float64 finite differences, the zero-initialised residual coefficient, a training step that lowers the
loss, and the check_chamfer evaluation writing its tables, on a tiny generated ShapeNet layout."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from apps.dibr.single import SingleImageTrainer, build_network, check_chamfer
from apps.dibr.single_config import SingleImageConfig
from apps.dibr.single_system import decode_mesh, normalize_meshes
from taichi_sdf.models.dvr import DVRDecoder
from taichi_sdf.train.config import ConfigValueError, load_config

PRESET = Path(__file__).resolve().parents[2] / "configs/dibr/single_cpu.yaml"
TINY = ["data.classes=[chair]", "model.template=sphere", "data.input_size=64", "model.c_dim=8", "model.hidden_size=16", "model.n_blocks=2",
        "train.batch_size=2", "train.iterations=2", "train.log_every=1", "train.checkpoint_every=1",
        "eval.n_points=300", "eval.project_points=500"]  # fmt: skip


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    """Two chairs (one train, one test), 2 views of 32 px, 64 px inputs."""
    from taichi_sdf.data.shapenet import generate_shapenet_layout

    root = tmp_path_factory.mktemp("dibr_single") / "data"
    return generate_shapenet_layout(root, classes=("chair",), n_per_class=2, views=2, input_views=2, image_size=32,
                                    input_size=64, resolution=32, n_pointcloud=1000, n_points=200, progress=False)  # fmt: skip


def tiny_cfg(root, out, *extra) -> SingleImageConfig:
    return load_config(SingleImageConfig, PRESET, TINY + [f"data.root={root}", f"out={out}", *extra])


def test_normalize_meshes_recentres_and_rescales_to_half():
    v = torch.tensor([[[1.0, 2.0, 3.0], [3.0, 3.0, 4.0], [2.0, 6.0, 3.5]]])
    n = normalize_meshes(v, 0.5)
    assert n.abs().amax().item() == pytest.approx(0.5)
    centre = 0.5 * (n.amax(1) + n.amin(1))
    assert torch.allclose(centre, torch.zeros(3), atol=1e-7)
    # y in [2, 6] spans the most: centre 4, then x 0.5 / 2
    assert n[0, :, 1].tolist() == pytest.approx([-0.5, -0.25, 0.5])


def test_decoder_at_vertices_matches_float64_finite_differences():
    torch.manual_seed(0)
    dec = DVRDecoder(c_dim=4, hidden_size=8, n_blocks=2, out_dim=6, leaky=True).double()
    for p in dec.parameters():  # fc_1 starts at zero: give every layer a gradient path
        torch.nn.init.normal_(p, std=0.5)
    template = torch.randn(7, 3, dtype=torch.float64)
    params = dict(dec.named_parameters())
    names = list(params)

    def f(codes, coef, *flat):  # decode_mesh with the decoder's parameters as inputs too
        decoder = lambda p, c: torch.func.functional_call(dec, dict(zip(names, flat)), (p, c))  # noqa: E731
        v, colors, _ = decode_mesh(decoder, template, codes, coef, 0.5)
        return v, colors

    codes = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    coef = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    flat = [p.detach().clone().requires_grad_(True) for p in params.values()]
    assert torch.autograd.gradcheck(f, (codes, coef, *flat), eps=1e-6, atol=1e-6)


def test_residual_coefficient_starts_at_zero_so_the_output_is_the_template():
    cfg = load_config(SingleImageConfig, PRESET, TINY)
    net = build_network(cfg)
    assert net.residual_coef.item() == 0.0
    assert net.template.shape == (642, 3) and net.faces.shape == (1280, 3)
    assert net.template.abs().amax().item() == pytest.approx(cfg.model.scale)
    v, c, offsets = net.predict(torch.rand(2, 3, 64, 64))
    assert torch.equal(v, net.template.expand(2, -1, -1))
    assert torch.equal(offsets, torch.zeros_like(offsets))
    assert ((c > 0) & (c < 1)).all()


def test_decode_mesh_rejects_bad_shapes():
    dec = DVRDecoder(c_dim=4, hidden_size=8, n_blocks=1, out_dim=6)
    with pytest.raises(ValueError, match="template"):
        decode_mesh(dec, torch.zeros(7, 2), torch.zeros(1, 4), torch.zeros(()))
    with pytest.raises(ValueError, match="codes"):
        decode_mesh(dec, torch.zeros(7, 3), torch.zeros(4), torch.zeros(()))
    with pytest.raises(ValueError, match="6 outputs"):
        decode_mesh(
            DVRDecoder(c_dim=4, hidden_size=8, n_blocks=1, out_dim=4), torch.zeros(7, 3), torch.zeros(1, 4), torch.zeros(())
        )


def test_conv_encoder_needs_63_pixels():
    with pytest.raises(ConfigValueError, match="input_size"):
        load_config(SingleImageConfig, PRESET, TINY + ["data.input_size=32"])


def test_check_chamfer_on_a_known_shift():
    g = np.stack(np.meshgrid(*[np.arange(5) * 0.1] * 3, indexing="ij"), -1).reshape(-1, 3)
    row = check_chamfer(g + [0.01, 0, 0], g, (0.005, 0.015))
    assert row["chamfer"] == pytest.approx(0.01)
    assert row["f@0.005"] == 0.0 and row["f@0.015"] == 1.0


@pytest.mark.slow
def test_training_steps_lower_the_loss_on_a_fixed_batch(tiny_root, tmp_path):
    trainer = SingleImageTrainer(tiny_cfg(tiny_root, tmp_path / "run", "train.lr=1e-3"))
    batch = trainer.make_batch()
    assert batch["images"].shape == (4, 32, 32, 3) and batch["inputs"].shape == (2, 3, 64, 64)
    losses = []
    for _ in range(6):
        terms = trainer.system(batch)
        trainer.optimizer.zero_grad()
        terms["loss"].backward()
        trainer.optimizer.step()
        losses.append(float(terms["loss"].detach()))
    assert losses[-1] < losses[0]
    assert trainer.system.residual_coef.item() != 0.0  # the offsets are switched on by training


@pytest.mark.slow
def test_train_then_eval_writes_the_per_class_table(tiny_root, tmp_path):
    from apps.dibr.__main__ import main

    out = tmp_path / "run"
    args = ["--config", str(PRESET), *TINY, f"data.root={tiny_root}", f"out={out}"]
    main(["train", *args])
    metrics = main(["eval", *args])
    for name in ("table.md", "eval_chamfer.json", "eval_chamfer_full.csv", "eval_chamfer_template.json",
                 "eval_chamfer_class_mean.json", "eval_chamfer_retrieval.json", "metrics.json"):  # fmt: skip
        assert (out / name).is_file(), name
    assert len(list((out / "generation" / "03001627").glob("chair_*.ply"))) == 1  # the one test object
    table = json.loads((out / "eval_chamfer.json").read_text())
    assert [r["class"] for r in table] == ["chair", "mean"]
    for key in ("chamfer", "f@0.01", "f@0.05", "chamfer_l1", "fscore@0.01"):
        assert 0 <= table[0][key] < (1 if key.startswith("f") else 2), key
    assert metrics["iterations"] == 2 and set(metrics) >= {"model", "template", "class_mean", "retrieval"}
    assert "| chair | 1 |" in (out / "table.md").read_text()


def test_non_finite_rasterizer_gradients_are_zeroed_and_counted():
    net = build_network(load_config(SingleImageConfig, PRESET, TINY))
    x = torch.ones(3, 2, requires_grad=True)
    y = net._finite_grad(x * 2.0)
    (y * torch.tensor([[1.0, float("nan")], [float("inf"), 1.0], [1.0, 1.0]])).sum().backward()
    assert x.grad.tolist() == [[2.0, 0.0], [0.0, 2.0], [2.0, 2.0]]
    assert net.zeroed_grads == 2


def _two_template_net():
    import trimesh

    from apps.dibr.single_system import SingleImageMeshNet
    from taichi_sdf.models.dvr import ConvEncoder

    torch.manual_seed(0)
    sphere, box = trimesh.creation.icosphere(subdivisions=1), trimesh.creation.box(extents=(1.0, 0.6, 0.4))
    net = SingleImageMeshNet(ConvEncoder(8), DVRDecoder(c_dim=8, hidden_size=16, n_blocks=1, out_dim=6, leaky=True),
                             sphere.vertices, sphere.faces, scale=0.45,
                             class_templates=[(sphere.vertices, sphere.faces), (box.vertices, box.faces)])  # fmt: skip
    with torch.no_grad():
        net.residual_coef.fill_(0.2)  # offsets on, so the two templates' outputs depend on the codes
    return net


def test_class_templates_route_each_object_to_its_class_and_the_loss_is_the_share_weighted_mean():
    from taichi_sdf.data.shapenet import shapenet_cameras

    net = _two_template_net()
    assert net.n_templates == 2 and net.template_of(1)[0].shape == (8, 3)
    images = torch.rand(3, 3, 64, 64)
    categories = torch.tensor([1, 0, 1])
    groups = net.predict_groups(images, categories)
    assert [g[0].tolist() for g in groups] == [[1], [0, 2]]
    assert groups[1][1].shape == (2, 8, 3) and torch.equal(groups[1][4], net.template_of(1)[1])
    k = 2
    cams = shapenet_cameras(np.random.default_rng(0), 3 * k, 24, "supervision")
    batch = {"inputs": images, "cameras": cams, "images": torch.rand(3 * k, 24, 24, 3),
             "masks": (torch.rand(3 * k, 24, 24) > 0.5).float(), "categories": categories}  # fmt: skip
    whole = net(batch)

    def part(rows):
        views = (torch.tensor(rows)[:, None] * k + torch.arange(k)).flatten()
        return net({"inputs": images[rows], "cameras": cams[views], "images": batch["images"][views],
                    "masks": batch["masks"][views], "categories": categories[rows]})  # fmt: skip

    box_objects, sphere_object = part([0, 2]), part([1])
    for name in ("loss", "image", "iou", "laplacian", "flatten"):
        expected = (2 * box_objects[name] + sphere_object[name]) / 3
        assert float(whole[name].detach()) == pytest.approx(float(expected.detach()), rel=1e-5), name


def test_class_templates_need_valid_categories():
    net = _two_template_net()
    with pytest.raises(ValueError, match="categories: the network has 2 class templates"):
        net.predict(torch.rand(1, 3, 64, 64))
    with pytest.raises(ValueError, match=r"categories: expected class indices in \[0, 2\)"):
        net.predict(torch.rand(1, 3, 64, 64), torch.tensor([2]))
    with pytest.raises(ValueError, match="predict takes objects of one class"):
        net.predict(torch.rand(2, 3, 64, 64), torch.tensor([0, 1]))


@pytest.mark.slow
def test_class_mean_template_run_starts_at_the_class_mean_and_writes_its_tables(tiny_root, tmp_path):
    from apps.dibr.__main__ import main

    out = tmp_path / "run"
    args = ["--config", str(PRESET), *TINY, "model.template=class_mean", "model.template_resolution=16",
            f"data.root={tiny_root}", f"out={out}"]  # fmt: skip
    trainer = SingleImageTrainer(load_config(SingleImageConfig, PRESET, args[2:]))
    template = trainer.system.template_of(0)[0]
    v, _, _ = trainer.system.predict(torch.rand(1, 3, 64, 64), torch.tensor([0]))
    assert torch.allclose(v[0], template, atol=1e-6) and len(template) != 642  # the class mean, not the sphere
    del trainer
    main(["train", *args])
    table = json.loads((out / "eval_chamfer.json").read_text())
    assert [r["class"] for r in table] == ["chair", "mean"] and 0 < table[0]["chamfer"] < 2
