"""Give a source checkout the installed package's names (`taichi_sdf.kernels`, `.models`, `.apps`, `.configs`)."""

import importlib.util
import sys
from pathlib import Path

PACKAGE = "taichi_sdf"


def _alias_checkout_folders() -> None:
    """Give a source checkout the installed package's names.

    The project's fixed top-level layout keeps Taichi kernels, torch models, apps and presets in
    `kernels/`, `models/`, `apps/`, `configs/` beside this package. An installed wheel maps them to
    `taichi_sdf.kernels`, `.models`, `.apps`, `.configs` (pyproject `package-dir`), so the generic names
    never land in site-packages. In a checkout without an install, register the same names here, so
    library code imports one spelling everywhere. Only the package objects are created; their
    submodules load on first use.
    """
    here = Path(__file__).resolve().parent
    for name in ("kernels", "models", "apps", "configs"):
        full = f"{PACKAGE}.{name}"
        folder = here.parent / name
        if full in sys.modules or (here / name).exists() or not (folder / "__init__.py").is_file():
            continue
        if importlib.util.find_spec(full) is not None:  # an editable install's finder maps it already
            continue
        spec = importlib.util.spec_from_file_location(full, folder / "__init__.py", submodule_search_locations=[str(folder)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[full] = module
        spec.loader.exec_module(module)
        setattr(sys.modules[PACKAGE], name, module)


_alias_checkout_folders()
