"""Fused sphere tracing of Taichi-native fields, with exact first-order gradients.

`sphere_trace(field: TaichiField, ...)`: one Taichi kernel traces every ray. Without gradients that one
launch is the whole call: value checks (counted in the kernel, read back as 4 ints), unit directions,
the march, one Newton step and finite-difference normals (tetrahedral by default) on the hits
(zero normals on misses: no surface there), points and min-SDF values, written into packet-shaped
buffers whose first N rays are returned as views; evaluation counts are summed only when read
(`FusedTraceResult`). A caller rendering many frames of one size passes the previous result as `out=`
(its buffers are overwritten: nothing allocated), and `outputs=` leaves out what it does not need
(points, normals, min-SDF: neither computed nor stored). With gradients the kernel marches and the
differentiable outputs come from `taichi_sdf.implicit.implicit_diff` (one implicit-function step at
the found points, built from the loop-free `field_values` / `field_gradients` kernels). Torch-callable
fields are traced by `taichi_sdf.implicit.wavefront.march_field` into the same `TraceResult`.
"""

from __future__ import annotations

import math
import threading

import torch

from taichi_sdf.core.dtypes import dtype_name
from taichi_sdf.core.launch import lean_kernel
from taichi_sdf.core.runtime import cpu_simd
from taichi_sdf.core.validation import check_finite, check_tensor, unit_directions
from taichi_sdf.implicit.fields import TaichiField, check_field, field_gradients, field_values
from taichi_sdf.implicit.implicit_diff import (  # noqa: F401  (implicit_surface, newton_polish: former home)
    MIN_COS,
    MarchResult,
    TraceResult,
    implicit_surface,
    newton_polish,
    trace_result,
)
from taichi_sdf.kernels.implicit.sphere_trace import (
    OPTIONAL_OUTPUTS,
    PACKET_LANES,
    STATUS_BAD_DIRECTIONS,
    STATUS_BAD_ORIGINS,
    STATUS_BAD_SDF,
    STATUS_ZERO_DIRECTIONS,
    fused_trace_kernel,
    fused_trace_packet_kernel,
    packet_rows,
)

__all__ = ["sphere_trace", "field_values", "field_gradients", "TraceResult", "FusedTraceResult", "STENCIL_POINTS",
           "OPTIONAL_OUTPUTS"]

# Field evaluations of each finite-difference stencil for the no-gradient path's Newton step and normals.
STENCIL_POINTS = {"tetrahedral": 4, "central": 6}


def _params_ndim_name(field: TaichiField):
    return field.params.dim(), dtype_name(field.params.dtype)


def march_group(sdf_xyz) -> int:
    """Packets the CPU packet tracer marches side by side (`fused_trace_packet_kernel`'s `group_size`;
    GPUs, where packets are an opt-in, march one):
    the field's `march_group` (`sdf_lanes.vector_ir_safe`, 2 by default) with AVX-512 and vector IR,
    where it was measured (sphere∪box, 1 thread, 1024^2 rays: the march 10.2 -> 8.5 ms, the whole trace
    13.4 -> 12.1 ms; two chains of sqrt latency overlap), else 1 (with Taichi's default scalarised
    compile a pair measured no faster; other SIMD widths are unmeasured)."""
    if not getattr(sdf_xyz, "vector_ir", False) or cpu_simd() != "avx512f":
        return 1
    return int(getattr(sdf_xyz, "march_group", 1))


# Image rays up to this many march packets of two image rows together when a trace finishes (sphere∪box,
# 1 thread, whole kernel: 256^2 1.21 -> 1.10 ms, 768^2 6.75 -> 6.65, but 1024^2 11.01 -> 11.26: the two
# rows' output streams, points and normals among them, cost more than the steps saved once the
# outputs are far larger than the caches); march-only traces (the gradient path) pair at any size
# (1024^2: 8.67 -> 8.32 ms).
_PAIR_ROWS_MAX_RAYS = 640_000


