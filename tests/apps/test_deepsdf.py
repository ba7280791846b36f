"""DeepSDF app: the decoder's architecture, the training loss, training / exact resume, latent-code
reconstruction with a frozen decoder, the evaluation's Chamfer, and clear data/config errors.
Data: spheres of different radii, whose SDF samples are |x| - r."""

import copy
import json
import os
import signal

import numpy as np
import pytest
import torch
import trimesh

from apps.deepsdf.config import DeepSDFConfig, Schedule, specs_to_overrides
from apps.deepsdf.data import SDFSamples
from apps.deepsdf.evaluate import evaluate_shape, evaluate_split
from apps.deepsdf.reconstruct import partial_samples, reconstruct_latent, reconstruct_split
from apps.deepsdf.train import DeepSDFTrainer, deepsdf_loss
from taichi_sdf.data.deepsdf import Instance, save_normalization, save_sdf_samples, save_split, save_surface_samples
from taichi_sdf.models.deepsdf import DeepSDFDecoder, LatentCodes
from taichi_sdf.train.config import load_config

RADII = {"r30": 0.3, "r50": 0.5, "r70": 0.7}
TINY = ["model.latent_size=8", "model.dropout_prob=0.2", "model.dims=[32,32,32,32]", "model.latent_in=[2]", "train.scenes_per_batch=3",
        "train.samples_per_scene=256", "train.epochs=4", "train.checkpoint_every=1", "train.code_reg_warmup=2",
        "device=cpu", "reconstruct.resolution=24", "reconstruct.iterations=60", "reconstruct.samples=256",
        "evaluate.points=2000"]  # fmt: skip
FAST = ["train.decoder_lr.initial=2e-3", "train.latent_lr.initial=5e-3", "train.decoder_lr.interval=100",
        "train.latent_lr.interval=100"]  # fmt: skip


