"""Connectivity of a triangle mesh for the mesh regularisers: unique edges, edge-adjacent face pairs
with their opposite vertices, vertex neighbours, and the cotangent weights built on them.

Everything is plain torch (any device) and derived from `faces [F, 3]` alone, except
`cotangent_weights`, which also reads the positions. The connectivity of one faces tensor is computed
once and cached while that tensor lives and is not modified in place (the key is the tensor object and
its version counter), so a fitting loop that passes the same template faces every step pays for it once.

Conventions: edges are unordered, stored as `(i, j)` with i < j, sorted lexicographically; the edge
`face_edges[f, k]` joins corners k and k + 1 of face f, and corner k + 2 is opposite it. An edge shared
by n >= 2 faces gives n (n - 1) / 2 face pairs (one for a manifold edge, none on a boundary), as
PyTorch3D's `mesh_normal_consistency` counts non-manifold edges.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch

from taichi_sdf.core.validation import FLOAT_DTYPES, check_tensor

__all__ = ["MeshTopology", "mesh_topology", "mesh_edges", "adjacent_face_pairs", "vertex_neighbours"]
__all__ += ["cotangent_weights", "check_mesh"]

INDEX_DTYPES = (torch.int32, torch.int64)
COT_AREA_EPS = 1e-6  # twice-area floor of `cotangent_weights` (PyTorch3D's cot_laplacian: area^2 >= 1e-12)


@dataclass(frozen=True)
class MeshTopology:
    """Connectivity of one faces tensor (int64 tensors on the faces' device).

    edges `[E, 2]` unique, i < j; face_edges `[F, 3]` the edge of corners (k, k+1) of each face;
    pair_faces `[P, 2]` two faces sharing an edge, pair_edges `[P, 2]` that edge (i < j),
    pair_opposite `[P, 2]` the vertex of each of the two faces opposite the shared edge;
    num_referenced `max(faces) + 1` (the least vertex count the faces need).
    """

    edges: torch.Tensor  # [E, 2]
    face_edges: torch.Tensor  # [F, 3]
    pair_faces: torch.Tensor  # [P, 2]
    pair_edges: torch.Tensor  # [P, 2]
    pair_opposite: torch.Tensor  # [P, 2]
    num_referenced: int


_CACHE: dict[int, tuple[weakref.ref, int, MeshTopology]] = {}


def _check_faces(faces) -> torch.Tensor:
    check_tensor("faces", faces, shape=(None, 3), dtype=INDEX_DTYPES, device=None, contiguous=False)
    if faces.shape[0] == 0:
        raise ValueError("faces: expected at least one triangle, got shape [0, 3]")
    return faces


def _build(faces: torch.Tensor) -> MeshTopology:
    f = faces.long()
    if int(f.min()) < 0:
        raise ValueError(f"faces: expected vertex indices >= 0, got {int(f.min())}")
    repeated = (f[:, 0] == f[:, 1]) | (f[:, 1] == f[:, 2]) | (f[:, 2] == f[:, 0])
    if bool(repeated.any()):
        k = int(repeated.nonzero()[0, 0])
        raise ValueError(f"faces: face {k} repeats a vertex ({f[k].tolist()}); edges would be undefined")
    num_faces = f.shape[0]
    corner_pairs = torch.stack([f, f.roll(-1, dims=1)], dim=-1)  # [F, 3, 2]: corners (k, k + 1)
    opposite = f.roll(-2, dims=1)  # [F, 3]: corner k + 2
    edges, inverse = torch.unique(corner_pairs.sort(dim=-1).values.reshape(-1, 2), dim=0, return_inverse=True)
    face_edges = inverse.reshape(num_faces, 3)

    # face pairs: sort the 3F (edge, face, opposite) incidences by edge; incidences i and i + d with
    # the same edge form a pair (d < the largest number of faces on one edge)
    order = torch.argsort(inverse, stable=True)
    inc_edge, inc_face = inverse[order], (order // 3)
    inc_opp = opposite.reshape(-1)[order]
    most = int(torch.bincount(inverse).max())
    first, second = [], []
    for d in range(1, most):
        same = (inc_edge[:-d] == inc_edge[d:]).nonzero().squeeze(1)
        first.append(same)
        second.append(same + d)
    i = torch.cat(first) if first else inverse.new_zeros(0)
    j = torch.cat(second) if second else inverse.new_zeros(0)
    return MeshTopology(
        edges=edges,
        face_edges=face_edges,
        pair_faces=torch.stack([inc_face[i], inc_face[j]], dim=1),
        pair_edges=edges[inc_edge[i]].reshape(-1, 2),
        pair_opposite=torch.stack([inc_opp[i], inc_opp[j]], dim=1),
        num_referenced=int(f.max()) + 1,
    )


def mesh_topology(faces: torch.Tensor) -> MeshTopology:  # faces [F, 3] int32 / int64
    """The connectivity of `faces [F, 3]` (see `MeshTopology`), cached per faces tensor.

    Raises ValueError for an empty tensor, negative indices or a face that repeats a vertex."""
    _check_faces(faces)
    key = id(faces)
    hit = _CACHE.get(key)
    if hit is not None and hit[0]() is faces and hit[1] == faces._version:
        return hit[2]
    topology = _build(faces)
    if hit is None or hit[0]() is not faces:  # first sight of this object: forget it when it is freed
        weakref.finalize(faces, _CACHE.pop, key, None)
    _CACHE[key] = (weakref.ref(faces), faces._version, topology)
    return topology


def mesh_edges(faces: torch.Tensor) -> torch.Tensor:  # faces [F, 3] -> [E, 2]
    """Unique undirected edges `[E, 2]` (int64, i < j, lexicographic order) of `faces [F, 3]`."""
    return mesh_topology(faces).edges


def adjacent_face_pairs(faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pairs of faces sharing an edge: `(pair_faces [P, 2], pair_edges [P, 2], pair_opposite [P, 2])`,
    the two face indices, the shared edge's vertices (i < j) and each face's vertex opposite that edge.
    A closed manifold mesh has P = E; boundary edges give no pair."""
    t = mesh_topology(faces)
    return t.pair_faces, t.pair_edges, t.pair_opposite


def vertex_neighbours(faces: torch.Tensor, num_vertices: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Directed edge lists of the one-ring: `(source [2E], target [2E], degree [num_vertices])`, each
    undirected edge in both directions; `degree` counts distinct neighbours (0 for unused vertices)."""
    t = mesh_topology(faces)
    if not (isinstance(num_vertices, int) and num_vertices >= t.num_referenced):
        raise ValueError(f"num_vertices: expected an int >= {t.num_referenced} (max(faces) + 1), got {num_vertices!r}")
    source = torch.cat([t.edges[:, 0], t.edges[:, 1]])
    target = torch.cat([t.edges[:, 1], t.edges[:, 0]])
    return source, target, torch.bincount(source, minlength=num_vertices)


def check_mesh(vertices, faces) -> tuple[torch.Tensor, MeshTopology]:
    """Validate `vertices [V, 3] | [B, V, 3]` (float) against `faces [F, 3]`; return the vertices as
    `[B, V, 3]` and the topology."""
    check_tensor("vertices", vertices, dtype=FLOAT_DTYPES, device=None, contiguous=False)
    if vertices.dim() not in (2, 3) or vertices.shape[-1] != 3:
        raise ValueError(f"vertices: expected shape [V, 3] or [B, V, 3], got {list(vertices.shape)}")
    _check_faces(faces)
    if faces.device != vertices.device:
        raise ValueError(f"faces: expected a tensor on {vertices.device} like vertices, got one on {faces.device}")
    topology = mesh_topology(faces)
    v = vertices if vertices.dim() == 3 else vertices[None]
    if topology.num_referenced > v.shape[1]:
        raise ValueError(f"faces: index {topology.num_referenced - 1} is out of range for {v.shape[1]} vertices")
    return v, topology


def cotangent_weights(
    vertices: torch.Tensor,  # [V, 3] or [B, V, 3]
    faces: torch.Tensor,  # [F, 3]
) -> torch.Tensor:
    """Cotangent weights `w_ij = cot(alpha_ij) + cot(beta_ij)` of the edges of `mesh_edges(faces)`,
    `[E]` (or `[B, E]` for batched vertices): the cotangents of the angles opposite edge ij in its
    faces (one angle on a boundary edge, every face's for a non-manifold one); no factor 1/2.

    cot = (u . v) / |u x v| at the corner with edge vectors u, v. A degenerate (zero-area) triangle
    would give an infinite cotangent, so |u x v| (twice the area) is clamped below at COT_AREA_EPS =
    1e-6 (PyTorch3D's `cot_laplacian` clamps area^2 at 1e-12); obtuse angles give negative weights.
    Differentiable w.r.t. the vertices (the clamp's gradient is 0 where it binds)."""
    v, topology = check_mesh(vertices, faces)
    f = faces.long()
    corner = v[:, f]  # [B, F, 3, 3]: corner k of each face
    a, b, c = corner, corner.roll(-1, dims=2), corner.roll(-2, dims=2)  # corners k, k + 1, k + 2
    u, w = a - c, b - c  # the two edges at corner k + 2, the corner opposite edge (k, k + 1)
    twice_area = torch.linalg.cross(u, w, dim=-1).square().sum(-1).clamp_min(COT_AREA_EPS**2).sqrt()
    cot = (u * w).sum(-1) / twice_area  # [B, F, 3]
    out = cot.new_zeros(v.shape[0], topology.edges.shape[0])
    out = out.index_add(1, topology.face_edges.reshape(-1), cot.reshape(v.shape[0], -1))
    return out if vertices.dim() == 3 else out[0]