def _pair_rows(lead: tuple, lanes: int, finish) -> bool:
    """Whether an image of rays `lead` = (H, W) marches packets of two image rows together."""
    h, w = lead
    return h > 1 and w % lanes == 0 and (finish is None or h * w <= _PAIR_ROWS_MAX_RAYS)


def _validate_rays(origins, directions, dtype) -> torch.Tensor:
    """Check the rays; return the unit directions `[N, 3]` (differentiable w.r.t. `directions`)."""
    dims: dict[str, int] = {}
    check_tensor("origins", origins, shape=("N", 3), dims=dims, dtype=dtype)
    check_tensor("directions", directions, shape=("N", 3), dims=dims, dtype=dtype)
    check_finite("origins", origins)
    check_finite("directions", directions)
    return unit_directions("directions", directions)


class FusedTraceResult(TraceResult):
    """The `TraceResult` of a no-gradient fused trace. Its evaluation counts are summed from `steps`
    when first read, so a trace itself waits for no result on a GPU (no host sync)."""

    def __init__(self, hit, t, points, normals, t_min_sdf, min_sdf, steps, evals_per_ray: int,  # noqa: D107
                 buffers: _TraceBuffers | None = None):  # fmt: skip
        self.hit, self.t, self.points, self.normals = hit, t, points, normals
        self.t_min_sdf, self.min_sdf, self.steps = t_min_sdf, min_sdf, steps
        self._evals_per_ray = evals_per_ray
        self._num_evals: int | None = None
        self._marching_evals: int | None = None
        self._buffers = buffers  # the kernel's buffers behind these views, reused by `sphere_trace(out=self)`

    def _count(self) -> None:
        if self._marching_evals is None:
            self._marching_evals = int(self.steps.sum())
        if self._num_evals is None:  # + the closest point of each ray that missed the bound (0 steps)
            self._num_evals = (self._marching_evals + int((self.steps == 0).sum())
                               + self._evals_per_ray * self._finished_rays())  # fmt: skip

    def _finished_rays(self) -> int:
        """Rays whose stencil the kernel evaluated: the hits, or with packets every ray of a packet with
        a hit (read from the kernel's padded hit buffer: its spare lanes repeat the last ray)."""
        b = self._buffers
        if b is None or b.lanes == 1:
            return int(self.hit.sum())
        packet_hit = b.flat["hit"].view(-1, b.lanes).amax(1, keepdim=True) > 0  # [P, 1]
        return int(packet_hit.expand(-1, b.lanes).reshape(-1)[: b.n].sum())

    @property
    def num_evals(self) -> int:
        self._count()
        return self._num_evals

    @num_evals.setter
    def num_evals(self, value: int) -> None:
        self._num_evals = value

    @property
    def marching_evals(self) -> int:
        self._count()
        return self._marching_evals

    @marching_evals.setter
    def marching_evals(self, value: int) -> None:
        self._marching_evals = value

    def reshape(self, *shape: int) -> FusedTraceResult:
        def r(x, extra=()):
            return None if x is None else x.reshape(*shape, *extra)

        out = FusedTraceResult(r(self.hit), r(self.t), r(self.points, (3,)), r(self.normals, (3,)), r(self.t_min_sdf),
                               r(self.min_sdf), r(self.steps), self._evals_per_ray, self._buffers)  # fmt: skip
        out._num_evals, out._marching_evals = self._num_evals, self._marching_evals
        return out


def _buffer_key(n: int, lanes: int, outputs: tuple, like: torch.Tensor) -> tuple:
    """What makes two trace buffer sets interchangeable (`_BufferPool`)."""
    return n, lanes, outputs, like.dtype, like.device