def sphere_samples(r: float, n: int, rng) -> tuple[np.ndarray, np.ndarray]:
    d = rng.normal(size=(n, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    near = d[: n // 2] * (r + rng.normal(0, 0.05, size=(n // 2, 1)))
    far = rng.uniform(-1, 1, size=(n - n // 2, 3))
    x = np.concatenate([near, far]).astype(np.float32)
    s = np.linalg.norm(x, axis=1) - r
    xs = np.concatenate([x, s[:, None]], 1).astype(np.float32)
    return xs[s >= 0], xs[s < 0]


def make_sphere_data(root, radii=RADII, n=4000, test=("r50",)):
    """DeepSDF layout under `root`: spheres of radius r at the origin; the mesh units are the normalised
    frame scaled by 2 and shifted by (1, 0, 0), so denormalisation is exercised."""
    rng = np.random.default_rng(0)
    offset, scale = np.array([-1.0, 0.0, 0.0]), 0.5  # mesh units: x_mesh = x / 0.5 + (1, 0, 0)
    insts = []
    for name, r in radii.items():
        it = Instance("synth", "spheres", name)
        save_sdf_samples(it.sdf_samples(root), *sphere_samples(r, n, rng))
        d = rng.normal(size=(3000, 3))
        save_surface_samples(it.surface_samples(root), (d / np.linalg.norm(d, axis=1, keepdims=True)) * r / scale - offset)
        save_normalization(it.normalization(root), offset, scale)
        insts.append(it)
    save_split(root / "splits" / "synth_spheres_train.json", insts)
    save_split(root / "splits" / "synth_spheres_test.json", [it for it in insts if it.instance in test])
    return root


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_sphere_data(tmp_path_factory.mktemp("deepsdf") / "data")


def tiny_cfg(root, out, *extra) -> DeepSDFConfig:
    return load_config(DeepSDFConfig, "configs/deepsdf/cpu.yaml", TINY + [f"data.root={root}", f"out={out}", *extra])


# -- decoder --------------------------------------------------------------------------------------------


def test_decoder_architecture_matches_the_original():
    dec = DeepSDFDecoder()  # 256 + 3 inputs, 8 x 512, latent_in (4,)
    lin = [m.in_features for m in dec.layers], [m.out_features for m in dec.layers]
    assert lin[0] == [259, 512, 512, 512, 512, 512, 512, 512, 512]
    assert lin[1] == [512, 512, 512, 512 - 259, 512, 512, 512, 512, 1]
    # weight norm on the 8 hidden layers only (parametrized weight_g / weight_v), none on the output
    wn = [torch.nn.utils.parametrize.is_parametrized(m, "weight") for m in dec.layers]
    assert wn == [True] * 8 + [False]
    assert sum(p.numel() for p in dec.parameters()) > 1.8e6


def test_decoder_reinjects_the_input_and_ends_with_tanh():
    torch.manual_seed(0)
    dec = DeepSDFDecoder(8, (16, 16, 16, 16), latent_in=(2,), dropout_prob=0.2).eval()
    seen = {}
    dec.layers[2].register_forward_pre_hook(lambda m, a: seen.setdefault("x", a[0]))
    z, x = torch.randn(5, 8), torch.randn(5, 3)
    with torch.no_grad():
        out = dec(z, x)
        for p in dec.layers[-1].parameters():
            p.mul_(1e3)  # huge pre-activations: the output must still lie in (-1, 1)
        big = dec(z, x)
    assert out.shape == (5,)
    assert torch.equal(seen["x"][:, -11:], torch.cat([z, x], 1))  # layer 2's input ends with [z, x]
    assert seen["x"].shape[1] == 16
    assert big.abs().max() <= 1 and big.abs().max() > 0.99


def test_dropout_only_in_train_mode():
    torch.manual_seed(0)
    dec = DeepSDFDecoder(4, (64, 64), latent_in=(), dropout_prob=0.5)
    z, x = torch.randn(100, 4), torch.randn(100, 3)
    dec.train()
    assert not torch.equal(dec(z, x), dec(z, x))  # dropout draws differ
    dec.eval()
    assert torch.equal(dec(z, x), dec(z, x))


def test_latent_codes_init_and_bound():
    torch.manual_seed(0)
    codes = LatentCodes(2000, 64, code_bound=1.0)
    assert abs(float(codes.weight.detach().std()) - 1 / 8) < 0.01  # N(0, (1 / sqrt(64))^2)
    with torch.no_grad():
        codes.weight[3] *= 10
    assert float(codes(torch.tensor([3])).detach().norm()) > 5  # forward has no side effect (DDP)
    codes.renorm_(torch.tensor([3]))
    assert float(codes(torch.tensor([3])).detach().norm()) == pytest.approx(1.0, abs=1e-4)


def test_latent_renorm_is_nn_embeddings_max_norm():
    torch.manual_seed(0)
    codes = LatentCodes(50, 16, code_bound=0.5)
    ref = torch.nn.Embedding(50, 16, max_norm=0.5)
    with torch.no_grad():
        codes.weight.mul_(3)
        ref.weight.copy_(codes.weight)
    idx = torch.tensor([4, 7, 7, 30])
    looked_up = ref(idx)  # renormalises rows 4, 7, 30 in place, then looks them up
    codes.renorm_(idx.unique())
    assert torch.equal(codes(idx), looked_up) and torch.equal(codes.weight, ref.weight)  # bit for bit
    codes.renorm_()
    assert float(codes.weight.detach().norm(dim=1).max()) <= 0.5


# -- training loss and schedules ------------------------------------------------------------------------


def test_loss_formula_on_a_hand_computed_case():
    pred = torch.tensor([0.05, 0.3, -0.2, 0.0])
    sdf = torch.tensor([0.0, 0.2, 0.5, -0.05])
    codes = torch.tensor([[3.0, 4.0], [3.0, 4.0], [0.0, 1.0], [0.0, 1.0]])  # norms 5, 5, 1, 1
    # clamped: pred (0.05, 0.1, -0.1, 0), sdf (0, 0.1, 0.1, -0.05) -> |diff| 0.05, 0, 0.2, 0.05 = 0.3
    t = deepsdf_loss(pred, sdf, codes, epoch=50, clamp=0.1, code_reg_lambda=1e-2, code_reg_warmup=100)
    assert float(t["data"]) == pytest.approx(0.3 / 4)
    assert float(t["code_reg"]) == pytest.approx(1e-2 * 0.5 * 12 / 4)  # warm-up at half
    t = deepsdf_loss(pred, sdf, codes, epoch=300, clamp=0.1, code_reg_lambda=1e-2, code_reg_warmup=100, num_samples=8)
    assert float(t["code_reg"]) == pytest.approx(1e-2 * 12 / 8)  # full weight; S = the whole batch
    assert float(t["loss"]) == pytest.approx(0.3 / 8 + 1e-2 * 12 / 8)


def test_step_schedule():
    s = Schedule("step", 5e-4, 500, 0.5)
    assert [s.lr(e) for e in (0, 499, 500, 1000, 2000)] == [5e-4, 5e-4, 2.5e-4, 1.25e-4, 5e-4 / 16]


def test_specs_json_maps_to_the_config(tmp_path):
    specs = {"NetworkArch": "deep_sdf_decoder", "CodeLength": 64, "NumEpochs": 11, "SamplesPerScene": 128,
             "NetworkSpecs": {"dims": [32, 32], "dropout": [0], "dropout_prob": 0.1, "norm_layers": [0, 1],
                              "latent_in": [], "xyz_in_all": False, "use_tanh": False, "weight_norm": True},
             "LearningRateSchedule": [{"Type": "Step", "Initial": 1e-3, "Interval": 5, "Factor": 0.1},
                                      {"Type": "Constant", "Value": 2e-3}], "CodeBound": 1.0}  # fmt: skip
    (tmp_path / "specs.json").write_text(json.dumps(specs))
    cfg = load_config(DeepSDFConfig, None, specs_to_overrides(tmp_path / "specs.json"))
    assert (cfg.model.latent_size, cfg.model.dims, cfg.model.latent_in, cfg.train.epochs) == (64, (32, 32), (), 11)
    assert cfg.train.decoder_lr.lr(5) == pytest.approx(1e-4) and cfg.train.latent_lr.lr(1000) == 2e-3
    (tmp_path / "bad.json").write_text(json.dumps({"CodeLenght": 64}))
    with pytest.raises(ValueError, match="bad.json.*CodeLenght"):
        specs_to_overrides(tmp_path / "bad.json")


# -- data -----------------------------------------------------------------------------------------------


def test_sampler_draws_half_pos_half_neg(data_root):
    ds = SDFSamples(data_root, data_root / "splits" / "synth_spheres_train.json")
    s = ds.sample(torch.tensor([2, 0]), 100, torch.Generator().manual_seed(0))
    assert s.shape == (2, 100, 4)
    assert (s[:, :50, 3] >= 0).all() and (s[:, 50:, 3] < 0).all()
    r = np.linalg.norm(s[..., :3].numpy(), axis=-1) - s[..., 3].numpy()
    assert np.allclose(r[0], 0.7, atol=1e-5) and np.allclose(r[1], 0.3, atol=1e-5)  # the right shapes


def test_clear_data_errors(data_root, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope_train.json"):
        DeepSDFTrainer(tiny_cfg(data_root, tmp_path, f"data.train_split={tmp_path / 'nope_train.json'}"))
    split = tmp_path / "x_train.json"
    save_split(split, [Instance("synth", "spheres", "r50"), Instance("synth", "spheres", "ghost")])
    with pytest.raises(FileNotFoundError, match=r"x_train.json.*ghost.npz"):
        DeepSDFTrainer(tiny_cfg(data_root, tmp_path, f"data.train_split={split}"))
    with pytest.raises(FileNotFoundError, match="splits"):  # no split given and none to find
        DeepSDFTrainer(tiny_cfg(tmp_path, tmp_path))
    with pytest.raises(ValueError, match="train.epoch"):
        tiny_cfg(data_root, tmp_path, "train.epoch=3")
    with pytest.raises(ValueError, match="reconstruct.samples"):
        DeepSDFTrainer(tiny_cfg(data_root, tmp_path, "reconstruct.samples=1"))


# -- training, resume, reconstruction, evaluation -------------------------------------------------------


@pytest.mark.slow
def test_training_lowers_the_loss(data_root, tmp_path):
    tr = DeepSDFTrainer(tiny_cfg(data_root, tmp_path, "train.epochs=80", *FAST))
    tr.train(progress=False)
    losses = [r["loss"] for r in tr.log]
    assert len(losses) == 80
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:3])
    assert (tmp_path / "checkpoints" / "latest.pt").is_file() and (tmp_path / "checkpoints" / "80.pt").is_file()
    assert (tmp_path / "config.yaml").is_file()


@pytest.mark.slow
def test_resume_gives_the_same_next_loss(data_root, tmp_path):
    ref = DeepSDFTrainer(tiny_cfg(data_root, tmp_path / "a", "train.scenes_per_batch=2"))  # 1 batch of 2 per epoch
    ref.train(progress=False)
    part = DeepSDFTrainer(tiny_cfg(data_root, tmp_path / "b", "train.scenes_per_batch=2"))
    part.train(epochs=2, progress=False)
    torch.manual_seed(123)  # the resumed run must restore the global RNG (dropout) itself
    resumed = DeepSDFTrainer(tiny_cfg(data_root, tmp_path / "b", "train.scenes_per_batch=2"), resume=True)
    assert resumed.epoch == 2
    resumed.train(progress=False)
    assert [r["loss"] for r in resumed.log] == [r["loss"] for r in ref.log]
    for a, b in zip(ref.decoder.parameters(), resumed.decoder.parameters()):
        assert torch.equal(a, b)


@pytest.mark.slow
def test_resume_mid_epoch(data_root, tmp_path):
    cfg = tiny_cfg(data_root, tmp_path / "a", "train.scenes_per_batch=1")  # 3 batches per epoch
    ref = DeepSDFTrainer(cfg)
    ref.train(epochs=2, progress=False)
    part = DeepSDFTrainer(tiny_cfg(data_root, tmp_path / "b", "train.scenes_per_batch=1"))

    def sigterm_after_first_batch_of_epoch_2(tr, row):
        if (tr.epoch, tr.batch) == (1, 1):
            os.kill(os.getpid(), signal.SIGTERM)  # as `kill PID` would: saved after this batch

    part.train(progress=False, callback=sigterm_after_first_batch_of_epoch_2)
    assert part.interrupted == signal.SIGTERM
    resumed = DeepSDFTrainer(tiny_cfg(data_root, tmp_path / "b", "train.scenes_per_batch=1"), resume=True)
    assert (resumed.epoch, resumed.batch) == (1, 1)
    resumed.train(epochs=1, progress=False)
    assert resumed.log[-1]["loss"] == ref.log[-1]["loss"]
    for a, b in zip(ref.decoder.parameters(), resumed.decoder.parameters()):
        assert torch.equal(a, b)


@pytest.fixture(scope="module")
def trained(data_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("exp")
    cfg = tiny_cfg(data_root, out, "train.epochs=150", "model.dropout_prob=0.0", *FAST)
    tr = DeepSDFTrainer(cfg)
    tr.train(progress=False)
    return cfg, tr


def zero_radius(decoder, z) -> float:
    d = torch.nn.functional.normalize(torch.randn(64, 3, generator=torch.Generator().manual_seed(1)), dim=1)
    lo, hi = torch.full((64,), 0.05), torch.full((64,), 0.95)
    with torch.no_grad():
        for _ in range(25):
            mid = (lo + hi) / 2
            inside = decoder(z, d * mid[:, None]) < 0
            lo, hi = torch.where(inside, mid, lo), torch.where(inside, hi, mid)
    return float((lo + hi).mean() / 2)


def test_reconstruction_recovers_the_radius_with_the_decoder_frozen(trained):
    cfg, tr = trained
    before = copy.deepcopy(tr.decoder.state_dict())
    tr.optimizer.zero_grad(set_to_none=True)  # training's last gradients
    for i, r in enumerate(RADII.values()):
        assert zero_radius(tr.decoder.eval(), tr.latents.weight[i].detach()) == pytest.approx(r, abs=0.05)  # trained codes
    pos, neg = tr.data.shape_samples(1)  # r = 0.5
    rc = copy.deepcopy(cfg.reconstruct)
    rc.iterations = 150
    z, loss = reconstruct_latent(tr.decoder, pos, neg, rc, generator=torch.Generator().manual_seed(0))
    assert zero_radius(tr.decoder, z) == pytest.approx(0.5, abs=0.05)
    after = tr.decoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the decoder was not updated
    assert all(p.grad is None for p in tr.decoder.parameters()) and all(p.requires_grad for p in tr.decoder.parameters())
    # partial: only the samples of the half space z >= 0 (half of the sphere)
    kept = partial_samples(pos, (0, 0, 1))
    assert (kept[:, 2] >= 0).all() and 0.3 < len(kept) / len(pos) < 0.7


def test_reconstruct_and_evaluate_split(trained):
    cfg, tr = trained
    log = reconstruct_split(cfg, progress=False)
    rec = log["shapes"]["synth/spheres/r50"]
    assert rec["status"] == "ok"
    mesh_path = tr.out / "Reconstructions" / "150" / "Meshes" / "synth" / "spheres" / "r50.ply"
    mesh = trimesh.load(mesh_path)
    # in mesh units: centre (1, 0, 0), radius 0.5 / 0.5 = 1
    assert np.allclose(mesh.vertices.mean(0), [1, 0, 0], atol=0.05)
    assert np.linalg.norm(mesh.vertices - [1, 0, 0], axis=1).mean() == pytest.approx(1.0, abs=0.1)
    assert (tr.out / "Reconstructions" / "150" / "Codes" / "synth" / "spheres" / "r50.pth").is_file()
    mtime = mesh_path.stat().st_mtime_ns
    reconstruct_split(cfg, progress=False)  # resumable: done shapes are skipped
    assert mesh_path.stat().st_mtime_ns == mtime
    other = copy.deepcopy(cfg)
    other.reconstruct.resolution = 20
    with pytest.raises(ValueError, match="other settings"):  # never mix settings in one folder
        reconstruct_split(other, progress=False)
    reconstruct_split(other, progress=False, tag="res20")
    assert (tr.out / "Reconstructions" / "150_res20" / "Meshes" / "synth" / "spheres" / "r50.ply").is_file()
    res = evaluate_split(cfg)
    s = res["summary"]
    assert s["evaluated"] == 1 and s["chamfer_x1000"]["mean"] < 20  # mesh units (radius 1): < 2% squared error
    assert (tr.out / "Evaluations" / "150" / "chamfer.csv").read_text().count("\n") == 2


def test_evaluation_chamfer_on_a_known_case():
    # A unit-radius sphere vs GT points on a sphere of radius 1.1: every NN distance is ~0.1, so the
    # DeepSDF Chamfer (squared, both ways) is ~2 * 0.01 and Chamfer-L1 (normalised by scale 0.5) ~0.05.
    mesh = trimesh.creation.icosphere(subdivisions=5, radius=1.0)
    d = np.random.default_rng(0).normal(size=(30000, 3))
    gt = 1.1 * d / np.linalg.norm(d, axis=1, keepdims=True)
    m = evaluate_shape(mesh, gt, np.zeros(3), 0.5, n_points=30000, threshold=0.01)  # dense: NN ~ radial gap
    assert m["chamfer"] == pytest.approx(0.02, rel=0.05)
    assert m["chamfer_x1000"] == pytest.approx(20, rel=0.05)
    assert m["chamfer_l1"] == pytest.approx(0.05, rel=0.05)
    assert m["fscore"] == 0.0  # 0.05 normalised units apart, threshold 0.01
    m = evaluate_shape(mesh, gt / 1.1, np.zeros(3), 0.5, n_points=30000, threshold=0.01)
    # same surface: only the sampling gap of 30k points on a radius-1 sphere (spacing ~0.02) is left
    assert m["fscore"] > 0.9 and m["chamfer_x1000"] < 0.5


def test_viewer_renders_a_training_shape(trained):
    from apps.view import Renderer, SourceError, load_source
    from apps.viewer.controller import OrbitController

    cfg, tr = trained
    cam = OrbitController.from_degrees(30.0, 20.0).camera(48, 48)  # from 2.75, 40 degree field of view
    hits = {}
    for sel in ("r30", "2"):  # by name, by index (r70)
        r = Renderer(f"{cfg.out}#{sel}")
        assert r.source.kind == "deepsdf"
        hits[sel] = float(r.render(cam)["hit"].float().mean())
    disc = lambda r: np.pi * (0.5 / np.tan(np.radians(20)) * r / np.sqrt(2.75**2 - r**2)) ** 2  # noqa: E731
    assert disc(0.25) < hits["r30"] < disc(0.35) and disc(0.65) < hits["2"] < disc(0.75)
    gt = r.overlay()
    assert gt.kind == "points" and np.allclose(np.linalg.norm(gt.points, axis=1), 0.7, atol=1e-4)  # normalised frame
    with pytest.raises(SourceError, match="no such training shape"):
        load_source(f"{cfg.out}#ghost")


def test_command_line_chain(data_root, tmp_path, capsys):
    from apps.deepsdf.__main__ import main

    common = ["--config", "configs/deepsdf/cpu.yaml", *TINY, "train.epochs=2", f"data.root={data_root}", f"out={tmp_path}"]
    main(["train", *common])
    main(["reconstruct", "--partial", *common])  # options between overrides are fine
    res = main(["evaluate", *common, "--partial"])
    assert res["summary"]["shapes"] == 1 and res["partial"]
    assert (tmp_path / "Evaluations" / "2_partial" / "metrics.json").is_file()
    assert "chamfer_x1000" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["train", *common, "train.epoch=3"])
    assert "train.epoch" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="checkpoint not found"):
        main(["reconstruct", "--checkpoint", "7", *common])


def test_original_specs_json_equals_the_specs_preset(tmp_path):
    from apps.deepsdf.train import train_config

    lr = lambda x: {"Type": "Step", "Initial": x, "Interval": 500, "Factor": 0.5}  # noqa: E731
    specs = {  # examples/planes/specs.json of facebookresearch/DeepSDF
        "Description": "planes", "DataSource": "data", "TrainSplit": "examples/splits/sv2_planes_train.json",
        "TestSplit": "examples/splits/sv2_planes_test.json", "NetworkArch": "deep_sdf_decoder",
        "NetworkSpecs": {"dims": [512] * 8, "dropout": list(range(8)), "dropout_prob": 0.2, "norm_layers": list(range(8)),
                         "latent_in": [4], "xyz_in_all": False, "use_tanh": False, "latent_dropout": False, "weight_norm": True},
        "CodeLength": 256, "NumEpochs": 2001, "SnapshotFrequency": 1000, "AdditionalSnapshots": [100, 500],
        "LearningRateSchedule": [lr(0.0005), lr(0.001)], "SamplesPerScene": 16384, "ScenesPerBatch": 64,
        "DataLoaderThreads": 16, "ClampingDistance": 0.1, "CodeRegularization": True, "CodeRegularizationLambda": 1e-4,
        "CodeBound": 1.0,
    }  # fmt: skip
    (tmp_path / "specs.json").write_text(json.dumps(specs))
    cfg, _ = train_config(["--specs", str(tmp_path / "specs.json"), "out=x"])
    data = ["data.root=data", "data.train_split=examples/splits/sv2_planes_train.json",
            "data.test_split=examples/splits/sv2_planes_test.json"]  # fmt: skip
    assert cfg == load_config(DeepSDFConfig, "configs/deepsdf/specs.yaml", ["out=x", *data])


# -- reproducibility and run safety ---------------------------------------------------------------------


@pytest.mark.slow
def test_two_seeded_runs_give_identical_results(data_root, tmp_path):
    """Train + reconstruct twice from the same seed: same losses, decoder, codes and meshes, bit for bit."""
    runs = []
    for name in ("a", "b"):
        torch.manual_seed(len(name) * 7 + ord(name))  # whatever ran before in the process must not matter
        np.random.seed(ord(name))
        cfg = tiny_cfg(data_root, tmp_path / name, "train.epochs=3", "model.dropout_prob=0.2", "reconstruct.iterations=20")
        tr = DeepSDFTrainer(cfg)
        tr.train(progress=False)
        log = reconstruct_split(cfg, progress=False)
        rec = tmp_path / name / "Reconstructions" / "3"
        runs.append({"losses": [r["loss"] for r in tr.log], "decoder": [p.detach().clone() for p in tr.decoder.parameters()],
                     "codes": tr.latents.weight.detach().clone(), "fit": {k: v["loss"] for k, v in log["shapes"].items()},
                     "mesh": (rec / "Meshes" / "synth" / "spheres" / "r50.ply").read_bytes(),
                     "code": torch.load(rec / "Codes" / "synth" / "spheres" / "r50.pth")})  # fmt: skip
    a, b = runs
    assert a["losses"] == b["losses"] and a["fit"] == b["fit"] and a["mesh"] == b["mesh"]
    assert torch.equal(a["codes"], b["codes"]) and torch.equal(a["code"], b["code"])
    assert all(torch.equal(x, y) for x, y in zip(a["decoder"], b["decoder"]))


@pytest.mark.slow
def test_cli_train_refusals(data_root, tmp_path):
    from apps.deepsdf.__main__ import main

    common = ["--config", "configs/deepsdf/cpu.yaml", *TINY, "train.epochs=1", f"data.root={data_root}", f"out={tmp_path}"]
    main(["train", *common])
    with pytest.raises(SystemExit, match=r"deepsdf train: error: .* already holds a run"):
        main(["train", *common])
    with pytest.raises(SystemExit, match=r"model.latent_size \(8 -> 16\)"):
        main(["train", *common, "--resume", "model.latent_size=16"])
    (tmp_path / "Reconstructions" / "1").mkdir(parents=True)  # reconstructions of the replaced run
    main(["train", *common, "--overwrite", "train.epochs=2"])
    assert not (tmp_path / "Reconstructions").exists()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["2.pt", "latest.pt"]
