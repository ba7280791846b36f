"""Torch twins of the marchers of torch-callable fields (`taichi_sdf.implicit.wavefront.march_field`
with `IDRMarcher` / `DISTMarcher` / `DVRMarcher`): the same algorithms written with dense masks, as a readable
reference. Marching evaluates the field on every ray inside the bounding sphere at every iteration
(finished rays are frozen with `torch.where`); only the sampler and secant phases evaluate the subset
that needs them.

A leaf: torch and the twins' own implicit step only. The marcher object passed in is read for its
options (attributes) and its `name`, which picks the twin algorithm (`MARCHERS`)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from taichi_sdf.reference.implicit import dist_gradient
from taichi_sdf.reference.implicit.implicit_step import Trace, spatial_gradient, trace_outputs
from taichi_sdf.reference.implicit.sphere_trace import sphere_bounds


def _trace_idr(ev, o, d, cfg, image_shape=None):
    """(hit, t, t_min) of IDR's algorithm; `ev(points) -> [M]` values of an SDF, `cfg` an `IDRMarcher`."""
    n = o.shape[0]
    t_near, t_far, t_close, active = sphere_bounds(o, d, cfg.bound_radius)
    t_s, t_e = t_near.clone(), t_far.clone()
    best_f = torch.full((n,), float("inf"), dtype=o.dtype, device=o.device)
    best_t = t_close.clone()

    def track(f, t, mask):
        nonlocal best_f, best_t
        better = mask & (f < best_f)
        best_f, best_t = torch.where(better, f, best_f), torch.where(better, t, best_t)

    def sdf_at(t, mask):
        f = ev(o + t[:, None] * d)
        track(f, t, mask)
        return f

    unf_s, unf_e = active.clone(), active.clone()
    f_s = torch.where(unf_s, sdf_at(t_s, unf_s), torch.zeros_like(t_s))
    f_e = torch.where(unf_e, sdf_at(t_e, unf_e), torch.zeros_like(t_e))
    it = 0
    while True:
        conv_s, conv_e = unf_s & (f_s <= cfg.eps), unf_e & (f_e <= cfg.eps)
        f_s, f_e = torch.where(conv_s, 0.0, f_s), torch.where(conv_e, 0.0, f_e)
        unf_s, unf_e = unf_s & ~conv_s, unf_e & ~conv_e
        if (not unf_s.any() and not unf_e.any()) or it == cfg.sphere_tracing_iters:
            break
        it += 1
        fp_s, fp_e = f_s.clone(), f_e.clone()
        t_s = torch.where(unf_s, t_s + f_s, t_s)
        t_e = torch.where(unf_e, t_e - f_e, t_e)
        f_s = torch.where(unf_s, sdf_at(t_s, unf_s), f_s)
        f_e = torch.where(unf_e, sdf_at(t_e, unf_e), f_e)
        for j in range(cfg.line_step_iters):
            factor = (1.0 - cfg.line_search_step) / 2**j
            back_s, back_e = unf_s & (f_s < 0), unf_e & (f_e < 0)
            if not back_s.any() and not back_e.any():
                break
            t_s = torch.where(back_s, t_s - factor * fp_s, t_s)
            t_e = torch.where(back_e, t_e + factor * fp_e, t_e)
            f_s = torch.where(back_s, sdf_at(t_s, back_s), f_s)
            f_e = torch.where(back_e, sdf_at(t_e, back_e), f_e)
        met = t_s >= t_e
        unf_s, unf_e = unf_s & ~met, unf_e & ~met

    hit = active & ~unf_s & (t_s < t_e)
    t_hit = t_s.clone()
    sel = unf_s.nonzero()[:, 0]
    if len(sel):
        ns = cfg.n_steps
        w = torch.linspace(0, 1, ns, dtype=o.dtype, device=o.device)
        z = t_s[sel, None] + w * (t_e[sel] - t_s[sel])[:, None]  # [M, ns]
        f = ev((o[sel, None] + z[..., None] * d[sel, None]).reshape(-1, 3)).reshape(-1, ns)
        fmin, arg = f.min(dim=1)
        better = fmin < best_f[sel]
        best_f[sel] = torch.where(better, fmin, best_f[sel])
        best_t[sel] = torch.where(better, z.gather(1, arg[:, None])[:, 0], best_t[sel])
        neg = f < 0
        found = neg.any(dim=1)
        first = torch.where(found, neg.float().argmax(dim=1), torch.zeros_like(arg))
        lo = (first - 1).clamp_min(0)
        rows = torch.arange(len(sel), device=o.device)
        z_low, z_high = z[rows, lo], z[rows, first]
        f_low, f_high = f[rows, lo], f[rows, first]
        sel_f = found.nonzero()[:, 0]
        if len(sel_f):
            z_low, z_high, f_low, f_high = z_low[sel_f], z_high[sel_f], f_low[sel_f], f_high[sel_f]
            rays = sel[sel_f]

            def predict():
                den = f_high - f_low
                return torch.where(den != 0, z_low - f_low * (z_high - z_low) / torch.where(den != 0, den, 1.0), z_high)

            for _ in range(cfg.n_secant_steps):
                zp = predict()
                fm = ev(o[rays] + zp[:, None] * d[rays])
                pos, negm = fm > 0, fm < 0
                z_low, f_low = torch.where(pos, zp, z_low), torch.where(pos, fm, f_low)
                z_high, f_high = torch.where(negm, zp, z_high), torch.where(negm, fm, f_high)
            hit[rays] = True
            t_hit[rays] = predict()
    if cfg.min_sdf_samples > 0:
        sel = (active & ~hit).nonzero()[:, 0]
        if len(sel):
            ns = cfg.min_sdf_samples
            w = torch.linspace(0, 1, ns, dtype=o.dtype, device=o.device)
            z = t_near[sel, None] + w * (t_far[sel] - t_near[sel])[:, None]
            f = ev((o[sel, None] + z[..., None] * d[sel, None]).reshape(-1, 3)).reshape(-1, ns)
            fmin, arg = f.min(dim=1)
            better = fmin < best_f[sel]
            best_f[sel] = torch.where(better, fmin, best_f[sel])
            best_t[sel] = torch.where(better, z.gather(1, arg[:, None])[:, 0], best_t[sel])
    return hit, t_hit, best_t


