"""`LeanKernel`: the lean launch path gives Taichi's own results, and anything it was not prepared for
goes through Taichi's call."""

import pytest
import taichi as ti
import torch

from taichi_sdf.core.launch import LeanKernel


@ti.kernel
def _axpy(x: ti.types.ndarray(dtype=ti.f32, ndim=1), out: ti.types.ndarray(dtype=ti.types.vector(2, ti.f32), ndim=1),
          a: ti.f32, k: ti.i32):  # fmt: skip
    for i in range(x.shape[0]):
        out[i] = ti.Vector([a * x[i] + k, out.shape[0]])


@ti.kernel
def _scale(x: ti.types.ndarray(), a: ti.f32):  # any dtype and rank: one Taichi instance per pair
    for i in ti.grouped(x):
        x[i] = x[i] * a


@ti.kernel
def _fill(out: ti.types.ndarray(dtype=ti.f32, ndim=1), v: ti.template()):
    for i in range(out.shape[0]):
        out[i] = v


def test_lean_launches_match_taichi_calls(device):
    lean = LeanKernel(_axpy)
    x = torch.arange(5, dtype=torch.float32, device=device)
    for n, a, k in ((5, 2.0, 1), (3, -0.5, 7), (0, 1.0, 0)):  # the first call prepares, the others are lean
        expected, got = torch.zeros(n, 2, device=device), torch.full((n, 2), float("nan"), device=device)
        _axpy(x[:n], expected, a, k)
        lean(x[:n].contiguous(), got, a, k)
        assert torch.equal(got, expected), (n, a, k)
        # `[n, 2]` of 2-vectors: the kernel sees shape [n] (element dims stripped, as Taichi does)
        assert torch.equal(got[:, 1], torch.full((n,), float(n), device=device))
        assert torch.equal(got[:, 0], a * x[:n] + k)
    assert lean._launch is not None  # the later calls took the lean path


def test_lean_path_falls_back_to_taichi(device):
    lean = LeanKernel(_axpy)
    x = torch.arange(6, dtype=torch.float32, device=device)
    out = torch.zeros(3, 2, device=device)
    lean(x[:3].contiguous(), out, 1.0, 0)
    strided = x[::2]  # not contiguous: Taichi's own call refuses it by name
    with pytest.raises(ValueError, match="Non contiguous"):
        lean(strided, out, 1.0, 0)
    lean(x[:3].clone().requires_grad_(), out, 3.0, 1)  # grad-requiring tensors go through Taichi too
    assert torch.equal(out[:, 0], torch.tensor([1.0, 4.0, 7.0], device=device))
    with pytest.raises(RuntimeError, match="cannot be converted into required type i32"):  # Taichi's own check
        lean(x[:3].contiguous(), out, 1.0, 2.5)
    templated = LeanKernel(_fill)  # template arguments: never lean
    buf = torch.zeros(4, device=device)
    templated(buf, 2.0)
    templated(buf, 3.0)
    assert templated._launch is None and torch.equal(buf, torch.full((4,), 3.0, device=device))


def test_lean_path_keeps_taichis_instances_apart(device):
    lean = LeanKernel(_scale)
    f32 = torch.ones(4, device=device)
    lean(f32, 2.0)
    lean(f32, 2.0)  # lean
    f64 = torch.ones(4, dtype=torch.float64, device=device)
    lean(f64, 3.0)  # another dtype: Taichi's call compiles its own instance
    grid = torch.ones(2, 3, device=device)
    lean(grid, 5.0)  # another rank too
    assert torch.equal(f32, torch.full((4,), 4.0, device=device))
    assert torch.equal(f64, torch.full((4,), 3.0, dtype=torch.float64, device=device))
    assert torch.equal(grid, torch.full((2, 3), 5.0, device=device))


def test_lean_kernels_wraps_a_kernel_namespace_once(device):
    from types import SimpleNamespace

    from taichi_sdf.core.launch import lean_kernels

    ns = SimpleNamespace(axpy=_axpy, lanes=16)
    lean = lean_kernels(ns)
    assert lean is lean_kernels(ns) and isinstance(lean.axpy, LeanKernel) and lean.lanes == 16
    x = torch.arange(3, dtype=torch.float32, device=device)
    out = torch.zeros(3, 2, device=device)
    for _ in range(2):
        lean.axpy(x, out, 2.0, 1)
    assert lean.axpy._launch is not None and torch.equal(out[:, 0], 2.0 * x + 1)
    LeanKernel.enabled = False  # the switch for A/B timings: Taichi's call, same results
    try:
        lean.axpy(x, out, 3.0, 0)
    finally:
        LeanKernel.enabled = True
    assert torch.equal(out[:, 0], 3.0 * x)


