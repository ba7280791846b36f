"""Torch twins of `taichi_sdf.kernels.implicit.sdf_lib`: the same functions, names and argument order, on batches.

Points are `[N, 3]` tensors (any `[..., 3]` works); scalar parameters are Python floats or tensors
broadcastable to `[N]`, vector parameters tensors broadcastable to `[N, 3]` (a `[3]` tensor or a
sequence of 3 floats), rotation matrices `[3, 3]` or `[N, 3, 3]`. Distances come back as `[N]`,
transformed points as `[N, 3]`. Everything is differentiable by torch autograd, with the same
finite subgradients as the kernels at singular points (see `length`).
"""

from __future__ import annotations

import torch


def _param(x, like: torch.Tensor) -> torch.Tensor:
    # as_tensor keeps a tensor of the right dtype/device as is, so gradients reach it.
    return torch.as_tensor(x, dtype=like.dtype, device=like.device)


def length(v: torch.Tensor) -> torch.Tensor:
    """Norm over the last dim, `[..., D] -> [...]`, with gradient 0 (not NaN) at the zero vector."""
    l2 = (v * v).sum(-1)
    pos = l2 > 0
    return torch.where(pos, torch.sqrt(torch.where(pos, l2, torch.ones_like(l2))), torch.zeros_like(l2))


def _max3(q: torch.Tensor) -> torch.Tensor:
    # Same association as the kernel (max(q0, max(q1, q2))) so subgradients at ties match better.
    return torch.maximum(q[..., 0], torch.maximum(q[..., 1], q[..., 2]))


# -- primitives ---------------------------------------------------------------------------------


def sd_sphere(p: torch.Tensor, radius) -> torch.Tensor:
    """Twin of `sd_sphere`: `p [N, 3]`, radius -> `[N]`."""
    return length(p) - _param(radius, p)


def sd_box(p: torch.Tensor, half_size) -> torch.Tensor:
    """Twin of `sd_box`: `p [N, 3]`, half_size `[3]` or `[N, 3]` -> `[N]`."""
    q = p.abs() - _param(half_size, p)
    return length(q.clamp(min=0.0)) + _max3(q).clamp(max=0.0)


def sd_round_box(p: torch.Tensor, half_size, radius) -> torch.Tensor:
    """Twin of `sd_round_box`: `p [N, 3]`, half_size `[3]`/`[N, 3]` (outer size), radius -> `[N]`."""
    r = _param(radius, p)
    q = p.abs() - _param(half_size, p) + r.unsqueeze(-1)
    return length(q.clamp(min=0.0)) + _max3(q).clamp(max=0.0) - r


def sd_torus(p: torch.Tensor, major_radius, minor_radius) -> torch.Tensor:
    """Twin of `sd_torus` (ring in the xz-plane): `p [N, 3]` -> `[N]`."""
    q = torch.stack([length(p[..., 0::2]) - _param(major_radius, p), p[..., 1]], -1)
    return length(q) - _param(minor_radius, p)


def sd_capsule(p: torch.Tensor, a, b, radius) -> torch.Tensor:
    """Twin of `sd_capsule`: `p [N, 3]`, segment ends a, b `[3]`/`[N, 3]`, radius -> `[N]`."""
    a, b = _param(a, p), _param(b, p)
    pa, ba = p - a, b - a
    h = ((pa * ba).sum(-1) / (ba * ba).sum(-1)).clamp(0.0, 1.0)
    return length(pa - ba * h.unsqueeze(-1)) - _param(radius, p)


def sd_cylinder(p: torch.Tensor, half_height, radius) -> torch.Tensor:
    """Twin of `sd_cylinder` (capped, axis y): `p [N, 3]` -> `[N]`."""
    d0 = length(p[..., 0::2]) - _param(radius, p)
    d1 = p[..., 1].abs() - _param(half_height, p)
    outside = length(torch.stack([d0.clamp(min=0.0), d1.clamp(min=0.0)], -1))
    return torch.maximum(d0, d1).clamp(max=0.0) + outside


def sd_plane(p: torch.Tensor, normal, offset) -> torch.Tensor:
    """Twin of `sd_plane`: dot(p, normal) + offset, `p [N, 3]`, normal `[3]`/`[N, 3]` -> `[N]`."""
    return (p * _param(normal, p)).sum(-1) + _param(offset, p)


# -- CSG ----------------------------------------------------------------------------------------


def op_union(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Twin of `op_union`: min(a, b), `[N]`."""
    return torch.minimum(a, b)


def op_intersection(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Twin of `op_intersection`: max(a, b), `[N]`."""
    return torch.maximum(a, b)


def op_subtraction(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Twin of `op_subtraction`: a minus b = max(a, -b), `[N]`."""
    return torch.maximum(a, -b)


def op_smooth_union(a: torch.Tensor, b: torch.Tensor, k) -> torch.Tensor:
    """Twin of `op_smooth_union` (polynomial smooth min, width k > 0), `[N]`."""
    k = _param(k, a)
    h = (0.5 + 0.5 * (b - a) / k).clamp(0.0, 1.0)
    return b + (a - b) * h - k * h * (1.0 - h)


def op_smooth_intersection(a: torch.Tensor, b: torch.Tensor, k) -> torch.Tensor:
    """Twin of `op_smooth_intersection` (polynomial smooth max, width k > 0), `[N]`."""
    k = _param(k, a)
    h = (0.5 - 0.5 * (b - a) / k).clamp(0.0, 1.0)
    return b + (a - b) * h + k * h * (1.0 - h)


def op_smooth_subtraction(a: torch.Tensor, b: torch.Tensor, k) -> torch.Tensor:
    """Twin of `op_smooth_subtraction`: smooth max(a, -b), `[N]`."""
    return op_smooth_intersection(a, -b, k)


# -- transforms ---------------------------------------------------------------------------------


def translate(p: torch.Tensor, offset) -> torch.Tensor:
    """Twin of `translate`: p - offset, `[N, 3]`."""
    return p - _param(offset, p)


def rotate(p: torch.Tensor, R) -> torch.Tensor:
    """Twin of `rotate`: R^T p for `p [N, 3]`, `R [3, 3]` or `[N, 3, 3]` -> `[N, 3]`."""
    R = _param(R, p)
    return (R.transpose(-1, -2) @ p.unsqueeze(-1)).squeeze(-1)


def rotate_axis_angle(p: torch.Tensor, axis_angle) -> torch.Tensor:
    """Twin of `rotate_axis_angle`: R^T p with R = exp([w]_x), `p [N, 3]`, w `[3]`/`[N, 3]`."""
    w = _param(axis_angle, p)
    t2 = (w * w).sum(-1, keepdim=True)
    small = t2 < 1e-4
    t = torch.sqrt(torch.where(small, torch.ones_like(t2), t2))
    sinc_half = torch.sin(0.5 * t) / (0.5 * t)
    a = torch.where(small, 1.0 - t2 / 6.0 * (1.0 - t2 / 20.0), torch.sin(t) / t)
    b = torch.where(small, 0.5 - t2 / 24.0 * (1.0 - t2 / 30.0), 0.5 * sinc_half**2)
    c = 1.0 - t2 * b
    w = w.expand_as(p)
    return c * p - a * torch.linalg.cross(w, p, dim=-1) + b * (w * p).sum(-1, keepdim=True) * w


def scale_point(p: torch.Tensor, s) -> torch.Tensor:
    """Twin of `scale_point`: p / s; multiply the distance evaluated there by s."""
    s = _param(s, p)
    return p / (s.unsqueeze(-1) if s.dim() > 0 else s)
