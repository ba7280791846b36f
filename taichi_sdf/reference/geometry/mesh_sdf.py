"""Brute-force torch twin of `taichi_sdf.geometry.mesh_sdf.MeshSDF`: every point against every triangle.

Slow (O(N F)) but readable and independent of the kernels' algorithms: the closest point on a
triangle is the projection onto its plane when that falls inside the triangle, else the closest
point on one of its three edges (Ericson's region walk is not used here), and the winding number
is the exact sum of solid angles. Work is chunked over points so that memory stays near
`pairs_per_chunk` point-triangle pairs. Compute in float64 for a reference.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch


class ClosestPoints(NamedTuple):
    distance: torch.Tensor  # [N]
    closest: torch.Tensor  # [N, 3]
    face_id: torch.Tensor  # [N] int64
    barycentric: torch.Tensor  # [N, 3] weights of the face's corners 0, 1, 2


def _chunks(n_points: int, n_faces: int, pairs_per_chunk: int):
    step = max(1, pairs_per_chunk // max(n_faces, 1))
    for s in range(0, n_points, step):
        yield s, min(n_points, s + step)


def _segment(p, x, y):
    """Closest point parameter t in [0, 1] on segments x -> y ([F, 3]) for points p ([P, 1, 3])."""
    e = y - x
    ee = (e * e).sum(-1)
    t = ((p - x) * e).sum(-1) / torch.where(ee > 0, ee, torch.ones_like(ee))
    t = torch.where(ee > 0, t.clamp(0.0, 1.0), torch.zeros_like(t))
    q = x + t[..., None] * e
    return t, ((p - q) ** 2).sum(-1)


def closest_points(
    vertices: torch.Tensor,  # [V, 3]
    faces: torch.Tensor,  # [F, 3]
    points: torch.Tensor,  # [N, 3]
    pairs_per_chunk: int = 1 << 19,
) -> ClosestPoints:
    """Twin of `MeshSDF.closest_points`: unsigned distance, closest point, face index (int64) and
    barycentric weights, by testing every triangle."""
    faces = faces.long()
    a0, b0, c0 = vertices[faces[:, 0]], vertices[faces[:, 1]], vertices[faces[:, 2]]
    n0 = torch.cross(b0 - a0, c0 - a0, dim=-1)
    nn = (n0 * n0).sum(-1)
    # A triangle whose normal is this small relative to its edges is treated as a segment soup.
    scale = torch.stack([((b0 - a0) ** 2).sum(-1), ((c0 - b0) ** 2).sum(-1), ((a0 - c0) ** 2).sum(-1)]).amax(0)
    proper = nn > 1e-24 * scale * scale
    safe_nn = torch.where(proper, nn, torch.ones_like(nn))
    out_d = points.new_empty(points.shape[0])
    out_c = points.new_empty(points.shape[0], 3)
    out_f = torch.empty(points.shape[0], dtype=torch.long, device=points.device)
    out_b = points.new_empty(points.shape[0], 3)
    for s, e in _chunks(points.shape[0], faces.shape[0], pairs_per_chunk):
        p = points[s:e, None, :]  # [P, 1, 3]
        a, b, c, n = a0[None], b0[None], c0[None], n0[None]  # [1, F, 3]
        # Plane projection and its barycentrics (signed sub-triangle areas).
        h = ((p - a) * n).sum(-1) / safe_nn  # [P, F]
        q = p - h[..., None] * n
        u = (torch.cross(c - b, q - b, dim=-1) * n).sum(-1) / safe_nn
        v = (torch.cross(a - c, q - c, dim=-1) * n).sum(-1) / safe_nn
        w = 1.0 - u - v
        inside = proper & (u >= 0) & (v >= 0) & (w >= 0)
        d_face = torch.where(inside, h * h * nn, torch.full_like(h, math.inf))
        t_ab, d_ab = _segment(p, a, b)
        t_bc, d_bc = _segment(p, b, c)
        t_ca, d_ca = _segment(p, c, a)
        cand = torch.stack([d_face, d_ab, d_bc, d_ca])  # [4, P, F]
        d_tri, which = cand.min(0)  # [P, F]
        best_d, best_f = d_tri.min(1)  # [P]
        rows = torch.arange(e - s, device=points.device)
        kind = which[rows, best_f]
        zero = torch.zeros_like(best_d)
        one = torch.ones_like(best_d)
        tab, tbc, tca = t_ab[rows, best_f], t_bc[rows, best_f], t_ca[rows, best_f]
        bary = torch.stack(
            [
                torch.stack([u[rows, best_f], v[rows, best_f], w[rows, best_f]], -1),
                torch.stack([one - tab, tab, zero], -1),
                torch.stack([zero, one - tbc, tbc], -1),
                torch.stack([tca, zero, one - tca], -1),
            ]
        )[kind, rows]  # [P, 3]
        corners = torch.stack([a0[best_f], b0[best_f], c0[best_f]], 1)  # [P, 3, 3]
        out_c[s:e] = (bary[..., None] * corners).sum(1)
        out_d[s:e] = best_d.sqrt()
        out_f[s:e] = best_f
        out_b[s:e] = bary
    return ClosestPoints(out_d, out_c, out_f, out_b)


def unsigned_distance(vertices, faces, points, pairs_per_chunk: int = 1 << 19) -> torch.Tensor:
    """Twin of `MeshSDF.unsigned_distance` -> `[N]`."""
    return closest_points(vertices, faces, points, pairs_per_chunk).distance


def winding_number(
    vertices: torch.Tensor,  # [V, 3]
    faces: torch.Tensor,  # [F, 3]
    points: torch.Tensor,  # [N, 3]
    pairs_per_chunk: int = 1 << 20,
) -> torch.Tensor:
    """Twin of `MeshSDF.winding_number(exact=True)`: sum over all faces of the signed solid angle
    (Van Oosterom & Strackee) / 4 pi -> `[N]`; 1 inside a closed outward-oriented mesh, 0 outside."""
    faces = faces.long()
    a, b, c = vertices[faces[:, 0]], vertices[faces[:, 1]], vertices[faces[:, 2]]
    out = points.new_empty(points.shape[0])
    for s, e in _chunks(points.shape[0], faces.shape[0], pairs_per_chunk):
        p = points[s:e, None, :]
        x, y, z = a - p, b - p, c - p
        lx, ly, lz = x.norm(dim=-1), y.norm(dim=-1), z.norm(dim=-1)
        num = (x * torch.cross(y, z, dim=-1)).sum(-1)
        den = lx * ly * lz + (x * y).sum(-1) * lz + (y * z).sum(-1) * lx + (z * x).sum(-1) * ly
        out[s:e] = (2.0 * torch.atan2(num, den)).sum(-1) / (4.0 * math.pi)
    return out


def signed_distance(vertices, faces, points, pairs_per_chunk: int = 1 << 19) -> torch.Tensor:
    """Twin of `MeshSDF.signed_distance(sign_mode="winding")`: unsigned distance, negative where
    the exact |winding number| > 0.5 -> `[N]`."""
    d = unsigned_distance(vertices, faces, points, pairs_per_chunk)
    w = winding_number(vertices, faces, points, pairs_per_chunk)
    return torch.where(w.abs() > 0.5, -d, d)