def test_repeated_launches_reuse_the_context_only_for_the_same_arguments(device):
    """A call whose tensors have a recent call's data pointers, shapes, strides and dtypes and whose
    scalars are equal relaunches that call's context (CPUs; the last `CONTEXTS` distinct launches);
    anything else sets its arguments anew."""
    lean = LeanKernel(_axpy)
    x = torch.arange(8, dtype=torch.float32, device=device)
    out = torch.zeros(8, 2, device=device)
    lean(x, out, 1.0, 0)  # prepares
    lean(x, out, 2.0, 0)  # sets a context
    if device.type == "cpu":
        (first,) = lean._contexts.values()
        lean(x[:], out, 2.0, 0)  # a new view of the same memory: the same launch
        lean(x, out, 5.0, 0)  # another launch in between ...
        lean(x, out, 2.0, 0)  # ... and the first again: its context is reused
        assert len(lean._contexts) == 2 and list(lean._contexts.values())[0] is first
        for k in range(LeanKernel.CONTEXTS + 2):  # at most CONTEXTS are kept, the oldest dropped
            lean(x, out, 10.0 + k, 0)
        assert len(lean._contexts) == LeanKernel.CONTEXTS and first not in lean._contexts.values()
        assert torch.equal(out[:, 0], (10.0 + LeanKernel.CONTEXTS + 1) * x)
    x.mul_(3.0)  # new values in place: the context points at them
    lean(x, out, 2.0, 0)
    assert torch.equal(out[:, 0], 2.0 * x)
    lean(x, out, 2.0, 1)  # another scalar
    assert torch.equal(out[:, 0], 2.0 * x + 1)
    lean(x[:4], out[:4], 2.0, 1)  # same pointers, other shapes
    assert torch.equal(out[:, 1], torch.tensor([4.0] * 4 + [8.0] * 4, device=device))
    square = torch.zeros(4, 4, device=device)
    lean2 = LeanKernel(_scale)
    lean2(square, 1.0)
    lean2(square, 1.0)
    with pytest.raises(ValueError, match="Non contiguous"):  # same pointer and shape, other strides
        lean2(square.t(), 1.0)


def test_keyed_launches_keep_one_context_per_key_and_read_memory_in_place(device):
    """`launch_keyed`: the first call (before the kernel is prepared) and non-CPU devices go through
    the call path; after that a context is made once per key, kept in the caller's dict, reused for
    that key (new values in the same memory are read), and at most `CONTEXTS` are kept."""
    lean = LeanKernel(_axpy)
    x = torch.arange(8, dtype=torch.float32, device=device)
    out = torch.zeros(8, 2, device=device)
    contexts, made = {}, []

    def args(a):
        made.append(a)
        return x, out, a, 0

    lean.launch_keyed(contexts, ("a", 2.0), lambda: args(2.0))  # compiles through Taichi's call
    assert torch.equal(out[:, 0], 2.0 * x) and contexts == {}
    lean.launch_keyed(contexts, ("a", 2.0), lambda: args(2.0))
    x.mul_(3.0)  # in place: the kept context points at this memory
    lean.launch_keyed(contexts, ("a", 2.0), lambda: args(2.0))
    assert torch.equal(out[:, 0], 2.0 * x)
    if device.type != "cpu":
        assert contexts == {} and made == [2.0, 2.0, 2.0]  # no contexts kept off CPUs
        return
    assert list(contexts) == [("a", 2.0)] and made == [2.0, 2.0]  # arguments read once per key
    for k in range(LeanKernel.CONTEXTS + 1):
        lean.launch_keyed(contexts, ("a", 10.0 + k), lambda k=k: args(10.0 + k))
        assert torch.equal(out[:, 0], (10.0 + k) * x)
    assert len(contexts) == LeanKernel.CONTEXTS and ("a", 2.0) not in contexts
