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


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs Linux thread affinity and 2 cores")  # fmt: skip
def test_new_threads_are_spread_one_core_each_only_when_the_pool_has_a_thread_per_core(monkeypatch):
    """`spread_new_threads`: threads started after `before` are pinned round-robin over the process's
    cores in the order they started (a pool's consecutive workers get distinct cores), only when the
    pool has one thread per core, and not with TAICHI_SDF_SPREAD_THREADS=0."""
    import threading

    cpus = sorted(os.sched_getaffinity(0))

    def start_threads(k):
        before = runtime._thread_ids()
        stop, ready, ids = threading.Event(), threading.Barrier(k + 1), []

        def body():
            ids.append(threading.get_native_id())
            ready.wait()
            stop.wait()

        threads = [threading.Thread(target=body, daemon=True) for _ in range(k)]
        for t in threads:
            t.start()
            while len(ids) < threads.index(t) + 1:  # one after another, as a pool starts its workers
                pass
        ready.wait()
        return before, ids, stop

    before, ids, stop = start_threads(len(cpus) + 1)
    try:
        assert not runtime.spread_new_threads(before, len(cpus) - 1)  # a share of the cores: left alone
        assert all(os.sched_getaffinity(t) == set(cpus) for t in ids)
        monkeypatch.setenv(runtime.ENV_SPREAD_THREADS, "0")
        assert not runtime.spread_new_threads(before, len(cpus))
        monkeypatch.delenv(runtime.ENV_SPREAD_THREADS)
        assert runtime.spread_new_threads(before, len(cpus))
        assert [os.sched_getaffinity(t) for t in sorted(ids)] == [{cpus[i % len(cpus)]} for i in range(len(ids))]
    finally:
        stop.set()
