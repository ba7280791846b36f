"""Test set-up: one Taichi runtime per pytest process.

Taichi cannot switch backends inside a process, so the suite runs on the backend named by
TAICHI_SDF_ARCH (default "cpu"); `make test-cuda` runs the same tests again on CUDA, where the
`device` fixture then hands out torch CUDA tensors.
"""

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("TAICHI_SDF_ARCH", "cpu")


@pytest.fixture(scope="session", autouse=True)
def taichi_runtime():
    import taichi_sdf
    from taichi_sdf.core.runtime import set_torch_threads

    info = taichi_sdf.init("auto")
    set_torch_threads(1)  # small ops; one thread also keeps results independent of the machine's load
    return info


@pytest.fixture(scope="session")
def device(taichi_runtime):
    """torch device whose tensors the kernels read zero-copy (cpu, or cuda under `make test-cuda`)."""
    return taichi_runtime.device
