import subprocess
import sys

import pytest

import taichi_sdf
from taichi_sdf.core import runtime


def test_init_is_idempotent():
    info = taichi_sdf.init("auto")
    assert taichi_sdf.init("auto") is info
    assert taichi_sdf.init(info.arch) is info
    assert taichi_sdf.device() == info.device


def test_switching_arch_raises():
    other = "vulkan" if runtime.ensure_initialized().arch != "vulkan" else "cpu"
    with pytest.raises(RuntimeError, match="already initialised"):
        taichi_sdf.init(other)


def test_bad_arch_names_argument(monkeypatch):
    with pytest.raises(ValueError, match="arch: expected one of"):
        taichi_sdf.init("tpu")
    monkeypatch.setenv(runtime.ENV_ARCH, "gpu9000")
    with pytest.raises(ValueError, match="TAICHI_SDF_ARCH"):
        runtime._resolve_arch("auto")


def test_env_var_overrides_auto(monkeypatch):
    monkeypatch.setenv(runtime.ENV_ARCH, "cpu")
    assert runtime._resolve_arch("auto") == "cpu"
    assert runtime._resolve_arch("cuda") == "cuda"  # an explicit arch wins over the env var


def test_import_has_no_side_effects():
    code = (
        "import taichi_sdf, taichi_sdf.cameras.rays, taichi_sdf.implicit.grid, taichi_sdf.core.bridge, taichi_sdf.core.runtime as r\n"
        "import taichi.lang.impl as impl\n"
        "assert not r.is_initialized()\n"
        "assert impl.get_runtime().prog is None, 'Taichi was initialised at import'\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(runtime.__file__).rsplit("/taichi_sdf", 1)[0])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")
