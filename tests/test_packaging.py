"""pyproject.toml installs what the tree holds: every package folder, under the taichi_sdf namespace,
and one console command per app whose target exists."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setuptools_cfg():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_folder_is_installed_under_the_namespace(setuptools_cfg):
    st = setuptools_cfg["tool"]["setuptools"]
    package_dir = st["package-dir"]
    assert all(name == "taichi_sdf" or name.startswith("taichi_sdf.") for name in package_dir), package_dir
    found = set()
    for name, folder in package_dir.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            if "__pycache__" in init.parts:
                continue
            rel = init.parent.relative_to(ROOT / folder)
            if name == "taichi_sdf" and rel.parts and rel.parts[0] in ("kernels", "models", "apps", "configs"):
                continue
            found.add(".".join([name, *rel.parts]))
    assert set(st["packages"]) == found, f"pyproject packages differ from the tree: {set(st['packages']) ^ found}"
    assert not {p.split(".")[0] for p in st["packages"]} - {"taichi_sdf"}, "no generic top-level package names"


def test_console_commands_point_at_main_functions(setuptools_cfg):
    scripts = setuptools_cfg["project"]["scripts"]
    apps = {p.name for p in (ROOT / "apps").iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert {"idr", "deepsdf", "viewer"} <= apps
    for command, target in scripts.items():
        module, func = target.split(":")
        assert module.startswith("taichi_sdf.apps."), command
        path = ROOT / "apps" / Path(*module.split(".")[2:])
        path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        tree = ast.parse(path.read_text())
        assert any(isinstance(n, ast.FunctionDef) and n.name == func for n in tree.body), f"{command}: {target}"


def test_presets_ship_as_package_data(setuptools_cfg):
    patterns = setuptools_cfg["tool"]["setuptools"]["package-data"]["taichi_sdf.configs"]
    presets = sorted(p.relative_to(ROOT / "configs") for p in (ROOT / "configs").rglob("*.yaml"))
    assert presets and all(any(p.match(pat) for pat in patterns) for p in presets)
