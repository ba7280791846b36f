"""Import rules that keep the torch twins independent of the code they check (DESIGN §5)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Library modules of other domains that still import a twin (owned elsewhere; to be emptied there).
KNOWN_LIBRARY_TO_TWIN = {
    "taichi_sdf/implicit/fields.py",
    "taichi_sdf/implicit/scenes.py",
    "taichi_sdf/data/multiview/synthetic.py",
}
# What a twin of these domains may import: the standard library's small helpers, torch, numpy, the
# Camera class (public API of the layer below) and sibling twins.
LEAF_DOMAINS = ("mesh", "geometry", "cameras")
LEAF_ALLOWED = ("__future__", "math", "types", "typing", "collections", "dataclasses", "functools", "torch", "numpy",
                "taichi_sdf.cameras.camera")  # fmt: skip


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def _is_under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_no_library_module_imports_a_twin():
    offenders = set()
    for path in [*(ROOT / "taichi_sdf").rglob("*.py"), *(ROOT / "kernels").rglob("*.py")]:
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("taichi_sdf/reference/"):
            continue
        if any(_is_under(n, "taichi_sdf.reference") for n in _imports(path)):
            offenders.add(rel)
    assert offenders <= KNOWN_LIBRARY_TO_TWIN, f"library modules importing taichi_sdf.reference: {sorted(offenders - KNOWN_LIBRARY_TO_TWIN)}"


def test_twins_are_leaves():
    for domain in LEAF_DOMAINS:
        for path in (ROOT / "taichi_sdf" / "reference" / domain).rglob("*.py"):
            allowed = (*LEAF_ALLOWED, f"taichi_sdf.reference.{domain}")
            bad = sorted(n for n in _imports(path) if not any(_is_under(n, a) for a in allowed))
            # `from taichi_sdf.reference.mesh import raster` is a sibling twin: its parent package is fine
            bad = [n for n in bad if n != "taichi_sdf.reference" and not _is_under(n, f"taichi_sdf.reference.{domain}")]
            assert not bad, f"{path.relative_to(ROOT)} imports {bad}: twins import only torch, numpy, Camera and sibling twins"
