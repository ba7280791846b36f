"""The layering rules of docs/DESIGN.md section 1 as a check, not prose.

    apps/ , models/  ->  taichi_sdf/ (the library)  ->  kernels/ (Taichi only)

The imports of every module are read with `ast` (no module is imported), resolved to the names the
installed package uses (`kernels/x.py` is `taichi_sdf.kernels.x`, `apps/x` is `taichi_sdf.apps.x`),
and checked against the contracts below. Lazy imports inside functions count too: a back-edge is a
back-edge wherever it is written. `test_checker_catches_back_edges` shows the checker fails on a
deliberate back-edge of each kind.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = "taichi_sdf"
# top-level folders and the dotted prefix they install under (pyproject package-dir)
FOLDERS = {"taichi_sdf": PKG, "kernels": f"{PKG}.kernels", "models": f"{PKG}.models", "apps": f"{PKG}.apps"}
LIBRARY_EXCLUDED = (f"{PKG}.kernels", f"{PKG}.models", f"{PKG}.apps", f"{PKG}.reference", f"{PKG}.configs")
STDLIB = set(sys.stdlib_module_names)
# What a twin may import besides the standard library: torch, numpy, other twins, and the camera data
# structure (a plain container of K and T_cam_world; its methods are not used by the twins' maths).
TWIN_ALLOWED = ("torch", "numpy", f"{PKG}.reference", f"{PKG}.cameras.camera", f"{PKG}.cameras")


def module_name(path: Path, root: Path) -> tuple[str, bool]:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    parts[0] = FOLDERS[parts[0]]
    is_pkg = parts[-1] == "__init__"
    if is_pkg:
        parts = parts[:-1]
    return ".".join(parts), is_pkg


def canonical(name: str) -> str:
    """The installed spelling of an imported name (`apps.idr` -> `taichi_sdf.apps.idr`)."""
    head = name.split(".")[0]
    if head in ("kernels", "models", "apps"):
        return f"{PKG}.{name}"
    return name


def imports_of(path: Path, root: Path, modules: set[str]) -> list[tuple[int, str, str]]:
    """(line, imported module as written, canonical module) for every import in the file."""
    mod, is_pkg = module_name(path, root)
    package = mod if is_pkg else mod.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name, canonical(a.name)) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
                written = "." * node.level + (node.module or "")
            else:
                target = canonical(node.module)
                written = node.module
            for a in node.names:  # `from pkg import submodule` imports the submodule
                sub = f"{target}.{a.name}"
                out.append((node.lineno, written, sub if sub in modules else target))
    return out


def within(name: str, prefixes) -> bool:
    prefixes = (prefixes,) if isinstance(prefixes, str) else prefixes
    return any(name == p or name.startswith(p + ".") for p in prefixes)


SAME_APP = {"view": "viewer"}  # apps/view.py is the `python -m apps.view` entry of apps/viewer/
# Declared edges between apps (docs/DESIGN.md section 1): DIST optimises in a DeepSDF experiment's latent
# space and reads it with DeepSDF's own loader and code fitting, the one implementation of both.
APP_DEPENDS = {"dist": {"deepsdf"}}


def app_of(name: str) -> str | None:
    parts = name.split(".")
    app = parts[2] if within(name, f"{PKG}.apps") and len(parts) > 2 else None
    return SAME_APP.get(app, app)


def check_layers(root: Path) -> list[str]:
    """Every violation of the contracts in the tree at `root`, as 'file:line: rule (import)'."""
    files = [p for folder in FOLDERS for p in (root / folder).rglob("*.py") if "__pycache__" not in p.parts]
    modules = {module_name(p, root)[0] for p in files}
    bad = []
    for path in files:
        mod, _ = module_name(path, root)
        where = path.relative_to(root)
        for line, written, target in imports_of(path, root, modules):
            broken: list[str] = []
            fail = broken.append
            top = target.split(".")[0]
            if written.split(".")[0] in ("kernels", "models", "apps") and not within(mod, f"{PKG}.apps"):
                fail("import the installed name taichi_sdf.* (kernels/models/apps are not top-level packages)")
            if within(mod, f"{PKG}.kernels"):
                if top not in STDLIB and top != "taichi" and not within(target, f"{PKG}.kernels"):
                    fail("kernels/ imports only taichi, the standard library and kernels/")
            elif within(mod, f"{PKG}.models"):
                if within(target, PKG) and not within(target, f"{PKG}.models"):
                    fail("models/ imports only torch and models/ (never the library or kernels)")
            elif within(mod, f"{PKG}.reference"):
                if top not in STDLIB and not within(target, TWIN_ALLOWED):
                    fail("a twin imports only torch/numpy, other twins and the Camera container")
            elif within(mod, f"{PKG}.apps"):
                if app_of(target) and app_of(mod) and app_of(target) != app_of(mod) and app_of(target) not in APP_DEPENDS.get(app_of(mod), ()):
                    fail(f"an app imports no other app ({app_of(mod)} -> {app_of(target)})")
                if within(target, f"{PKG}.reference"):
                    fail("apps never import the test twins in taichi_sdf.reference")
            elif within(mod, PKG):  # the library
                if within(target, (f"{PKG}.apps", f"{PKG}.models")):
                    fail("the library never imports apps/ or models/ (they sit above it)")
                if within(target, f"{PKG}.reference"):
                    fail("the library never imports the test twins in taichi_sdf.reference")
            for rule in broken:
                msg = f"{where}:{line}: {rule} (imports {written})"
                if msg not in bad:
                    bad.append(msg)
    return bad


def module_level_cycles(root: Path) -> list[list[str]]:
    """Import cycles among the library's modules through module-level imports (lazy ones excluded)."""
    files = [p for p in (root / "taichi_sdf").rglob("*.py") if "__pycache__" not in p.parts]
    modules = {module_name(p, root)[0] for p in files}
    graph: dict[str, set[str]] = {}
    for p in files:
        mod, is_pkg = module_name(p, root)
        tree = ast.parse(p.read_text())
        top_nodes = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        sub = ast.Module(body=top_nodes, type_ignores=[])
        names = set()
        for node in ast.walk(sub):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                for a in node.names:
                    full = f"{node.module}.{a.name}"
                    names.add(full if full in modules else node.module)
            elif isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
        # a package's __init__ re-exporting its own submodules is not a cycle with them
        graph[mod] = {n for n in names if n in modules and n != mod and not (is_pkg and n.startswith(mod + "."))}
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    # importing `a.b` runs `a/__init__` first: edges into a package's own ancestors are not cycles
    return [c for c in cycles if not any(c[i + 1] != c[i] and c[i].startswith(c[i + 1] + ".") for i in range(len(c) - 1))]


