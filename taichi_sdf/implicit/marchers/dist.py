"""DIST's marcher (B1ueber2y/DIST-Renderer `SDFRenderer`, `pyramid_recursive`): aggressive marching
`t += alpha * clamp(f, -clamp, clamp)` with early exit on |f| < eps, coarse-to-fine over a pixel
pyramid when the rays form images. Fields are SDFs, negative inside (the level set `f = level` is
traced as the zero set of `f - level`).

With `buffer_size = K > 0` the final (full-resolution) level also keeps, per ray, the ray distances of
its K samples of smallest |f| (`MarchResult.t_buffer [N, K]`, index 0 the minimum, NaN = empty slot):
the samples of DIST's approximate depth gradient (`taichi_sdf.implicit.dist_gradient`). Marching,
and so every field batch and result, is the same for every K."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch

from taichi_sdf.core.dtypes import dtype_name
from taichi_sdf.core.launch import lean_kernels
from taichi_sdf.implicit.marchers.base import MarchResult, check_options, shifted, sort_gathered
from taichi_sdf.kernels.implicit.marchers.common import common_kernels
from taichi_sdf.kernels.implicit.marchers.dist import dist_kernels


@dataclass(frozen=True)
class DISTMarcher:
    """DIST's tracer: aggressive marching t += alpha * clamp(f, -clamp, clamp) with early exit,
    coarse-to-fine over a pixel pyramid when the rays form images."""

    name: ClassVar[str] = "dist"

    bound_radius: float = 1.0
    eps: float = 5e-5  # threshold
    march_steps: int = 100
    alpha: float = 1.5  # ray_marching_ratio
    clamp: float = 0.1  # clamp_dist
    scales: tuple[int, ...] = (4, 2, 1)  # scale_list
    steps_per_scale: tuple[int, ...] = (3, 3, -1)  # march_step_list; -1 = the remaining steps
    # Samples kept per ray for the approximate gradient (DIST's `buffer_size`, default 5 in
    # `SDFRenderer`, 3 in its single-view demo); 0 keeps none (the exact implicit gradient needs none).
    buffer_size: int = 0

    def __post_init__(self) -> None:
        check_options(self, positive=("bound_radius", "eps", "alpha", "clamp"), at_least={"march_steps": 1})
        if not (isinstance(self.buffer_size, int) and self.buffer_size >= 0):
            raise ValueError(f"buffer_size: expected an int >= 0, got {self.buffer_size!r}")
        if not all(isinstance(s, int) and s >= 1 for s in self.scales):
            raise ValueError(f"scales: expected pixel strides >= 1, got {self.scales!r}")
        if len(self.scales) != len(self.steps_per_scale) or self.scales[-1] != 1:
            raise ValueError("DISTMarcher: scales and steps_per_scale must have equal length and end at scale 1")

    def march(self, evaluate: Callable[[torch.Tensor], torch.Tensor], origins: torch.Tensor, directions: torch.Tensor,
              *, level: float = 0.0, image_shape: tuple[int, int, int] | None = None) -> MarchResult:  # fmt: skip
        """See `taichi_sdf.implicit.marchers.base.Marcher`; with `image_shape` the pyramid is used."""
        dname = dtype_name(origins.dtype)
        hit, t, t_min, t_buffer = _march(lean_kernels(common_kernels(dname)), lean_kernels(dist_kernels(dname)), shifted(evaluate, level), origins,
                                         directions, self, image_shape)  # fmt: skip
        return MarchResult(hit, t, t_min, t_buffer=t_buffer)


def block_rays(o, d, shape, scale):
    """Rays through the centres of `scale x scale` pixel blocks of `shape = (B, H, W)` images:
    origins and directions averaged (directions renormalised); returns (o, d, (B, h, w))."""
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


def _march(c, k, ev, o, d, cfg: DISTMarcher, image_shape):
    """(hit, t_hit, t_min) `[N]` and t_buffer `[N, K]` (None when K = 0) with common kernels `c`, DIST
    kernels `k`, values `ev` of an SDF."""
    scales = cfg.scales if image_shape is not None else (1,)
    steps = cfg.steps_per_scale if image_shape is not None else (-1,)
    budget = cfg.march_steps
    t_prev, shape_prev = None, None
    buf_f = buf_t = None
    for i_scale, (scale, n_steps) in enumerate(zip(scales, steps)):
        if image_shape is not None:
            oo, dd, shape = block_rays(o, d, image_shape, scale)
        else:
            oo, dd, shape = o, d, None
        n = oo.shape[0]
        t_near, t_far, t_close = (oo.new_empty(n) for _ in range(3))
        active = torch.empty(n, dtype=torch.int32, device=o.device)
        c.sphere_bounds(oo, dd, t_near, t_far, t_close, active, float(cfg.bound_radius))
        t = t_near.clone()
        if t_prev is not None:
            up = oo.new_empty(shape)
            k.upsample_nearest(t_prev.reshape(shape_prev).contiguous(), up)
            t = torch.maximum(up.reshape(-1), t_near).contiguous()
        best_f = torch.full((n,), float("inf"), dtype=o.dtype, device=o.device)
        best_t = t_close.clone()
        converged = torch.zeros_like(active)
        n_steps = budget if n_steps < 0 else min(n_steps, budget)
        if cfg.buffer_size > 0 and i_scale == len(scales) - 1:  # only the final level's samples are kept
            buf_f = torch.full((n, cfg.buffer_size), float("inf"), dtype=o.dtype, device=o.device)
            buf_t = torch.full((n, cfg.buffer_size), float("nan"), dtype=o.dtype, device=o.device)
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
            sort_gathered(slots[a], pts[a], m)
            vals = ev(pts[a][:m])
            opts = (float(cfg.alpha), float(cfg.clamp), float(cfg.eps), int(step + 1 < n_steps))
            state = (vals, slots[a][:m], oo, dd, t, t_far, active, best_f, best_t, converged)
            if buf_f is None:
                k.dist_step_gather(*state, pts[b], slots[b], count, *opts)
            else:
                k.dist_step_gather_buffered(*state, buf_f, buf_t, pts[b], slots[b], count, *opts)
            m = int(count[0])
            budget -= 1
        t_prev, shape_prev = t, shape
    hit = (converged != 0) & (best_t < t_far)
    best_t = torch.where(torch.isfinite(best_f), best_t, t_close)
    return hit, best_t.clone(), best_t, buf_t