class _TraceBuffers:
    """The output buffers of one no-gradient trace of `n` rays: `flat` (name -> tensor of `n_buf` rays,
    padded to whole packets; empty when the output is not selected) and `args`, the same tensors viewed
    as the kernel takes them (built once: `out=` reuse passes them again as they are)."""

    def __init__(self, n: int, lanes: int, outputs: tuple, like: torch.Tensor):  # noqa: D107
        n_buf = -(-n // lanes) * lanes
        self.n, self.lanes, self.outputs = n, lanes, outputs
        dev = like.device

        def floats(count, *extra):
            return like.new_empty(count, *extra)

        n_min = n_buf if "min_sdf" in outputs else 0
        self.flat = {
            "t": floats(n_buf), "hit": torch.empty(n_buf, dtype=torch.uint8, device=dev),
            "points": floats(n_buf if "points" in outputs else 0, 3),
            "normals": floats(n_buf if "normals" in outputs else 0, 3),
            "t_min_sdf": floats(n_min), "min_sdf": floats(n_min),
            "steps": torch.empty(n_buf, dtype=torch.int32, device=dev),
        }  # fmt: skip
        self.status = torch.zeros(4, dtype=torch.int32, device=dev)
        self.hit_bool = self.flat["hit"].view(torch.bool)  # 0/1 bytes read as bools: no copy
        # the counters as numpy on CPUs: zeroing and reading 4 ints there costs a tenth of torch's ops
        self._status_np = self.status.numpy() if dev.type == "cpu" else None
        self.contexts: dict = {}  # launch contexts of the kernels that wrote these buffers (`LeanKernel.launch_keyed`)
        b = self.flat
        if lanes > 1:  # packet rows: `[P, lanes]`, and `[P, 3, lanes]` for the interleaved xyz outputs
            rows, rows3 = (-1, lanes), (-1, 3, lanes)
            self.args = (b["t"].view(rows), b["hit"].view(rows), b["points"].view(rows3), b["normals"].view(rows3),
                         b["t_min_sdf"].view(rows), b["min_sdf"].view(rows), b["steps"].view(rows), self.status)  # fmt: skip
        else:
            self.args = (b["t"], b["hit"], b["points"], b["normals"], b["t_min_sdf"], b["min_sdf"], b["steps"], self.status)
        self.key = _buffer_key(n, lanes, outputs, like)
        self._storages: list | None = None
        self._idle_uses = self._uses()  # the references this object holds itself

    def _uses(self) -> tuple[int, ...] | None:
        """How many references each buffer's memory has (None where torch cannot tell)."""
        use_count = getattr(torch._C, "_storage_Use_Count", None)
        if use_count is None:
            return None
        if self._storages is None:  # held here (one reference each, counted in `_idle_uses`): no new objects per call
            self._storages = [x.untyped_storage() for x in (*self.flat.values(), self.status)]
        return tuple(use_count(x._cdata) for x in self._storages)

    def reset_status(self) -> None:
        """Zero the value-check counters before a launch writes into these buffers again."""
        if self._status_np is not None:
            self._status_np.fill(0)
        else:
            self.status.zero_()

    def status_counts(self) -> list[int]:
        """The value-check counters (`STATUS_*` slots): the only read-back of a checked trace."""
        return self._status_np.tolist() if self._status_np is not None else self.status.tolist()

    def is_idle(self) -> bool:
        """True when nothing but this object references its buffers: no result, view or array of a
        caller's, so they can be written again."""
        return self._idle_uses is not None and self._uses() == self._idle_uses

    def result(self, evals_per_ray: int, lead: tuple | None = None) -> FusedTraceResult:
        """The first `n` rays of each selected output (new views, so the pool sees who holds them; None
        for the others), shaped `[*lead]` / `[*lead, 3]` (default `(n,)`)."""
        n, b = self.n, self.flat
        image = lead is not None and len(lead) != 1

        def first(name, output=None, flat=None):
            # Always a new view: the pool reuses buffers whose storages nobody but this object references,
            # and a caller holding one output tensor must count (returning `flat`'s own tensors did not:
            # `t = sphere_trace(...).t` was overwritten by the next call of the same size)
            if output is not None and output not in self.outputs:
                return None
            x = b[name] if flat is None else flat
            if image:
                return (x if x.shape[0] == n else x[:n]).view(*lead, *x.shape[1:])
            return x.detach() if x.shape[0] == n else x[:n]  # (`detach`: the cheapest new view)

        return FusedTraceResult(first("hit", flat=self.hit_bool), first("t"), first("points", "points"),
                                first("normals", "normals"), first("t_min_sdf", "min_sdf"), first("min_sdf", "min_sdf"),
                                first("steps"), evals_per_ray, self)  # fmt: skip


class _BufferPool:
    """CPU trace buffers of recent calls, reused by a later call of the same shape once the caller
    has dropped every view of them (`_TraceBuffers.is_idle`), as Dr.Jit's and torch's CUDA caching
    allocators do. Fresh large CPU buffers are new pages to the OS: the first writes fault them in, which
    measured 0.9 / 4.3 / 16 ms at 256^2 / 512^2 / 1024^2 rays (1 thread), up to 60% of the whole call.
    Holds at most `capacity` sets (least recently used dropped)."""

    def __init__(self, capacity: int = 4) -> None:  # noqa: D107
        self.capacity = capacity
        self.sets: list[_TraceBuffers] = []
        self.lock = threading.Lock()

    def take(self, n: int, lanes: int, outputs: tuple, like: torch.Tensor) -> _TraceBuffers:
        if like.device.type != "cpu":  # torch's CUDA allocator caches already
            return _TraceBuffers(n, lanes, outputs, like)
        key = _buffer_key(n, lanes, outputs, like)
        with self.lock:
            for i, b in enumerate(self.sets):
                if b.key == key and b.is_idle():
                    self.sets.append(self.sets.pop(i))
                    b.reset_status()
                    return b
            b = _TraceBuffers(n, lanes, outputs, like)
            self.sets = [*self.sets, b][-self.capacity :]
            return b


_POOL = _BufferPool()


_OUT_FIELDS = {  # name -> (trailing shape, dtype or None for the field's dtype, the output it belongs to)
    "t": ((), None, None), "hit": ((), torch.bool, None), "steps": ((), torch.int32, None),
    "points": ((3,), None, "points"), "normals": ((3,), None, "normals"),
    "t_min_sdf": ((), None, "min_sdf"), "min_sdf": ((), None, "min_sdf"),
}  # fmt: skip


def _reuse_buffers(out, lead: tuple, lanes: int, outputs: tuple, like: torch.Tensor) -> _TraceBuffers:
    """`out`'s buffers after checking, by name, that each selected output fits rays of shape `lead`
    (`(N,)` or `(H, W)`) of `like`'s dtype and device (as returned: `[N]`, `[N, 3]` or `[H, W]`, `[H,
    W, 3]`, not reshaped)."""
    if not isinstance(out, FusedTraceResult) or out._buffers is None:
        raise TypeError(f"out: expected the result of an earlier no-gradient sphere_trace call, got {type(out).__name__}")
    lead_spec = ("N",) if len(lead) == 1 else ("H", "W")
    dims = dict(zip(lead_spec, lead))
    for name, (extra, dtype, output) in _OUT_FIELDS.items():
        if output is not None and output not in outputs:
            continue
        value = getattr(out, name)
        if value is None:
            raise ValueError(f"out.{name}: expected a tensor (outputs selects {output!r}), got None; trace with "
                             f"that output selected")  # fmt: skip
        check_tensor(f"out.{name}", value, shape=(*lead_spec, *extra), dims=dims,
                     dtype=like.dtype if dtype is None else dtype)  # fmt: skip
    buffers = out._buffers
    if buffers.lanes != lanes or buffers.outputs != outputs:
        raise ValueError(f"out: its buffers were laid out for packets={buffers.lanes > 1}, outputs={buffers.outputs}; "
                         f"expected packets={lanes > 1}, outputs={outputs}")  # fmt: skip
    buffers.reset_status()
    return buffers


def _selected_outputs(outputs) -> tuple:
    """`outputs` as a tuple in `OPTIONAL_OUTPUTS` order (None: all of them)."""
    if outputs is None:
        return OPTIONAL_OUTPUTS
    if isinstance(outputs, str) or not all(isinstance(x, str) for x in outputs):
        raise TypeError(f"outputs: expected a sequence of names from {OPTIONAL_OUTPUTS}, got {outputs!r}")
    unknown = sorted(set(outputs) - set(OPTIONAL_OUTPUTS))
    if unknown:
        raise ValueError(f"outputs: expected names from {OPTIONAL_OUTPUTS}, got unknown {unknown}")
    return tuple(x for x in OPTIONAL_OUTPUTS if x in outputs)


def _raise_on_bad_values(counts: list[int], field: TaichiField, n: int) -> None:
    """Turn the kernel's value-check counters (4 ints, `STATUS_*` slots) into the error a bad input deserves."""
    if counts[STATUS_BAD_ORIGINS]:
        raise ValueError(f"origins: contains {counts[STATUS_BAD_ORIGINS]} non-finite value(s)")
    if counts[STATUS_BAD_DIRECTIONS]:
        raise ValueError(f"directions: contains {counts[STATUS_BAD_DIRECTIONS]} non-finite value(s)")
    if counts[STATUS_ZERO_DIRECTIONS]:
        raise ValueError(f"directions: {counts[STATUS_ZERO_DIRECTIONS]} of {n} directions have zero length; expected "
                         "non-zero vectors (each is normalised)")  # fmt: skip
    if counts[STATUS_BAD_SDF]:
        raise ValueError(f"field {field.name!r}: the SDF returned non-finite values along {counts[STATUS_BAD_SDF]} rays")


def sphere_trace(
    field: TaichiField,
    origins: torch.Tensor,  # [N, 3] or [H, W, 3]
    directions: torch.Tensor,  # [N, 3] or [H, W, 3]
    *,
    max_steps: int = 128,
    eps: float | None = None,
    step_scale: float = 1.0,
    packets: bool | None = None,
    stencil: str = "tetrahedral",
    check_values: bool = True,
    outputs=None,
    out: FusedTraceResult | None = None,
) -> TraceResult:
    """Sphere-trace a Taichi field with one fused kernel; differentiable outputs by implicit
    differentiation.

    Without gradients (no tensor requires grad, or under `torch.no_grad()`), one kernel launch does the
    whole trace: checks, march, one Newton step on the hits (the depth error becomes second order in
    eps), points, normals (a finite-difference gradient at the marched point, within eps / |cos| of the
    reported point) and min-SDF values. With gradients the kernel marches and the differentiable
    outputs are built at the found points (`implicit_diff.trace_result`; exact normals). Either way
    `normals` are zero on the rays that miss (no surface there; no stencil is evaluated for them).

    Args:
        field: the SDF and its parameters (see `TaichiField`).
        origins: `[N, 3]` ray origins (may require grad: camera optimisation), or `[H, W, 3]`: an
            image of rays, whose outputs are images (`[H, W]`, `[H, W, 3]`) and which the CPU packet
            tracer marches in pairs of packets from two image rows (a pair waits for its slowest ray,
            and pixels a row apart take alike step counts: 9% less time at 256^2; W a multiple of 16,
            up to 640k rays: `_pair_rows`).
        directions: ray directions of any non-zero length, normalised here, shaped as `origins` (may
            require grad; `t` is the distance along the unit direction, `points = origins + t * unit
            directions`).
        max_steps: field evaluations per ray in the marching loop.
        eps: convergence threshold on |f| (default 1e-5 in float32, 1e-7 in float64; the final
            Newton step makes the depth error second order in eps).
        step_scale: relaxation of each step (1.0 = plain sphere tracing; DIST uses 1.5, which
            overshoots and walks back).
        packets: trace SIMD packets of rays (needs `field.sdf_xyz`); default: on for CPU backends,
            off on GPUs (one ray per thread).
        stencil: finite differences of the no-gradient path's gradient (Newton step and normals):
            "tetrahedral" (4 evaluations; error h * the Hessian's off-diagonal terms, first order in h)
            or "central" (6; error O(h^2)); h = 1e-4 in float32, 1e-6 in float64.
        check_values: read back the kernel's value checks (non-finite origins, directions or SDF
            values, zero-length directions) and raise on them. The checks ride on the trace at no cost;
            reading them waits for the kernel (a host sync on GPUs, free on CPUs). False skips the read
            for rays known to be good (from the library's ray kernels): bad values then give NaNs, not
            errors. Shapes, dtypes and devices are always checked.
        outputs: the optional outputs to return, names from `OPTIONAL_OUTPUTS` ("points", "normals",
            "min_sdf": `t_min_sdf` and `min_sdf`); the others are None, and without gradients
            neither computed nor stored (the Newton step still takes its gradient). Default: all.
            `hit`, `t` and `steps` are always returned.
        out: a `FusedTraceResult` of an earlier no-gradient call with the same number of rays, dtype,
            device, `packets` and `outputs`, as it was returned (not reshaped): its buffers are
            overwritten and returned as this call's result, so frames of one size trace without
            allocating. Only for no-gradient traces.

    Returns:
        `TraceResult` with `[N]`/`[N, 3]` tensors (`[H, W]`/`[H, W, 3]` for an image of rays); `t`,
        `points`, `normals` and `min_sdf` carry
        gradients to `field.params`, `origins` and `directions`. Without gradients a
        `FusedTraceResult`, whose `num_evals` is counted when read.
    """
    check_field(field)
    dtype = field.params.dtype
    dims: dict[str, int] = {}
    image = isinstance(origins, torch.Tensor) and origins.dim() == 3
    ray_shape = ("H", "W", 3) if image else ("N", 3)
    check_tensor("origins", origins, shape=ray_shape, dims=dims, dtype=dtype)
    check_tensor("directions", directions, shape=ray_shape, dims=dims, dtype=dtype)
    lead = tuple(origins.shape[:-1])
    if image:  # traced as [N, 3] rays (views: both are contiguous), returned as images
        origins, directions = origins.view(-1, 3), directions.view(-1, 3)
    if not (isinstance(max_steps, int) and not isinstance(max_steps, bool) and max_steps >= 1):
        raise ValueError(f"max_steps: expected an int >= 1, got {max_steps!r}")
    if eps is None:
        eps = 1e-5 if dtype == torch.float32 else 1e-7
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps > 0):
        raise ValueError(f"eps: expected a finite float > 0, got {eps!r}")
    if not 0 < step_scale < 2:
        raise ValueError(f"step_scale: expected in (0, 2), got {step_scale!r}")
    if stencil not in STENCIL_POINTS:
        raise ValueError(f"stencil: expected one of {sorted(STENCIL_POINTS)}, got {stencil!r}")
    if packets is None:
        packets = field.sdf_xyz is not None and origins.device.type == "cpu"
    if packets and field.sdf_xyz is None:
        raise ValueError(f"packets: field {field.name!r} has no lane-generic sdf_xyz")
    needs_grad = torch.is_grad_enabled() and (
        field.params.requires_grad or origins.requires_grad or directions.requires_grad
    )
    selected = _selected_outputs(outputs)
    if needs_grad and out is not None:
        raise ValueError("out: buffer reuse is for no-gradient traces; got inputs that require grad (trace under "
                         "torch.no_grad(), or pass out=None)")  # fmt: skip
    finish = None if needs_grad else stencil
    n = origins.shape[0]
    # Packets store whole vectors: buffers of ceil(N / lanes) packets, the first N rays returned (views).
    lanes = PACKET_LANES if packets else 1
    if out is not None:
        buffers = _reuse_buffers(out, lead, lanes, selected, origins)
    else:  # the marching kernel of the gradient path stores only t, hit, the min-SDF point and steps
        buffers = _POOL.take(n, lanes, selected if finish else ("min_sdf",), origins)
    if n > 0:
        ndim, dname = _params_ndim_name(field)
        h = 1e-4 if dtype == torch.float32 else 1e-6
        scalars = (float(field.bound_radius), float(eps), int(max_steps), float(step_scale), h, MIN_COS)
        params = field.params
        if packets:
            group = march_group(field.sdf_xyz) if origins.device.type == "cpu" else 1
            kernel = fused_trace_packet_kernel(field.sdf_xyz, dname, ndim, finish, lanes, buffers.outputs, group)
            # groups from `group` image rows where the rows are whole packets (`_pair_rows`)
            row_packets = lead[1] // lanes if image and group > 1 and _pair_rows(lead, lanes, finish) else 0
            scalars = (*scalars, row_packets)
        else:
            kernel = fused_trace_kernel(field.sdf, dname, ndim, finish, buffers.outputs)
        lean = lean_kernel(kernel)

        def launch_args():
            o, d = origins.detach(), directions.detach()
            rays = (o, d, packet_rows(o, lanes), packet_rows(d, lanes)) if packets else (o, d)
            return (*rays, params.detach(), *buffers.args, *scalars)

        # What the launch reads besides `buffers`: the rays (contiguous [N, 3] of the kernel's dtype, checked
        # above) and the parameters, by address and shape, and the scalars (the kernel fixes dtypes and ranks)
        key = (lean, origins.data_ptr(), directions.data_ptr(), n, params.data_ptr(), params.shape, params.stride(),
               scalars)  # fmt: skip
        lean.launch_keyed(buffers.contexts, key, launch_args)
        if check_values:
            _raise_on_bad_values(buffers.status_counts(), field, n)
    if not needs_grad:
        return buffers.result(STENCIL_POINTS[stencil], lead)
    result = buffers.result(STENCIL_POINTS[stencil])
    unit = directions / directions.norm(dim=-1, keepdim=True)  # zero lengths were refused by the kernel's check
    traced = trace_result(
        lambda x: field_values(field, x), lambda x: _exact_gradients(field, x), origins, unit,
        MarchResult(result.hit, result.t, result.t_min_sdf, result.steps), gradient_cost=7,
        normals_fn=lambda x: _normals_field(field, x),
    )  # fmt: skip
    if traced.normals is not None:  # as the no-gradient kernel: a miss has no surface, hence no normal
        traced.normals = torch.where(traced.hit[:, None], traced.normals, torch.zeros_like(traced.normals))
    for output, names in (("points", ("points",)), ("normals", ("normals",)), ("min_sdf", ("t_min_sdf", "min_sdf"))):
        if output not in selected:
            for name in names:
                setattr(traced, name, None)
    return traced.reshape(*lead) if image else traced


def _exact_gradients(field: TaichiField, points: torch.Tensor) -> torch.Tensor:
    """Exact spatial SDF gradients `[N, 3]` (no graph) by Taichi autodiff of the value kernel."""
    with torch.enable_grad():
        x = points.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(field_values(field.with_params(field.params.detach()), x).sum(), x)
    return g


def _normals_field(field: TaichiField, points: torch.Tensor) -> torch.Tensor:
    """Spatial gradients whose value is exact (autodiff) and whose derivatives w.r.t. points and
    params come from the central-difference kernel (second derivatives that Taichi autodiff
    cannot nest)."""
    exact = _exact_gradients(field, points)
    if not (torch.is_grad_enabled() and (points.requires_grad or field.params.requires_grad)):
        return exact
    fd = field_gradients(field, points)
    return exact + (fd - fd.detach())