def test_layering_contracts_hold():
    bad = check_layers(ROOT)
    assert not bad, "layering violations:\n" + "\n".join(bad)


def test_no_module_level_import_cycles_in_the_library():
    cycles = module_level_cycles(ROOT)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


BACK_EDGES = {
    "kernels/bad.py": "from taichi_sdf.implicit import fields\n",
    "models/bad.py": "from taichi_sdf.kernels import dtypes\n",
    "taichi_sdf/bad.py": "from taichi_sdf.reference import twin\nimport taichi_sdf.apps.one\n",
    "taichi_sdf/reference/twin.py": "from taichi_sdf.implicit.fields import TaichiField\n",
    "apps/two/__init__.py": "from apps.one import thing\nfrom taichi_sdf.apps.one import thing\n",
}


@pytest.mark.parametrize("path", sorted(BACK_EDGES))
def test_checker_catches_back_edges(tmp_path, path):
    for folder in ("taichi_sdf/reference", "kernels", "models", "apps/one"):
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
        (tmp_path / folder / "__init__.py").write_text("")
    (tmp_path / "taichi_sdf/implicit").mkdir()
    (tmp_path / "taichi_sdf/implicit/__init__.py").write_text("")
    (tmp_path / "taichi_sdf/implicit/fields.py").write_text("import torch\n")
    (tmp_path / "taichi_sdf/reference/twin.py").write_text("import torch\n")
    assert check_layers(tmp_path) == []
    (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / path).write_text(BACK_EDGES[path])
    bad = check_layers(tmp_path)
    assert len(bad) == BACK_EDGES[path].count("\n") and all(b.startswith(path) for b in bad), bad


def test_cycle_checker_catches_a_cycle(tmp_path):
    (tmp_path / "taichi_sdf").mkdir()
    (tmp_path / "taichi_sdf/__init__.py").write_text("")
    (tmp_path / "taichi_sdf/a.py").write_text("from taichi_sdf.b import x\n")
    (tmp_path / "taichi_sdf/b.py").write_text("def f():\n    from taichi_sdf.a import y\n")
    assert module_level_cycles(tmp_path) == []  # lazy import: no cycle at import time
    (tmp_path / "taichi_sdf/b.py").write_text("from taichi_sdf import a\n")
    assert module_level_cycles(tmp_path) == [["taichi_sdf.a", "taichi_sdf.b", "taichi_sdf.a"]]
