import os
import subprocess
import sys

import pytest
import torch

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


def test_serial_torch_restores_the_callers_threads_on_any_exit():
    import threading

    import torch

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with runtime.serial_torch("cpu"):
            assert torch.get_num_threads() == 1
            with runtime.serial_torch("cpu"):  # nested
                assert torch.get_num_threads() == 1
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with pytest.raises(KeyError):
            with runtime.serial_torch("cpu"):
                raise KeyError("boom")
        assert torch.get_num_threads() == 2
        # overlapping blocks in two threads: the last to leave restores the setting
        inside, leave = threading.Event(), threading.Event()

        def other():
            with runtime.serial_torch("cpu"):
                inside.set()
                leave.wait(5)

        t = threading.Thread(target=other)
        t.start()
        inside.wait(5)
        with runtime.serial_torch("cpu"):
            pass
        leave.set()
        t.join(5)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_auto_torch_threads_uses_the_idle_cores_of_small_machines():
    from taichi_sdf.core.runtime import auto_torch_threads, idle_cores

    assert auto_torch_threads(cores=2, idle=1.95) == 2
    assert auto_torch_threads(cores=2, idle=1.2) == 1  # another process holds most of a core
    assert auto_torch_threads(cores=2, idle=0.1) == 1
    assert auto_torch_threads(cores=4, idle=3.8) == 4
    assert auto_torch_threads(cores=16, idle=0.0) == torch.get_num_threads()  # large machines: torch's default
    idle = idle_cores(0.05)
    assert idle is None or 0.0 <= idle <= (os.cpu_count() or 1) + 1e-6
