"""Timing helpers shared by the benchmarks (they time, they never assert)."""

from __future__ import annotations

import gc
import platform
import random
import statistics
import time
from collections.abc import Callable

import torch


def sync() -> None:
    """Wait for Taichi and torch work queued on any device."""
    try:
        import taichi as ti

        ti.sync()
    except Exception:  # Taichi not initialised: nothing queued
        pass
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timeit(fn: Callable[[], object], warmup: int = 1, repeat: int = 5, min_time: float = 0.0) -> float:
    """Median wall time in seconds of `fn()` over `repeat` runs after `warmup` runs (compiles)."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    start = time.perf_counter()
    while len(times) < repeat or (time.perf_counter() - start) < min_time:
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def cpu_model() -> str:
    """The CPU's model name and its widest SIMD (Linux /proc/cpuinfo; "" elsewhere). CPU timings depend on
    both, and so do ratios between systems: the fused tracer's ratio to Dr.Jit's same algorithm read 0.84-1.03x on
    one machine of the project's 2-core kind and 0.53-0.64x on another (AMD EPYC, AVX-512)."""
    from taichi_sdf.core.runtime import cpu_simd

    try:
        info = open("/proc/cpuinfo").read()
    except OSError:
        return ""
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "")
    return f"{model}, {cpu_simd().upper()}" if model else ""


def machine() -> str:
    import os

    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    cpu = cpu_model()
    cpu = f"; {cpu}" if cpu else ""
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores{cpu}, torch {torch.__version__}, {dev}"


def print_table(title: str, header: list[str], rows: list[list[object]]) -> None:
    """Markdown table, so it pastes into notes as is."""
    def fmt(x):
        if isinstance(x, float):
            return f"{x:.4g}"
        return str(x)

    cells = [[fmt(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(header)]
    print(f"\n{title}\n")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in cells:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |")


def interleaved(fns: dict, repeat: int, warmup: int = 1) -> dict:
    """{name: (median seconds, median per-round ratio of the first entry's time to this one's)} of the
    callables `fns`, timed in turn round after round, so a loaded machine's slow spells hit every entry
    alike (ratio > 1: faster than the first). Each round runs the entries in a new order (seeded), so
    no entry always follows the same one: the entry after a long eager torch loop or a Dr.Jit kernel ran
    0.2-0.4 ms slower at 256^2 than the same call timed elsewhere in the round, and with a fixed (or
    rotated) order that was always the same entry."""
    for fn in fns.values():  # warm-up: compiles, allocator
        for _ in range(warmup):
            fn()
    sync()
    times = {k: [] for k in fns}
    order = random.Random(0)
    collecting = gc.isenabled()
    gc.disable()  # as `timeit` does: a collection would land on whichever call allocated the most objects
    try:
        for _ in range(repeat):
            for k in order.sample(list(fns), len(fns)):
                fn = fns[k]
                t0 = time.perf_counter()
                fn()
                sync()
                times[k].append(time.perf_counter() - t0)
            gc.collect()
    finally:
        if collecting:
            gc.enable()
    first = next(iter(fns))
    return {k: (statistics.median(v), statistics.median(a / b for a, b in zip(times[first], v))) for k, v in times.items()}
