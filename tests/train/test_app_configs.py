"""The apps' configs: every preset loads, value constraints name the key and its source, and each
app's `--help` lists its keys and names no key that does not exist."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from apps.deepsdf.config import DeepSDFConfig, check_config
from apps.demo import DemoConfig
from apps.dibr.config import FitConfig
from apps.dibr.single_config import SingleImageConfig
from apps.dist.config import DISTConfig
from apps.dvr.config import DVRConfig
from apps.dvr.single_config import SingleViewConfig
from apps.idr.config import IDRConfig
from taichi_sdf.train.config import ConfigValueError, _dataclass_in, _hints, config_to_dict, load_config

ROOT = Path(__file__).resolve().parents[2]
FILE = re.compile(r"\.(py|json|yaml|pt|ply|npz|npy|png|gif)$")  # `reconstruct.py` is a file, not a key
APPS = {"idr": IDRConfig, "deepsdf": DeepSDFConfig, "demo": DemoConfig, "dvr": DVRConfig, "dist": DISTConfig, "dibr": FitConfig}


@pytest.mark.parametrize("preset", sorted(str(p.relative_to(ROOT)) for p in (ROOT / "configs").glob("*/*.yaml")))
def test_every_preset_loads(preset):
    app = Path(preset).parent.name
    single = Path(preset).stem.startswith("single")
    cls = SingleViewConfig if app == "dvr" and single else SingleImageConfig if app == "dibr" and single else APPS[app]
    # a preset for a dataset layout (data.format) needs the folder too: a format without data.data is refused
    needs_data = "format:" in (ROOT / preset).read_text()
    cfg = load_config(cls, ROOT / preset, ["data.data=path/to/scan"] if needs_data else [])
    assert config_to_dict(cfg)


def test_presets_keep_their_values():
    idr = load_config(IDRConfig, ROOT / "configs/idr/cpu.yaml")
    assert idr.train.lr == 5e-4 and type(idr.train.lr) is float
    assert idr.train.lr_milestones == (30, 45) and type(idr.train.lr_milestones) is tuple
    assert idr.model.skip_in == (2,) and idr.data.data is None and idr.gt is None
    ds = load_config(DeepSDFConfig, ROOT / "configs/deepsdf/specs.yaml")
    assert ds.model.dims == (512,) * 8 and ds.model.dropout == tuple(range(8)) and type(ds.model.dropout) is tuple
    assert ds.train.decoder_lr.initial == 5e-4 and ds.train.latent_lr.type == "step" and ds.train.grad_clip is None
    assert ds.reconstruct.partial_direction == (0.0, 0.0, 1.0)


BAD = [
    # (config, override, key named in the error)
    (IDRConfig, "train.epochs=-1", "train.epochs"),  # used to train nothing and exit 0
    (IDRConfig, "train.epochs=0", "train.epochs"),
    (IDRConfig, "train.pixels=0", "train.pixels"),
    (IDRConfig, "train.lr=0", "train.lr"),
    (IDRConfig, "train.camera_lr=-1e-4", "train.camera_lr"),
    (IDRConfig, "train.lr_milestones=[-1]", "train.lr_milestones"),
    (IDRConfig, "train.checkpoint_every=0", "train.checkpoint_every"),
    (IDRConfig, "out=", "out"),  # used to write into the current folder
    (IDRConfig, "out=' '", "out"),
    (IDRConfig, "data.views=0", "data.views"),
    (IDRConfig, "data.size=-8", "data.size"),
    (IDRConfig, "data.test_every=0", "data.test_every"),
    (IDRConfig, "data.data=", "data.data"),
    (IDRConfig, "fscore_threshold=0", "fscore_threshold"),
    (IDRConfig, "mesh_resolution=1", "mesh_resolution"),
    (IDRConfig, "tracer.eps=0", "tracer.eps"),
    (DVRConfig, "train.pixels=1023", "train.pixels"),  # not whole 2x2 patches
    (DVRConfig, "marcher.init_steps=1", "marcher.init_steps"),
    (DVRConfig, "marcher.depth_range=[2.0,1.0]", "marcher.depth_range"),
    (DVRConfig, "mesh.threshold=1.5", "mesh.threshold"),
    (DVRConfig, "model.c_dim=8", "model.c_dim"),  # multi-view DVR is per scene
    (IDRConfig, "model.hidden=0", "model.hidden"),
    (IDRConfig, "model.skip_in=[9]", "model.skip_in"),
    (DeepSDFConfig, "model.latent_size=0", "model.latent_size"),
    (DeepSDFConfig, "model.dims=[]", "model.dims"),
    (DeepSDFConfig, "model.dropout_prob=1", "model.dropout_prob"),
    (DeepSDFConfig, "model.latent_in=[0]", "model.latent_in"),
    (DeepSDFConfig, "train.epochs=0", "train.epochs"),
    (DeepSDFConfig, "train.samples_per_scene=1", "train.samples_per_scene"),
    (DeepSDFConfig, "train.clamp=0", "train.clamp"),
    (DeepSDFConfig, "train.decoder_lr.interval=0", "train.decoder_lr.interval"),
    (DeepSDFConfig, "train.latent_lr.initial=0", "train.latent_lr.initial"),
    (DeepSDFConfig, "reconstruct.samples=1", "reconstruct.samples"),
    (DeepSDFConfig, "reconstruct.lr=0", "reconstruct.lr"),
    (DeepSDFConfig, "reconstruct.partial_direction=[0, 0, 0]", "reconstruct.partial_direction"),
    (DeepSDFConfig, "evaluate.fscore_threshold=0", "evaluate.fscore_threshold"),
    (DeepSDFConfig, "evaluate.points=0", "evaluate.points"),
    (DeepSDFConfig, "out=", "out"),
    (FitConfig, "train.iterations=0", "train.iterations"),
    (FitConfig, "train.betas=[0.5,1.0]", "train.betas"),
    (FitConfig, "model.template_radius=0", "model.template_radius"),
    (FitConfig, "render.learn_light=true", "render.learn_light"),  # shading none has no light
    (FitConfig, "remesh.ema=1", "remesh.ema"),
    (DemoConfig, "scene=nope", "scene"),
    (DemoConfig, "views=0", "views"),
    (DemoConfig, "size=0", "size"),
    (DemoConfig, "mesh_resolution=1", "mesh_resolution"),
    (DemoConfig, "out=", "out"),
]


@pytest.mark.parametrize("cls,override,key", BAD, ids=[f"{c.__name__}:{o}" for c, o, _ in BAD])
def test_value_constraints_name_the_key_and_the_override(cls, override, key):
    with pytest.raises(ConfigValueError) as e:
        load_config(cls, None, [override])
    assert e.value.config_key == key
    assert str(e.value).startswith(f"config key '{key}' (from override {override!r}): expected ")


@pytest.mark.parametrize(
    "cls,override,key",
    [(IDRConfig, "data.format=blender", "data.format"), (IDRConfig, "gt_frame=mesh", "gt_frame"),
     (IDRConfig, "arch=gpu", "arch"), (DeepSDFConfig, "train.decoder_lr.type=cosine", "train.decoder_lr.type")],
)  # fmt: skip
def test_literal_fields_are_checked(cls, override, key):
    with pytest.raises(ValueError, match=rf"config key '{re.escape(key)}' \(from override .*\): expected one of"):
        load_config(cls, None, [override])


def test_constraint_in_a_preset_names_the_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("train: {epochs: -1}\n")
    with pytest.raises(ConfigValueError, match=r"config key 'train.epochs' \(from config file .*bad.yaml'\)"):
        load_config(IDRConfig, p)


def test_check_config_still_validates_edited_configs():
    cfg = DeepSDFConfig()
    check_config(cfg)  # the defaults pass
    cfg.reconstruct.samples = 1
    with pytest.raises(ValueError, match=r"config key 'reconstruct.samples': expected >= 2"):
        check_config(cfg)


def test_directly_built_configs_are_checked():
    with pytest.raises(ValueError, match=r"'epochs'"):
        dataclasses.replace(IDRConfig().train, epochs=0)
    with pytest.raises(ValueError, match=r"'views'"):
        DemoConfig(views=0)


# -- --help ----------------------------------------------------------------------------------------------


def _is_key(cls: type, key: str) -> bool:
    tp: object = cls
    for part in key.split("."):
        sub = _dataclass_in(tp)
        if sub is None or part not in {f.name for f in dataclasses.fields(sub)}:
            return False
        tp = _hints(sub)[part]
    return True


def _leaf_keys(cls: type, prefix: str = "") -> list[str]:
    out = []
    for f in dataclasses.fields(cls):
        sub = _dataclass_in(_hints(cls)[f.name])
        out += _leaf_keys(sub, f"{prefix}{f.name}.") if sub else [prefix + f.name]
    return out


def _help(capsys, main, argv) -> str:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0
    return capsys.readouterr().out


def _help_of(app: str, capsys) -> list[str]:
    if app == "idr":
        from apps.idr.__main__ import main

        return [_help(capsys, main, ["--help"])]
    if app == "dvr":
        from apps.dvr.__main__ import main

        return [_help(capsys, main, ["--help"])]
    if app == "dibr":
        from apps.dibr.__main__ import main

        return [_help(capsys, main, ["fit", "--help"]), _help(capsys, main, ["--help"])]
    if app == "demo":
        from apps.demo import main

        return [_help(capsys, main, ["--help"])]
    if app == "dist":
        from apps.dist.__main__ import main

        return [_help(capsys, main, ["single-shape", "--help"])]
    from apps.deepsdf import __main__ as top
    from apps.deepsdf import evaluate, reconstruct, train

    texts = [_help(capsys, m, ["--help"]) for m in (train.main, reconstruct.main, evaluate.main, top.run_all)]
    top.main(["--help"])
    return texts + [capsys.readouterr().out]


@pytest.mark.parametrize("app", sorted(APPS))
def test_help_names_only_keys_that_exist(app, capsys):
    cls = APPS[app]
    texts = _help_of(app, capsys)
    top = {f.name for f in dataclasses.fields(cls)}
    for text in texts:
        # key=value outside the key list (its comments are the fields' own, e.g. `drop_last=True`); the
        # generic placeholder `key=value` aside
        usage = text.split("config keys", 1)[0].replace("key=value", "")
        named = re.findall(r"(?<![\w./<-])([a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)*)=", usage)
        # dotted mentions anywhere whose head is a section or key of the config (`a.b`, `a.b_*`)
        dotted = re.findall(r"(?<![\w./<-])([a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)+\*?)", text)
        dotted = [k for k in dotted if k.split(".")[0] in top and not FILE.search(k)]
        listed = (
            re.findall(r"^ +([a-z_][\w.]*)(?: = |:(?: |$))", text.split("config keys", 1)[1], re.M)
            if "config keys" in text
            else []
        )
        for key in named + dotted + listed:
            ok = any(k.startswith(key[:-1]) for k in _leaf_keys(cls)) if key.endswith("*") else _is_key(cls, key)
            assert ok, f"`{app} --help` names {key!r}, which {cls.__name__} does not have"
    full = texts[0]
    listed = set(re.findall(r"^ +([a-z_][\w.]*) = ", full, re.M))
    assert listed == set(_leaf_keys(cls)), "the --help key list is the config's keys, all of them"


def test_idr_help_shows_the_default_presets_values(capsys):
    text = _help_of("idr", capsys)[0]
    assert "values under configs/idr/cpu.yaml" in text
    assert re.search(r"^ +train\.epochs = 60 +an epoch is one pass", text, re.M)  # value + the field's comment
    assert "train.steps" not in text