def _block_rays(o, d, shape, scale):
    """Mean origin and (renormalised) direction of each `scale x scale` pixel block of `shape = (B, H, W)`
    images (partial blocks at the border average their pixels); returns (o, d, (B, h, w))."""
    B, H, W = shape
    if scale == 1:
        return o, d, shape
    h, w = -(-H // scale), -(-W // scale)
    pad = lambda x: torch.nn.functional.pad(x, (0, 0, 0, w * scale - W, 0, h * scale - H))  # noqa: E731
    block_sum = lambda x: pad(x).reshape(B, h, scale, w, scale, -1).sum((2, 4))  # noqa: E731
    count = block_sum(torch.ones(B, H, W, 1, dtype=o.dtype, device=o.device))
    oc = block_sum(o.reshape(B, H, W, 3)) / count
    dc = block_sum(d.reshape(B, H, W, 3)) / count
    dc = dc / dc.norm(dim=-1, keepdim=True)
    return oc.reshape(-1, 3), dc.reshape(-1, 3), (B, h, w)


def _trace_dist(ev, o, d, cfg, image_shape):
    """(hit, t, t_min, t_buffer) of DIST's algorithm; `ev(points) -> [M]` values of an SDF, `cfg` a
    `DISTMarcher`. `t_buffer [N, K]` (None when `cfg.buffer_size` K is 0): the K samples of smallest |f|
    of the final level, from its full per-step record."""
    f_steps, t_steps = [], []
    scales = cfg.scales if image_shape is not None else (1,)
    steps = cfg.steps_per_scale if image_shape is not None else (-1,)
    budget = cfg.march_steps
    t_prev, prev_shape = None, None
    for i_scale, (scale, n_steps) in enumerate(zip(scales, steps)):
        if image_shape is not None:
            oo, dd, shape = _block_rays(o, d, image_shape, scale)
        else:
            oo, dd, shape = o, d, None
        t_near, t_far, t_close, active = sphere_bounds(oo, dd, cfg.bound_radius)
        t = t_near.clone()
        if t_prev is not None:
            B, h, w = shape
            up = t_prev.reshape(prev_shape)
            ii = (torch.arange(h, device=o.device) // 2).clamp_max(prev_shape[1] - 1)
            jj = (torch.arange(w, device=o.device) // 2).clamp_max(prev_shape[2] - 1)
            t = torch.maximum(up[:, ii][:, :, jj].reshape(-1), t_near)
        n = oo.shape[0]
        best_f = torch.full((n,), float("inf"), dtype=o.dtype, device=o.device)
        best_t = t_close.clone()
        converged = torch.zeros(n, dtype=torch.bool, device=o.device)
        n_steps = budget if n_steps < 0 else min(n_steps, budget)
        for _ in range(n_steps):
            if not active.any():
                break
            f = ev(oo + t[:, None] * dd)
            if i_scale == len(scales) - 1:
                f_steps.append(torch.where(active, f, float("inf")))
                t_steps.append(t)
            better = active & (f.abs() < best_f.abs())
            best_f, best_t = torch.where(better, f, best_f), torch.where(better, t, best_t)
            conv = active & (f.abs() < cfg.eps)
            converged |= conv
            active &= ~conv
            t = torch.where(active, t + cfg.alpha * f.clamp(-cfg.clamp, cfg.clamp), t)
            active &= t <= t_far
            budget -= 1
        t_prev, prev_shape = t, shape
    hit = converged & (best_t < t_far)
    best_t = torch.where(torch.isfinite(best_f), best_t, t_close)
    k = getattr(cfg, "buffer_size", 0)
    t_buffer = None
    if k > 0:
        stack = lambda x: torch.stack(x) if x else o.new_empty(0, o.shape[0])  # noqa: E731
        t_buffer = dist_gradient.smallest_abs_buffer(stack(f_steps), stack(t_steps), k)
    return hit, best_t.clone(), best_t, t_buffer


def cube_bounds(o, d, half):
    """(t_near, t_far, t_close, inside) `[N]` of rays through the cube [-half, half]^3 by the slab test;
    near clamped at 0; `t_close = max(-o . d, 0)`."""
    with torch.no_grad():
        safe = torch.where(d != 0, d, torch.ones_like(d))
        a, b = (-half - o) / safe, (half - o) / safe
        lo = torch.where(d != 0, torch.minimum(a, b), torch.full_like(a, -1e30))
        hi = torch.where(d != 0, torch.maximum(a, b), torch.full_like(a, 1e30))
        hi = torch.where((d == 0) & (o.abs() > half), torch.full_like(hi, -1e30), hi)
        lo, hi = lo.max(dim=1).values, hi.min(dim=1).values
        t_close = (-(o * d).sum(-1)).clamp_min(0)
        inside = (hi > lo) & (hi > 0)
        return torch.where(inside, lo.clamp_min(0), t_close), torch.where(inside, hi, t_close), t_close, inside


def refine_bracket(ev, o, d, t0, f0, t1, f1, n_steps, method):
    """DVR's secant (regula falsi) or bisection refinement of brackets f0 < 0 <= f1 `[M]`; returns t `[M]`."""

    def predict():
        return t0 - f0 * (t1 - t0) / (f1 - f0) if method == "secant" else 0.5 * (t0 + t1)

    for _ in range(n_steps):
        tp = predict()
        fm = ev(o + tp[:, None] * d)
        low = fm < 0
        t0, f0 = torch.where(low, tp, t0), torch.where(low, fm, f0)
        t1, f1 = torch.where(low, t1, tp), torch.where(low, f1, fm)
    return predict()


def _trace_dvr(ev, o, d, cfg, image_shape=None):
    """(hit, t, t_min) of DVR's occupancy marcher; `ev(points) -> [M]` values of `f - level`, positive
    inside; `cfg` a `DVRMarcher`. Every searching ray is evaluated at every proposal (rays that are done
    are frozen with `torch.where`)."""
    n, ns = o.shape[0], cfg.n_steps
    t_lo, t_hi, t_close, searching = cube_bounds(o, d, cfg.cube_half)
    if cfg.search_outside_cube:
        t_lo = torch.where(searching, t_lo, torch.full_like(t_lo, cfg.depth_range[0]))
        t_hi = torch.where(searching, t_hi, torch.full_like(t_hi, cfg.depth_range[1]))
        searching = torch.ones_like(searching)
    best_f = torch.full((n,), -float("inf"), dtype=o.dtype, device=o.device)
    best_t = t_close.clone()
    hit = torch.zeros_like(searching)
    f_prev = torch.zeros_like(t_lo)
    t0, f0, t1, f1 = (torch.zeros_like(t_lo) for _ in range(4))
    for s in range(ns):
        if not searching.any():
            break
        t = t_lo + s / (ns - 1) * (t_hi - t_lo)
        f = ev(o + t[:, None] * d)
        better = searching & (f > best_f)
        best_f, best_t = torch.where(better, f, best_f), torch.where(better, t, best_t)
        if s == 0:
            searching = searching & (f < 0)  # first proposal occupied: DVR's d = 0, no hit
        else:
            change = searching & (((f_prev < 0) & (f > 0)) | ((f_prev > 0) & (f < 0)))
            new_hit = change & (f_prev < 0)
            t_prev = t_lo + (s - 1) / (ns - 1) * (t_hi - t_lo)
            t0, f0 = torch.where(new_hit, t_prev, t0), torch.where(new_hit, f_prev, f0)
            t1, f1 = torch.where(new_hit, t, t1), torch.where(new_hit, f, f1)
            hit |= new_hit
            searching = searching & ~change
        f_prev = torch.where(searching, f, f_prev)
    t_hit = best_t.clone()
    sel = hit.nonzero()[:, 0]
    if len(sel):
        t_hit[sel] = refine_bracket(ev, o[sel], d[sel], t0[sel], f0[sel], t1[sel], f1[sel], cfg.n_secant_steps,
                                    cfg.method)  # fmt: skip
    return hit, t_hit, best_t


def _trace_dvr_coarse(ev, o, d, cfg, image_shape=None):
    """(hit, t, t_min) of `DVRMarcher`'s coarse-to-fine search (any `coarse_stride`; 1 gives `_trace_dvr`'s
    results by a different route). Coarse proposals a < b (every `coarse_stride`-th of DVR's grid and the
    last) are walked in ray order; an interval is examined at full resolution when it is a candidate (a
    sign change, or an end within `refine_margin` of the level; neighbours always): its first fine sign
    change ends the ray (a hit when it goes from outside to inside), none moves on to the next interval.
    `t_min` tracks the values in the kernel's order: each coarse value, then the fine values examined."""
    n, ns, c = o.shape[0], cfg.n_steps, cfg.coarse_stride
    t_lo, t_hi, t_close, searching = cube_bounds(o, d, cfg.cube_half)
    if cfg.search_outside_cube:
        t_lo = torch.where(searching, t_lo, torch.full_like(t_lo, cfg.depth_range[0]))
        t_hi = torch.where(searching, t_hi, torch.full_like(t_hi, cfg.depth_range[1]))
        searching = torch.ones_like(searching)
    best_f = torch.full((n,), -float("inf"), dtype=o.dtype, device=o.device)
    best_t = t_close.clone()

    def track(f, t, mask):
        nonlocal best_f, best_t
        better = mask & (f > best_f)
        best_f, best_t = torch.where(better, f, best_f), torch.where(better, t, best_t)

    def at(s, rays=slice(None)):  # proposal index s (int or [M, L]) of the rays -> t
        w = s / (ns - 1) if isinstance(s, int) else s.to(o.dtype) / (ns - 1)
        span = t_hi[rays] - t_lo[rays]
        return t_lo[rays] + w * span if isinstance(s, int) else t_lo[rays, None] + w * span[:, None]

    f_a = ev(o + at(0)[:, None] * d)
    track(f_a, at(0), searching)
    searching = searching & (f_a < 0)  # first proposal occupied: DVR's d = 0, no hit
    hit = torch.zeros_like(searching)
    t0, f0, t1, f1 = (torch.zeros_like(t_lo) for _ in range(4))
    coarse = [*range(0, ns - 1, c), ns - 1]
    for a, b in zip(coarse[:-1], coarse[1:]):
        if not searching.any():
            break
        f_b = ev(o + at(b)[:, None] * d)
        track(f_b, at(b), searching)
        crossing = ((f_a < 0) & (f_b > 0)) | ((f_a > 0) & (f_b < 0))
        near = torch.minimum(f_a.abs(), f_b.abs()) <= cfg.refine_margin
        rays = (searching & (crossing | near | (b - a == 1))).nonzero()[:, 0]
        if len(rays):
            s = torch.arange(a, b + 1, device=o.device).expand(len(rays), -1)  # [M, L + 1]
            t = at(s, rays)
            fine = ev((o[rays, None] + t[:, 1:-1, None] * d[rays, None]).reshape(-1, 3)).reshape(len(rays), -1)
            f = torch.cat([f_a[rays, None], fine, f_b[rays, None]], 1)
            change = ((f[:, :-1] < 0) & (f[:, 1:] > 0)) | ((f[:, :-1] > 0) & (f[:, 1:] < 0))  # [M, L]
            found = change.any(1)
            first = torch.where(found, change.int().argmax(1), torch.full_like(found, b - a, dtype=torch.long))
            for i in range(1, b - a):  # fine value i is examined unless a sign change came before it
                sub = torch.zeros_like(searching)
                sub[rays] = first >= i - 1
                ft, tt = torch.zeros_like(best_f), torch.zeros_like(best_t)
                ft[rays], tt[rays] = f[:, i], t[:, i]
                track(ft, tt, sub)
            rows = torch.arange(len(rays), device=o.device)
            j = first.clamp_max(b - a - 1)
            new_hit = found & (f[rows, j] < 0)
            sel = rays[new_hit]
            t0[sel], f0[sel] = t[rows, j][new_hit], f[rows, j][new_hit]
            t1[sel], f1[sel] = t[rows, j + 1][new_hit], f[rows, j + 1][new_hit]
            hit[sel] = True
            searching[rays[found]] = False
        f_a = torch.where(searching, f_b, f_a)
    t_hit = best_t.clone()
    sel = hit.nonzero()[:, 0]
    if len(sel):
        t_hit[sel] = refine_bracket(ev, o[sel], d[sel], t0[sel], f0[sel], t1[sel], f1[sel], cfg.n_secant_steps,
                                    cfg.method)  # fmt: skip
    return hit, t_hit, best_t


def _trace_dvr_any(ev, o, d, cfg, image_shape=None):
    """`DVRMarcher`'s search: DVR's exact one (`coarse_stride` 1) or the coarse-to-fine one."""
    if getattr(cfg, "coarse_stride", 1) == 1:
        return _trace_dvr(ev, o, d, cfg, image_shape)
    return _trace_dvr_coarse(ev, o, d, cfg, image_shape)


MARCHERS = {"idr": _trace_idr, "dist": _trace_dist, "dvr": _trace_dvr_any}  # Marcher.name -> twin algorithm


class _Evaluator:
    """Column 0 of `fn`, no grad, counting points (the twin of `FieldEvaluator`, without its checks)."""

    def __init__(self, fn):
        self.fn, self.count = fn, 0

    def values(self, x):
        y = self.fn(x)
        return (y[:, 0] if y.dim() == 2 else y).to(x.dtype)

    def __call__(self, x):
        self.count += x.shape[0]
        with torch.no_grad():
            return self.values(x)


def march_field(
    fn: Callable[[torch.Tensor], torch.Tensor],
    origins: torch.Tensor,
    directions: torch.Tensor,
    *,
    marcher,
    level: float = 0.0,
    image_shape: tuple[int, int, int] | None = None,
    chunk_size: int = 65536,
    create_graph: bool = True,
    polish_steps: int = 1,
    gradient: str = "implicit",
) -> Trace:
    """Twin of `taichi_sdf.implicit.wavefront.march_field` (same arguments and outputs; `chunk_size` is
    ignored: the twin evaluates each batch at once; `num_evals` is not counted for the approximate
    gradient). Directions of any non-zero length are normalised (differentiably), as there."""
    directions = directions / directions.norm(dim=-1, keepdim=True)
    ev = _Evaluator(fn)
    o, d = origins.detach(), directions.detach()
    hit, t0, t_min, *buffer = MARCHERS[marcher.name](lambda x: ev(x) - level, o, d, marcher, image_shape)
    out = trace_outputs(ev.values, origins, directions, hit, t0, t_min, level=level, polish_steps=polish_steps,
                        create_graph=create_graph, marching_evals=ev.count)  # fmt: skip
    if gradient == "approximate":  # DIST's t; points and normals follow it
        out.t = dist_gradient.approximate_depth(ev.values, origins, directions, hit, t_min, buffer[0],
                                                alpha=marcher.alpha, clamp=marcher.clamp, level=level)  # fmt: skip
        out.points = origins + out.t[:, None] * directions
        grad = spatial_gradient(ev.values, out.points, create_graph and torch.is_grad_enabled())
        out.normals = grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return out


def sphere_trace_mlp(fn, origins, directions, *, tracer, **kwargs) -> Trace:
    """Former name of `march_field` (`tracer` is its `marcher`)."""
    return march_field(fn, origins, directions, marcher=tracer, **kwargs)
