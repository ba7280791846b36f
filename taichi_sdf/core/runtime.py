"""Taichi runtime: one idempotent `init`, paired with torch's device.

Nothing here runs at import time. Every public op calls `ensure_initialized()`, so users who never
call `init` get the "auto" choice; users who want a given backend call `init(arch=...)` first.
The environment variable ``TAICHI_SDF_ARCH`` (cpu | cuda | vulkan | metal | auto) overrides "auto".
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from taichi_sdf.core.errors import InputError

ENV_ARCH = "TAICHI_SDF_ARCH"
_KNOWN_ARCHS = ("auto", "cpu", "cuda", "vulkan", "metal", "opengl")
# Taichi backends that read torch CUDA tensors without a copy; the others read torch CPU tensors.
_ZERO_COPY_CUDA_ARCHS = ("cuda",)


@dataclass(frozen=True)
class RuntimeInfo:
    """What `init` settled on: Taichi's arch name and the torch device whose tensors it reads zero-copy."""

    arch: str
    device: torch.device


_lock = threading.Lock()
_info: RuntimeInfo | None = None
_cpu_threads: int | None = None  # Taichi's cpu_max_num_threads at init (set_taichi_cpu_threads); None = Taichi's own


def _resolve_arch(arch: str) -> str:
    if not isinstance(arch, str) or arch.lower() not in _KNOWN_ARCHS:
        raise ValueError(f"arch: expected one of {_KNOWN_ARCHS}, got {arch!r}")
    arch = arch.lower()
    if arch == "auto":
        env = os.environ.get(ENV_ARCH, "auto").lower()
        if env not in _KNOWN_ARCHS:
            raise ValueError(f"{ENV_ARCH}: expected one of {_KNOWN_ARCHS}, got {env!r}")
        arch = env
    if arch == "auto":
        arch = "cuda" if torch.cuda.is_available() else "cpu"
    return arch


def _unavailable(arch: str, resolved: str, why: str) -> InputError:
    where = f"{ENV_ARCH}={resolved}" if arch.lower() == "auto" else f"arch={resolved!r}"
    return InputError(f"{where}: the {resolved} backend is not available on this machine ({why}); use arch='cpu', or "
                      f"'auto' to take CUDA only where torch sees a GPU")  # fmt: skip


def _check_available(arch: str, resolved: str, ti_arch) -> None:
    """Refuse a backend Taichi cannot start (no driver or device), or CUDA without a CUDA build of torch
    (the kernels read torch CUDA tensors zero-copy), before Taichi would fall back to CPU."""
    if resolved == "cpu":
        return
    from taichi.lang.misc import is_arch_supported

    if not is_arch_supported(ti_arch):
        raise _unavailable(arch, resolved, "Taichi finds no driver or device for it")
    if resolved in _ZERO_COPY_CUDA_ARCHS and not torch.cuda.is_available():
        raise _unavailable(arch, resolved, "torch sees no CUDA GPU, and the kernels read torch CUDA tensors")


