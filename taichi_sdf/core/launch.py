"""A lean launcher for Taichi kernels called many times with torch tensors and Python scalars.

Taichi 1.7's `Kernel.__call__` re-derives the kernel's instance from every argument (dtype, ndim and
layout features for its template cache) and sets each argument through a generic Python dispatcher:
~350 us per launch of a 17-argument kernel on this machine kind, more than the whole trace of 64k
rays takes. `LeanKernel` makes the first call through Taichi (which compiles it and checks the
arguments), keeps the compiled kernel, and from then on sets the arguments straight into a launch
context. Anything it was not prepared for (a non-tensor where a tensor was, another dtype or rank, a
non-contiguous or grad-requiring tensor, a tensor on another device, a kernel with template arguments)
goes through Taichi's own call, so results never depend on which path ran.
"""

from __future__ import annotations

import contextlib
import functools
from types import SimpleNamespace

import torch

_TENSOR, _FLOAT, _INT = range(3)


class LeanKernel:
    """`LeanKernel(kernel)(*args)` launches `kernel` (a `@ti.kernel`) as `kernel(*args)` does.

    For kernels whose arguments are all ndarrays (given as torch tensors) and scalars, and whose
    tensors the caller has already validated (shapes): dtype, rank, contiguity, grad and device are
    re-checked here per call, without reading any data."""

    enabled = True  # False: every launch through Taichi's call (A/B timing, or to rule this path out)
    CONTEXTS = 8  # launch contexts kept per kernel (CPUs), for launches that repeat

    def __init__(self, kernel) -> None:  # noqa: D107
        self.kernel = kernel
        self._plan: list[tuple] | None = None  # per argument: (kind, element dims, dtype, rank)
        self._launch = None  # (taichi kernel, program)
        self._device_type: str | None = None
        self._contexts: dict[tuple, object] = {}  # `_launch_keys` -> launch context of recent calls, CPUs only

    def __call__(self, *args):
        if self._launch is not None and LeanKernel.enabled:
            ctx = self._reused_or_new_context(args)
            if ctx is not None:
                t_kernel, prog = self._launch
                prog.launch_kernel(prog.compile_kernel(prog.config(), prog.get_device_caps(), t_kernel), ctx)
                return None
        with compile_settings(self.kernel):  # Taichi's call compiles on first use
            out = self.kernel(*args)
            if self._launch is None:
                self._prepare(args)
        return out

    def launch_keyed(self, contexts: dict, key, make_args) -> None:
        """Launch with `contexts[key]`, a launch context the caller keeps (e.g. on the output buffers
        the launch writes, so it lives as long as they do), made from `make_args()` when missing. The
        caller vouches that equal keys mean arguments with equal `_launch_keys` (a key of what it has
        validated already, cheaper than reading every argument: `sphere_trace` keys its rays' and
        parameters' pointers and shapes, and its scalars). CPUs only; elsewhere, before the first
        (compiling) call or for arguments the lean path does not take, `self(*make_args())`. At most
        `CONTEXTS` are kept in `contexts` (the oldest dropped)."""
        ctx = contexts.get(key) if self._device_type == "cpu" and LeanKernel.enabled else None
        if ctx is None:
            args = make_args()
            if self._launch is None or self._device_type != "cpu" or not LeanKernel.enabled:
                self(*args)
                return
            ctx = self._context(args)
            if ctx is None:
                self(*args)
                return
            _keep(contexts, key, ctx)
        t_kernel, prog = self._launch
        prog.launch_kernel(prog.compile_kernel(prog.config(), prog.get_device_caps(), t_kernel), ctx)

    def _prepare(self, args) -> None:
        """Read the argument plan from Taichi's compiled instance; leave the lean path off when the
        kernel has arguments it does not handle."""
        from taichi.lang import impl
        from taichi.lang.util import cook_dtype
        from taichi.types import ndarray_type, primitive_types
        from taichi.types.utils import is_signed

        primal = getattr(self.kernel, "_primal", None)
        if primal is None or primal.return_type is not None or getattr(primal, "has_print", False):
            return
        plan = []
        for arg, value in zip(primal.arguments, args):
            ann = arg.annotation
            if isinstance(ann, ndarray_type.NdarrayType) and isinstance(value, torch.Tensor):
                if ann.layout is not None and str(ann.layout).endswith("SOA"):
                    return
                dtype = ann.dtype
                element_dim = 0 if dtype is None or id(dtype) in primitive_types.type_ids else dtype.ndim
                # Taichi compiles one instance per tensor dtype and rank: later calls must match them
                plan.append((_TENSOR, element_dim, value.dtype, value.dim()))
            elif id(ann) in primitive_types.real_type_ids:
                plan.append((_FLOAT, 0, None, 0))
            elif id(ann) in primitive_types.integer_type_ids and is_signed(cook_dtype(ann)):
                plan.append((_INT, 0, None, 0))
            else:
                return
        if len(plan) != len(args):
            return
        key = primal.ensure_compiled(*args)
        self._plan = plan
        self._device_type = "cuda" if str(impl.current_cfg().arch).endswith("cuda") else "cpu"
        self._launch = (primal.compiled_kernels[key], impl.get_runtime().prog)

    def _reused_or_new_context(self, args):
        """A recent launch's context when `args` describe the same launch (CPUs: every tensor with the
        same data pointer, shape, strides, dtype, device and grad flag as that call's, views made anew
        each call included, and equal scalars), else a new one (`_context`), kept for the next
        `CONTEXTS` distinct launches. Repeated calls (a frame loop, pooled buffers, a few image sizes in
        turn) then set no arguments, and on a CPU a launch only reads its context. Setting 18 arguments
        cost ~40 us warm, a third of a 16-ray `sphere_trace` call, and 0.1-0.3 ms with cold caches
        between other work. Nothing is held but numbers."""
        if self._device_type != "cpu":
            return self._context(args)
        keys = _launch_keys(args)
        ctx = self._contexts.get(keys)
        if ctx is not None:
            return ctx
        ctx = self._context(args)
        if ctx is not None:
            _keep(self._contexts, keys, ctx)
        return ctx

    def _context(self, args):
        """A launch context with `args` set, or None when an argument needs Taichi's own call."""
        plan = self._plan
        if len(args) != len(plan):
            return None
        ctx = self._launch[0].make_launch_context()
        for i, ((kind, element_dim, dtype, rank), v) in enumerate(zip(plan, args)):
            if kind == _TENSOR:
                if not (isinstance(v, torch.Tensor) and v.dtype == dtype and v.dim() == rank and v.is_contiguous()
                        and not v.requires_grad and v.device.type == self._device_type):  # fmt: skip
                    return None
                shape = v.shape[:-element_dim] if element_dim else v.shape
                ctx.set_arg_external_array_with_shape((i,), v.data_ptr(), v.element_size() * v.nelement(), shape, 0)
            elif kind == _FLOAT:
                ctx.set_arg_float((i,), float(v))
            else:
                if isinstance(v, float):
                    return None
                ctx.set_arg_int((i,), int(v))
        return ctx


