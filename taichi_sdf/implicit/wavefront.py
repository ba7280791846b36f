"""Wavefront sphere tracing of torch-callable fields (MLPs), with the published algorithms.

The callable's contract: `fn(points [M, 3]) -> [M]` or `[M, 1 + F]` (column 0 is the SDF, negative
inside), any differentiable torch function (an MLP conditioned on a latent code via a closure, say).
The tracer calls it without gradients on the still-active points only, in chunks of at most
`chunk_size` points; Taichi kernels own the per-ray state and the compaction of the active set.
Afterwards one differentiable evaluation at the found points and the implicit-function step give
exact first-order gradients w.r.t. everything `fn` depends on (weights, latent codes) and w.r.t. the
rays (camera poses); normals come from autograd with `create_graph` so eikonal and normal losses
train the network.

Algorithms (defaults from the original code):
- `IDRTracer`: lioryariv/idr `ray_tracing.py` with `confs/dtu_*.conf` values.
- `DISTTracer`: B1ueber2y/DIST-Renderer `SDFRenderer` (`pyramid_recursive`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from taichi_sdf.core.validation import FLOAT_DTYPES, check_finite, check_tensor
from taichi_sdf.implicit.sphere_trace import TraceResult, implicit_surface
from taichi_sdf.kernels.implicit.wavefront import wavefront_kernels

_DTYPE_NAMES = {torch.float32: "f32", torch.float64: "f64"}


@dataclass(frozen=True)
class IDRTracer:
    """IDR's tracer: sphere tracing from both ends of the bounding-sphere chord, then uniform sampling
    and secant refinement for rays that did not converge."""

    bound_radius: float = 1.0  # object_bounding_sphere
    eps: float = 5e-5  # sdf_threshold
    sphere_tracing_iters: int = 10
    line_search_step: float = 0.5
    line_step_iters: int = 3
    n_steps: int = 100  # uniform samples for rays that did not converge
    n_secant_steps: int = 8
    min_sdf_samples: int = 0  # > 0: also search this many samples for the min-SDF point of every miss (IDR training: 100)


@dataclass(frozen=True)
class DISTTracer:
    """DIST's tracer: aggressive marching t += alpha * clamp(f, -clamp, clamp) with early exit,
    coarse-to-fine over a pixel pyramid when the rays form images."""

    bound_radius: float = 1.0
    eps: float = 5e-5  # threshold
    march_steps: int = 100
    alpha: float = 1.5  # ray_marching_ratio
    clamp: float = 0.1  # clamp_dist
    scales: tuple[int, ...] = (4, 2, 1)  # scale_list
    steps_per_scale: tuple[int, ...] = (3, 3, -1)  # march_step_list; -1 = the remaining steps


class FieldEvaluator:
    """Calls a torch field without gradients, in chunks; checks outputs; counts evaluated points."""

    def __init__(self, fn: Callable, chunk_size: int, dtype: torch.dtype) -> None:
        if not callable(fn):
            raise TypeError(f"fn: expected a callable points [M, 3] -> [M] or [M, 1 + F], got {type(fn).__name__}")
        if not (isinstance(chunk_size, int) and chunk_size > 0):
            raise ValueError(f"chunk_size: expected a positive int, got {chunk_size!r}")
        self.fn, self.chunk_size, self.dtype = fn, chunk_size, dtype
        self.count = 0

    def sdf(self, points: torch.Tensor) -> torch.Tensor:
        """Column 0 of fn(points) as `[M]` (differentiable; used for the implicit step)."""
        out = self.fn(points)
        if not isinstance(out, torch.Tensor) or out.shape[0] != points.shape[0] or out.dim() not in (1, 2):
            shape = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"fn: expected output [M] or [M, 1 + F] for M={points.shape[0]} points, got {shape}")
        return (out[:, 0] if out.dim() == 2 else out).to(points.dtype)

    @torch.no_grad()
    def __call__(self, points: torch.Tensor) -> torch.Tensor:
        if points.shape[0] == 0:
            return points.new_empty(0)
        vals = torch.cat([self.sdf(c) for c in points.split(self.chunk_size)]).contiguous()
        if not torch.isfinite(vals).all():
            bad = int((~torch.isfinite(vals)).sum())
            raise ValueError(f"fn: returned {bad} non-finite SDF value(s) out of {len(vals)}")
        self.count += points.shape[0]
        return vals


def _compact(k, flags: torch.Tensor) -> torch.Tensor:
    """int32 indices `[M]` of the rays whose int32 flag `[N]` is non-zero (Taichi compaction)."""
    idx = torch.empty_like(flags)
    count = torch.zeros(1, dtype=torch.int32, device=flags.device)
    k.compact(flags, idx, count)
    return idx[: int(count[0])]


def _trace_idr(k, ev: FieldEvaluator, o, d, cfg: IDRTracer):
    n = o.shape[0]
    t_near, t_far, t_close = (o.new_empty(n) for _ in range(3))
    active = torch.empty(n, dtype=torch.int32, device=o.device)
    k.sphere_bounds(o, d, t_near, t_far, t_close, active, float(cfg.bound_radius))
    # [2, N] state: row 0 the start side (marching forward), row 1 the end side (marching back).
    t2 = torch.stack([t_near, t_far]).contiguous()
    f2, fp2 = o.new_zeros(2, n), o.new_zeros(2, n)
    unf2 = torch.stack([active, active]).contiguous()
    best_f = torch.full((n,), float("inf"), dtype=o.dtype, device=o.device)
    best_t = t_close.clone()
    points = o.new_empty(2 * n, 3)
    slots = torch.empty(2 * n, dtype=torch.int32, device=o.device)
    count = torch.zeros(1, dtype=torch.int32, device=o.device)

    def evaluate_gathered() -> int:
        m = int(count[0])
        if m:
            vals = ev(points[:m])
            k.idr_scatter(vals, slots[:m], t2, f2, best_f, best_t)
            k.idr_scatter_t(vals, slots[:m], t2, best_f, best_t)
        return m

    k.idr_gather_all(o, d, t2, unf2, points, slots, count)
    evaluate_gathered()
    it = 0
    while True:
        advance = int(it < cfg.sphere_tracing_iters)
        k.idr_advance_gather(o, d, t2, f2, fp2, unf2, points, slots, count, float(cfg.eps), advance)
        if not advance or evaluate_gathered() == 0:
            break
        it += 1
        for j in range(cfg.line_step_iters):
            k.idr_backoff_gather(o, d, t2, f2, fp2, unf2, points, slots, count, (1.0 - cfg.line_search_step) / 2**j)
            if evaluate_gathered() == 0:
                break
    # The last advance call applied the final "sides met" and convergence tests without stepping.
    t_s, t_e = t2[0].contiguous(), t2[1].contiguous()
    unf_s = unf2[0].contiguous()

    # Converged from the front (and the chord not used up): a hit at t_s.
    hit = (active != 0) & (unf_s == 0) & (t_s < t_e)
    t_hit = t_s.clone()
    # Rays whose front never converged: 100 uniform samples on [t_s, t_e], first sign change + secant.
    idx = _compact(k, unf_s)
    if len(idx):
        m, ns = len(idx), cfg.n_steps
        pts = o.new_empty(m * ns, 3)
        k.sample_points(o, d, t_s, t_e, idx, ns, pts)
        vals = ev(pts)
        z_low, z_high, f_low, f_high = (o.new_empty(m) for _ in range(4))
        found = torch.empty(m, dtype=torch.int32, device=o.device)
        k.sample_select(vals, idx, ns, t_s, t_e, z_low, z_high, f_low, f_high, found, best_f, best_t)
        sel = found.bool()
        if sel.any():
            idx_f = idx[sel].contiguous()
            z_low, z_high, f_low, f_high = (x[sel].contiguous() for x in (z_low, z_high, f_low, f_high))
            z_pred, p = o.new_empty(len(idx_f)), o.new_empty(len(idx_f), 3)
            k.secant_points(o, d, idx_f, z_low, z_high, f_low, f_high, z_pred, p)
            for _ in range(cfg.n_secant_steps):
                k.secant_update_points(o, d, idx_f, ev(p), z_low, z_high, f_low, f_high, z_pred, p)
            li = idx_f.long()
            hit[li] = True
            t_hit[li] = z_pred
    if cfg.min_sdf_samples > 0:
        miss = ((active != 0) & ~hit).int()
        idx = _compact(k, miss)
        if len(idx):
            m, ns = len(idx), cfg.min_sdf_samples
            pts = o.new_empty(m * ns, 3)
            k.sample_points(o, d, t_near, t_far, idx, ns, pts)
            tmp = [o.new_empty(m) for _ in range(4)]
            k.sample_select(ev(pts), idx, ns, t_near, t_far, *tmp, torch.empty(m, dtype=torch.int32, device=o.device),
                            best_f, best_t)  # fmt: skip
    return hit, t_hit, best_t


def _block_rays(o, d, shape, scale):
    """Rays through the centres of `scale x scale` pixel blocks: origins and directions averaged."""
    B, H, W = shape
    if scale == 1:
        return o, d, shape
    img = lambda x: x.reshape(B, H, W, 3).permute(0, 3, 1, 2)  # noqa: E731
    pool = lambda x: torch.nn.functional.avg_pool2d(img(x), scale, ceil_mode=True)  # noqa: E731
    oc, dc = pool(o), pool(d)
    dc = dc / dc.norm(dim=1, keepdim=True)
    h, w = oc.shape[2:]
    flat = lambda x: x.permute(0, 2, 3, 1).reshape(-1, 3).contiguous()  # noqa: E731
    return flat(oc), flat(dc), (B, h, w)


def _trace_dist(k, ev: FieldEvaluator, o, d, cfg: DISTTracer, image_shape):
    scales = cfg.scales if image_shape is not None else (1,)
    steps = cfg.steps_per_scale if image_shape is not None else (-1,)
    if len(scales) != len(steps) or scales[-1] != 1:
        raise ValueError("DISTTracer: scales and steps_per_scale must have equal length and end at scale 1")
    budget = cfg.march_steps
    t_prev, shape_prev = None, None
    for scale, n_steps in zip(scales, steps):
        if image_shape is not None:
            shape = (image_shape[0], -(-image_shape[1] // scale), -(-image_shape[2] // scale))
            oo, dd, shape = _block_rays(o, d, image_shape, scale)
        else:
            oo, dd, shape = o, d, None
        n = oo.shape[0]
        t_near, t_far, t_close = (oo.new_empty(n) for _ in range(3))
        active = torch.empty(n, dtype=torch.int32, device=o.device)
        k.sphere_bounds(oo, dd, t_near, t_far, t_close, active, float(cfg.bound_radius))
        t = t_near.clone()
        if t_prev is not None:
            up = oo.new_empty(shape)
            k.upsample_nearest(t_prev.reshape(shape_prev).contiguous(), up)
            t = torch.maximum(up.reshape(-1), t_near).contiguous()
        best_f = torch.full((n,), float("inf"), dtype=o.dtype, device=o.device)
        best_t = t_close.clone()
        converged = torch.zeros_like(active)
        n_steps = budget if n_steps < 0 else min(n_steps, budget)
        # Ping-pong point buffers: each launch applies one step's values and gathers the next points.
        pts = [oo.new_empty(n, 3), oo.new_empty(n, 3)]
        slots = [torch.empty(n, dtype=torch.int32, device=o.device) for _ in range(2)]
        count = torch.zeros(1, dtype=torch.int32, device=o.device)
        k.dist_gather(oo, dd, t, active, pts[0], slots[0], count)
        m = int(count[0])
        for step in range(n_steps):
            if m == 0:
                break
            a, b = step % 2, 1 - step % 2
            vals = ev(pts[a][:m])
            k.dist_step_gather(vals, slots[a][:m], oo, dd, t, t_far, active, best_f, best_t, converged, pts[b], slots[b],
                               count, float(cfg.alpha), float(cfg.clamp), float(cfg.eps), int(step + 1 < n_steps))  # fmt: skip
            m = int(count[0])
            budget -= 1
        t_prev, shape_prev = t, shape
    hit = (converged != 0) & (best_t < t_far)
    best_t = torch.where(torch.isfinite(best_f), best_t, t_close)
    return hit, best_t.clone(), best_t


def sphere_trace_mlp(
    fn: Callable[[torch.Tensor], torch.Tensor],
    origins: torch.Tensor,  # [N, 3]
    directions: torch.Tensor,  # [N, 3]
    *,
    tracer: IDRTracer | DISTTracer = IDRTracer(),
    image_shape: tuple[int, int, int] | None = None,
    chunk_size: int = 65536,
    create_graph: bool = True,
    polish_steps: int = 1,
) -> TraceResult:
    """Sphere-trace a torch callable with the wavefront tracer and make differentiable outputs.

    Args:
        fn: `points [M, 3] -> [M]` or `[M, 1 + F]` SDF (column 0), e.g. an MLP.
        origins, directions: `[N, 3]` rays, directions of unit length (may require grad).
        tracer: `IDRTracer()` or `DISTTracer()` with the algorithm's options.
        image_shape: `(B, H, W)` when the rays are B images in row-major order; DIST then marches
            coarse-to-fine over its pixel pyramid.
        chunk_size: most points per call of `fn` (bounds memory).
        create_graph: keep the graph of the normals (needed for normal/eikonal losses on them).
        polish_steps: guarded Newton steps on the hits before the differentiable step (IDR accepts
            points with f <= eps, including points inside after its line search; the implicit
            gradient is exact only on the surface).

    Returns:
        `TraceResult` (`[N]`, `[N, 3]`); `num_evals` counts every point `fn` was evaluated at.
    """
    check_tensor("origins", origins, shape=("N", 3), dims=(dims := {}), dtype=FLOAT_DTYPES, device=None)
    check_tensor("directions", directions, shape=("N", 3), dims=dims, dtype=origins.dtype, device=origins.device)
    check_finite("origins", origins)
    check_finite("directions", directions)
    if not isinstance(tracer, (IDRTracer, DISTTracer)):
        raise TypeError(f"tracer: expected IDRTracer or DISTTracer, got {type(tracer).__name__}")
    if image_shape is not None:
        if len(image_shape) != 3 or image_shape[0] * image_shape[1] * image_shape[2] != origins.shape[0]:
            raise ValueError(f"image_shape: expected (B, H, W) with B*H*W = {origins.shape[0]} rays, got {image_shape}")
    from taichi_sdf.core.runtime import device as runtime_device

    if origins.device.type != runtime_device().type:
        raise ValueError(f"origins: expected a tensor on {runtime_device().type} (the device taichi_sdf runs on), got {origins.device}")
    ev = FieldEvaluator(fn, chunk_size, origins.dtype)
    k = wavefront_kernels(_DTYPE_NAMES[origins.dtype])
    o, d = origins.detach().contiguous(), directions.detach().contiguous()
    if o.shape[0] == 0:
        hit, t0, t_min = torch.zeros(0, dtype=torch.bool, device=o.device), o.new_empty(0), o.new_empty(0)
    elif isinstance(tracer, IDRTracer):
        hit, t0, t_min = _trace_idr(k, ev, o, d, tracer)
    else:
        hit, t0, t_min = _trace_dist(k, ev, o, d, tracer, image_shape)
    marching = ev.count
    values_fn, gradients_fn = differentiable_field(ev.sdf, create_graph)
    result = implicit_surface(values_fn, gradients_fn, origins, directions, hit, t0, t_min, polish_steps=polish_steps)
    result.num_evals = marching + result.num_evals
    result.marching_evals = marching
    return result


def differentiable_field(sdf: Callable, create_graph: bool = True):
    """(values_fn, gradients_fn) of a torch SDF for `implicit_surface`: values are the callable;
    gradients come from autograd (with `create_graph` so second-order losses reach the weights)."""

    def gradients(x: torch.Tensor) -> torch.Tensor:
        grad_mode = torch.is_grad_enabled()
        with torch.enable_grad():
            xg = x if x.requires_grad else x.detach().requires_grad_(True)
            y = sdf(xg)
            (g,) = torch.autograd.grad(y.sum(), xg, create_graph=create_graph and grad_mode)
        return g if grad_mode else g.detach()

    return sdf, gradients