def init(arch: str = "auto", *, debug: bool = False, offline_cache: bool = True, **ti_kwargs) -> RuntimeInfo:
    """Initialise Taichi once for this process and return the chosen arch and torch device.

    Args:
        arch: "auto" pairs Taichi with torch (CUDA when torch sees a GPU, else CPU); the env var
            TAICHI_SDF_ARCH overrides "auto". Any other value is used as given.
        debug: Taichi's debug mode (bounds checks); slow, for tests of kernels under development.
        offline_cache: keep Taichi's on-disk kernel cache, which makes second runs start fast.

    Calling `init` again with the same (resolved) arch is a no-op; asking for a different arch after
    kernels ran raises `RuntimeError`, because Taichi would silently invalidate every compiled kernel.
    A backend this machine cannot run (e.g. "cuda" without a GPU, by argument or TAICHI_SDF_ARCH) raises
    `InputError` (a ValueError) naming it and leaves the runtime uninitialised, so `init("cpu")` still
    works; Taichi's own silent fall-back to CPU is never taken.
    """
    global _info
    resolved = _resolve_arch(arch)
    with _lock:
        if _info is not None:
            if arch != "auto" and resolved != _info.arch:
                raise RuntimeError(
                    f"taichi_sdf is already initialised with arch={_info.arch!r}; cannot switch to "
                    f"{resolved!r} in the same process (call init before running any op)"
                )
            return _info
        import taichi as ti

        ti_arch = getattr(ti, resolved)
        _check_available(arch, resolved, ti_arch)
        if resolved == "cpu" and _cpu_threads is not None:
            ti_kwargs.setdefault("cpu_max_num_threads", _cpu_threads)
        before = _thread_ids()
        ti.init(
            arch=ti_arch,
            default_fp=ti.f32,
            default_ip=ti.i32,
            debug=debug,
            offline_cache=offline_cache,
            log_level=ti_kwargs.pop("log_level", ti.WARN),
            **ti_kwargs,
        )
        # Taichi falls back to CPU (with only its own warning) when the requested backend fails to start:
        # refuse, leaving Taichi uninitialised, so that the same request fails the same way every time.
        actual = str(ti.lang.impl.current_cfg().arch).split(".")[-1]
        if actual == "x64" or actual == "arm64":
            actual = "cpu"
        if actual != resolved:
            ti.reset()
            raise _unavailable(arch, resolved, f"Taichi fell back to {actual}")
        if actual == "cpu":
            spread_new_threads(before, ti.lang.impl.current_cfg().cpu_max_num_threads)
        # Taichi's CUDA backend binds device 0 of the visible ones: tensors on another index are refused.
        device = torch.device("cuda", 0) if actual in _ZERO_COPY_CUDA_ARCHS else torch.device("cpu")
        _info = RuntimeInfo(arch=actual, device=device)
        return _info


ENV_SPREAD_THREADS = "TAICHI_SDF_SPREAD_THREADS"


def _thread_ids() -> set[int]:
    """This process's thread ids (Linux `/proc/self/task`; empty elsewhere)."""
    try:
        return {int(t) for t in os.listdir("/proc/self/task")}
    except OSError:
        return set()


def spread_new_threads(before: set[int], pool_threads: int) -> bool:
    """Pin the threads started since `before` (Taichi's CPU backend's, from `init`) one core each,
    round-robin in the order they started, when the thread pool among them has one thread per core
    this process may use (Linux; `TAICHI_SDF_SPREAD_THREADS=0` turns it off). Returns whether it did.

    Why: Taichi's pool wakes its sleeping workers for every parallel kernel, and Linux often woke both
    on the core of the thread that woke them, so a kernel of a few ms ran on one core (2-core VM, the
    fused tracer on 256^2 / 512^2 rays: median 0.91 / 2.68 ms, 0.51 / 1.57 pinned; 1024^2 5.7 either
    way). A pool's workers start one after another, so round-robin gives them distinct cores. Processes
    sharing the cores (`set_taichi_cpu_threads` with fewer threads than cores, as `init_distributed`
    does) are left alone."""
    if os.environ.get(ENV_SPREAD_THREADS, "1") == "0" or not hasattr(os, "sched_setaffinity"):
        return False
    cpus = sorted(os.sched_getaffinity(0))
    new = sorted(_thread_ids() - before)
    if len(cpus) < 2 or pool_threads != len(cpus) or len(new) < pool_threads:
        return False
    try:
        for i, tid in enumerate(new):
            os.sched_setaffinity(tid, {cpus[i % len(cpus)]})
    except OSError:  # a thread that ended meanwhile, or a sandbox that refuses: leave the rest to the OS
        return False
    return True


def ensure_initialized() -> RuntimeInfo:
    """Return the runtime, initialising with arch="auto" on first use."""
    return _info if _info is not None else init("auto")


def is_initialized() -> bool:
    return _info is not None


def device() -> torch.device:
    """The torch device whose tensors the kernels read and write without copies."""
    return ensure_initialized().device


def sync() -> None:
    """Wait for queued Taichi and torch work (for timing)."""
    import taichi as ti

    ti.sync()
    if device().type == "cuda":
        torch.cuda.synchronize()


@functools.cache
def cpu_simd() -> str:
    """The CPU's widest SIMD extension ("avx512f", "avx2", "avx", "sse4_2", from Linux /proc/cpuinfo;
    "" where unknown). Kernel choices that were measured per SIMD width depend on it."""
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
    except OSError:
        return ""
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    return next((s for s in ("avx512f", "avx2", "avx", "sse4_2") if s in flags), "")