def _keep(contexts: dict, key, ctx) -> None:
    """Add a launch context to `contexts`, dropping the oldest beyond `LeanKernel.CONTEXTS`."""
    if len(contexts) >= LeanKernel.CONTEXTS:
        del contexts[next(iter(contexts))]
    contexts[key] = ctx


def _launch_keys(args) -> tuple:
    """What a launch context depends on, per argument (numbers only: no tensor is kept alive)."""
    return tuple((v.data_ptr(), v.shape, v.stride(), v.dtype, v.device, v.requires_grad) if isinstance(v, torch.Tensor)
                 else (type(v), v) for v in args)  # fmt: skip


@contextlib.contextmanager
def compile_settings(kernel):
    """Taichi's compile settings for `kernel` while in the block: vector IR (`real_matrix_scalarize`
    off) for x86-64 CPU kernels marked `vector_ir` (the packet tracers of `sdf_lanes.vector_ir_safe` fields).
    Taichi keys a compiled kernel once, on its first compile, so later launches under the default
    settings run this compile; other kernels compile as before.

    Why: Taichi scalarises vectors by default, and then stores each lane of a packet on its own, reloading
    the array's address before every store (it cannot prove the store leaves the argument buffer alone), so
    LLVM cannot merge them: 5 packet outputs of 16 lanes cost 80 scalar stores and 80 reloads. With vector
    IR a packet is one vector store (1024^2 rays, loads and 5 stores alone: 5.7 -> 1.6 ms, 1 thread)."""
    from taichi.lang import impl

    cfg = impl.current_cfg()
    x64 = str(cfg.arch).split(".")[-1] == "x64"  # measured there; arm64 and GPUs compile as before
    if not (x64 and getattr(kernel, "vector_ir", False) and cfg.real_matrix_scalarize):
        yield
        return
    cfg.real_matrix_scalarize = False
    try:
        yield
    finally:
        cfg.real_matrix_scalarize = True


@functools.cache
def lean_kernel(kernel) -> LeanKernel:
    """The one `LeanKernel` of a `@ti.kernel` (cached kernel factories give the same kernel object for
    the same settings, so this adds one lean launcher per compiled kernel)."""
    return LeanKernel(kernel)


_LEAN_SETS: dict[int, tuple[SimpleNamespace, SimpleNamespace]] = {}


def lean_kernels(kernels: SimpleNamespace) -> SimpleNamespace:
    """`kernels` (a cached factory's namespace of `@ti.kernel`s, e.g. `idr_kernels(dtype)`) with every
    kernel launched by its `LeanKernel`; other attributes pass through."""
    entry = _LEAN_SETS.get(id(kernels))
    if entry is None or entry[0] is not kernels:  # (the namespace is kept, so its id is never reused)
        lean = {k: lean_kernel(v) if hasattr(v, "_primal") else v for k, v in vars(kernels).items()}
        entry = _LEAN_SETS[id(kernels)] = (kernels, SimpleNamespace(**lean))
    return entry[1]