def set_taichi_cpu_threads(n: int) -> bool:
    """Threads of Taichi's CPU backend (`cpu_max_num_threads`) when `init` starts it, e.g. a share of the
    cores per process when several ranks run on one machine. Returns False, with a warning if Taichi
    already runs on the CPU with more threads, when it is too late to apply."""
    global _cpu_threads
    if n < 1:
        raise ValueError(f"n: expected >= 1 threads, got {n}")
    _cpu_threads = int(n)
    if _info is None:
        return True
    if _info.arch == "cpu":
        import warnings

        import taichi as ti

        running = ti.lang.impl.current_cfg().cpu_max_num_threads
        if running > n:
            warnings.warn(f"Taichi already runs on the CPU with {running} threads, more than the {n} asked for; call "
                          "set_taichi_cpu_threads (or init_distributed) before taichi_sdf.init()", stacklevel=2)  # fmt: skip
    return False


def idle_cores(interval_s: float = 0.25) -> float | None:
    """How many of the machine's cores were idle over the next `interval_s` seconds (Linux
    `/proc/stat`; iowait counts as idle), or None where that cannot be read."""
    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        return sum(fields[3:5]), sum(fields[:8])  # idle + iowait, user..steal

    try:
        idle0, total0 = sample()
        time.sleep(interval_s)
        idle1, total1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    if total1 <= total0:
        return None
    return (os.cpu_count() or 1) * (idle1 - idle0) / (total1 - total0)


def auto_torch_threads(cores: int | None = None, idle: float | None = None) -> int:
    """torch's intra-op threads for `torch_threads = 0`: on machines with <= 4 cores, the cores idle
    when the run starts (at least 1); on larger machines torch's default.

    Why: Taichi's kernels and torch's ops alternate, so on an idle machine both can use every core (the
    IDR cpu preset on 2 idle cores: 1.7x the iterations per second with 2 torch threads). But torch's
    OpenMP workers spin at every barrier, and when another busy process holds a core each op waits for
    a time slice: 2 threads on 2 cores next to one busy process ran the same step 3.5x slower than 1
    thread (an earlier loaded measurement: 10.8 s vs 0.67 s per step). So count the idle cores first.
    """
    cores = cores or os.cpu_count() or 1
    if cores > 4:
        return torch.get_num_threads()
    if idle is None:
        idle = idle_cores()
    if idle is None:
        return 1
    return int(min(cores, max(1, math.floor(idle + 0.3))))


def set_torch_threads(n: int = 0) -> int:
    """Set torch's intra-op threads; 0 = auto (`auto_torch_threads`). Returns the number set."""
    if n < 0:
        raise ValueError(f"torch_threads: expected >= 0, got {n}")
    if n == 0:
        n = auto_torch_threads()
    torch.set_num_threads(n)
    return n


_serial_lock = threading.Lock()
_serial_depth = 0  # callers inside `serial_torch` (any thread)
_serial_saved = 0  # torch's intra-op threads before the first of them entered


@contextlib.contextmanager
def serial_torch(device: torch.device | str = "cpu") -> Iterator[None]:
    """Run torch's CPU intra-op work single-threaded inside the block, then give back the caller's
    setting (on any exit, exceptions included).

    Why: library glue around the kernels is often a string of small torch ops. On a small loaded
    machine each multi-threaded op can stall for a scheduler slice waiting for its worker thread
    (2 cores, 2 other busy processes: 5-30 ms per op; a 100k-face `MeshSDF` build took 0.16-0.57 s
    instead of 0.06 s), while single-threaded they cost about the same on an idle machine. Taichi's
    kernels use their own thread pool and are not affected.

    `torch.set_num_threads` is process-global, so overlapping blocks (nested, or in several threads)
    are counted under a lock: the first to enter saves the setting and sets 1, the last to leave
    restores it. A no-op for non-CPU devices and when torch already runs one thread.
    """
    global _serial_depth, _serial_saved
    if torch.device(device).type != "cpu":
        yield
        return
    with _serial_lock:
        if _serial_depth == 0:
            _serial_saved = torch.get_num_threads()
            if _serial_saved > 1:
                torch.set_num_threads(1)
        _serial_depth += 1
    try:
        yield
    finally:
        with _serial_lock:
            _serial_depth -= 1
            if _serial_depth == 0 and _serial_saved > 1:
                torch.set_num_threads(_serial_saved)
