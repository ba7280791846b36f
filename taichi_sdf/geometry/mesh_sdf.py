"""Signed distance to a triangle mesh: exact closest points through a linear BVH and a sign from the
generalised winding number (robust to holes) or from angle-weighted pseudo-normals (watertight
meshes only), all in Taichi kernels (`kernels/geometry/mesh_distance.py`).

    mesh = MeshSDF(vertices, faces)            # builds the BVH once
    sdf, closest, face_id, normal = mesh.query(points)
    d = mesh.unsigned_distance(points)
    w = mesh.winding_number(points)

Conventions: the SDF is negative inside. "Inside" means |winding number| > 0.5, so a mesh whose
faces are all flipped still gets the right sign. `normal` is the unit gradient of the SDF.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from taichi_sdf.core import runtime
from taichi_sdf.core.dtypes import dtype_name
from taichi_sdf.core.runtime import serial_torch
from taichi_sdf.core.validation import FLOAT_DTYPES, check_finite, check_tensor
from taichi_sdf.kernels.geometry import mesh_distance as kmd

SIGN_MODES = ("winding", "pseudonormal")
# The winding-number sign is first taken at this (cheaper) accuracy and recomputed at `winding_beta`
# only where the estimate is ambiguous (0.25 < |w| < 0.75).
_SIGN_BETA = 1.25
# Default splitting of long faces (see MeshSDF's `split_edge`): faces with an edge longer than this
# fraction of the bounding-box diagonal are bisected, but only when there are more than
# _SPLIT_MIN_LONG of them (a few long faces are cheaper to evaluate exactly than to split) and up
# to 4 F + 65536 pieces (longest first).
_SPLIT_FRACTION = 1.0 / 32.0
_SPLIT_MIN_LONG = 32
_SPLIT_EXTRA = 65536


class SDFQuery(NamedTuple):
    """Result of `MeshSDF.query`."""

    sdf: torch.Tensor  # [N] signed distance, negative inside
    closest: torch.Tensor  # [N, 3] closest point on the mesh
    face_id: torch.Tensor  # [N] int64 index of the face holding the closest point
    normal: torch.Tensor  # [N, 3] unit SDF gradient (face normal for points on the surface)


class ClosestPoints(NamedTuple):
    """Result of `MeshSDF.closest_points`."""

    distance: torch.Tensor  # [N] unsigned distance
    closest: torch.Tensor  # [N, 3]
    face_id: torch.Tensor  # [N] int64
    barycentric: torch.Tensor  # [N, 3] weights of the face's corners faces[face_id, 0..2]


def _quantisation(points: torch.Tensor) -> tuple[list[float], list[float]]:
    """(lo, scale) mapping the points' bounding box onto [0, 1024)^3 for Morton codes."""
    lo = points.amin(0)
    ext = points.amax(0) - lo
    scale = torch.where(ext > 0, 1024.0 / torch.where(ext > 0, ext, torch.ones_like(ext)), torch.zeros_like(ext))
    return lo.tolist(), scale.tolist()


def split_long_triangles(
    corners: torch.Tensor,  # [F, 3, 3]
    max_edge: float,
    max_pieces: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Longest-edge bisection of every triangle with an edge longer than `max_edge`, keeping the
    orientation, until none is left or the piece count would exceed `max_pieces`.

    Returns (pieces [P, 3, 3], face [P] int64 original face, bary [P, 3, 3] barycentrics of each
    piece's corners in its face; all dyadic, so exact in floating point)."""
    n = corners.shape[0]
    face = torch.arange(n, device=corners.device)
    bary = torch.eye(3, dtype=corners.dtype, device=corners.device).expand(n, 3, 3)
    done: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    total = n
    while corners.shape[0] > 0:
        edges = (corners.roll(-1, dims=1) - corners).norm(dim=-1)  # [P, 3]: edge k from corner k to k+1
        longest, k = edges.max(1)
        big = longest > max_edge
        n_big = int(big.sum())
        budget = max_pieces - total
        if n_big > budget:  # split only the longest pieces that the budget allows, then stop
            big = torch.zeros_like(big)
            if budget > 0:
                big[torch.topk(longest, budget).indices] = True
            n_big = budget
        if n_big <= 0:
            done.append((corners, face, bary))
            break
        done.append((corners[~big], face[~big], bary[~big]))
        c, b, fb, k = corners[big], bary[big], face[big], k[big]
        # Rotate each triangle so that its longest edge runs from corner 0 to corner 1.
        idx = (k[:, None] + torch.arange(3, device=k.device)) % 3
        c = torch.gather(c, 1, idx[..., None].expand(-1, -1, 3))
        b = torch.gather(b, 1, idx[..., None].expand(-1, -1, 3))
        cm, bm = 0.5 * (c[:, 0] + c[:, 1]), 0.5 * (b[:, 0] + b[:, 1])
        corners = torch.cat([torch.stack([c[:, 0], cm, c[:, 2]], 1), torch.stack([cm, c[:, 1], c[:, 2]], 1)])
        bary = torch.cat([torch.stack([b[:, 0], bm, b[:, 2]], 1), torch.stack([bm, b[:, 1], b[:, 2]], 1)])
        face = torch.cat([fb, fb])
        total += n_big
    return tuple(torch.cat(parts) for parts in zip(*done))  # type: ignore[return-value]


def _as_tensor(name: str, value, dtype: torch.dtype | None, device: torch.device) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(np.ascontiguousarray(value))
    elif not isinstance(value, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor or numpy array, got {type(value).__name__}")
    return value.detach().to(device=device, dtype=dtype if dtype is not None else value.dtype).contiguous()


class MeshSDF:
    """Distance queries against one triangle mesh; the BVH is built once in the constructor.

    Args:
        vertices: `[V, 3]` float vertex positions (torch tensor on any device, or numpy array); they
            are copied to the runtime device (`taichi_sdf.device()`) in `dtype`.
        faces: `[F, 3]` integer vertex indices, F >= 1, each in [0, V).
        sign_mode: default sign of `query`/`signed_distance`: "winding" (the default: inside where
            the generalised winding number |w| > 0.5; robust to holes, overlapping or
            self-intersecting parts, duplicated faces and all-flipped meshes) or "pseudonormal"
            (sign of (p - closest) . angle-weighted pseudo-normal of the closest face, edge or
            vertex; cheaper and exact for watertight, manifold, consistently oriented meshes, but
            wrong where the closest face is an internal face of overlapping parts, a flipped face
            or next to a hole).
        winding_beta: accuracy of `winding_number`: a BVH node is replaced by its dipole when the
            query is farther than `winding_beta` times the node's radius (Barill et al. 2018 use
            2). Larger is more accurate and slower; <= 0 means exact. The winding sign of `query`
            is first taken with 1.25 (max error ~0.2 on test meshes) and recomputed with
            `winding_beta` where that estimate is ambiguous (0.25 < |w| < 0.75).
        dtype: torch.float32 (default) or torch.float64 for all computations.
        chunk_size: queries are processed in chunks of this many points.
        split_edge: triangles with an edge longer than this are split (longest-edge bisection)
            into pieces for the BVH, when more than 32 faces are that long and up to 4 F + 65536
            pieces; default 1/32 of the bounding-box diagonal, `math.inf` turns splitting off. Results are the same either way (solid angles add up exactly, closest
            points map back to the original faces), but without it a CAD-like mesh of a few long
            faces costs O(F) per query: long faces can be neither pruned nor approximated.
    """

    def __init__(
        self,
        vertices,  # [V, 3]
        faces,  # [F, 3]
        *,
        sign_mode: str = "winding",
        winding_beta: float = 2.0,
        dtype: torch.dtype = torch.float32,
        chunk_size: int = 1 << 20,
        split_edge: float | None = None,
    ) -> None:
        if dtype not in FLOAT_DTYPES:
            raise ValueError(f"dtype: expected torch.float32 or torch.float64, got {dtype}")
        if sign_mode not in SIGN_MODES:
            raise ValueError(f"sign_mode: expected one of {SIGN_MODES}, got {sign_mode!r}")
        if not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size: expected a positive int, got {chunk_size!r}")
        if not math.isfinite(float(winding_beta)):
            raise ValueError(f"winding_beta: expected a finite float, got {winding_beta!r}")
        dev = runtime.device()
        with serial_torch(dev):  # see serial_torch: the checks below are many small torch ops
            v = _as_tensor("vertices", vertices, None, dev)
            f = _as_tensor("faces", faces, None, dev)
            if not v.is_floating_point():
                raise ValueError(f"vertices: expected a floating dtype, got {str(v.dtype).replace('torch.', '')}")
            if f.is_floating_point() or f.dtype == torch.bool or f.is_complex():
                raise ValueError(f"faces: expected an integer dtype, got {str(f.dtype).replace('torch.', '')}")
            check_tensor("vertices", v, shape=(None, 3))
            check_tensor("faces", f, shape=(None, 3))
            if v.shape[0] == 0:
                raise ValueError("vertices: the mesh has no vertices")
            if f.shape[0] == 0:
                raise ValueError("faces: the mesh has no faces")
            check_finite("vertices", v)
            lo_idx, hi_idx = int(f.min()), int(f.max())
            if lo_idx < 0 or hi_idx >= v.shape[0]:
                raise ValueError(
                    f"faces: vertex indices must lie in [0, {v.shape[0]}) (V = {v.shape[0]} vertices), "
                    f"got values in [{lo_idx}, {hi_idx}]"
                )
            if f.shape[0] >= 2**30:
                raise ValueError(f"faces: at most 2^30 faces are supported, got {f.shape[0]}")
            self.dtype = dtype
            self.sign_mode = sign_mode
            self.winding_beta = float(winding_beta)
            self.chunk_size = chunk_size
            self.vertices = check_finite("vertices", v.to(dtype).contiguous())  # [V, 3] (finite after the cast too)
            self.faces = f.to(torch.int64).contiguous()  # [F, 3]
            self._dt = dtype_name(dtype)
            self._pn: torch.Tensor | None = None
            if split_edge is None:
                diagonal = float((self.vertices.amax(0) - self.vertices.amin(0)).norm())
                split_edge = diagonal * _SPLIT_FRACTION if diagonal > 0 else math.inf
            if not float(split_edge) > 0:
                raise ValueError(f"split_edge: expected a positive float, got {split_edge!r}")
            self.split_edge = float(split_edge)
            self._build()

    # -- construction ----------------------------------------------------------------------------

    @property
    def num_faces(self) -> int:
        return int(self.faces.shape[0])

    @property
    def num_pieces(self) -> int:
        """Triangles in the BVH after splitting long faces (see `split_edge`)."""
        return int(self._tris.shape[0])

    def _build(self) -> None:
        runtime.ensure_initialized()
        with serial_torch(self.vertices.device):
            self._build_tree()

    def _build_tree(self) -> None:
        v, dt = self.vertices, self._dt
        morton, init_leaves, refit_level, to_preorder, refit_all = kmd.build_kernels(dt)
        build_tree, node_order = kmd.tree_kernels()
        dev = v.device
        corners = v[self.faces]  # [F, 3, 3]
        n_long = int(((corners.roll(-1, dims=1) - corners).norm(dim=-1).amax(1) > self.split_edge).sum())
        max_pieces = 4 * self.num_faces + _SPLIT_EXTRA if n_long > _SPLIT_MIN_LONG else 0
        corners, piece_face, piece_bary = split_long_triangles(corners, self.split_edge, max_pieces)
        n = corners.shape[0]
        m = 2 * n - 1
        corners = corners.reshape(n, 9).contiguous()
        centroids = (corners[:, 0:3] + corners[:, 3:6] + corners[:, 6:9]) / 3.0
        lo, scale = _quantisation(centroids)
        codes = torch.empty(n, dtype=torch.int32, device=dev)
        morton(centroids.contiguous(), codes, *lo, *scale)
        codes, order = torch.sort(codes)
        order = order.to(torch.int32).contiguous()
        codes = codes.contiguous()
        # Karras-numbered tree, refitted bottom-up one level per launch, then copied in pre-order.
        nodes_k = torch.empty(m, 4, dtype=torch.int32, device=dev)
        parent = torch.empty(m, dtype=torch.int32, device=dev)
        build_tree(codes, nodes_k, parent)
        self._tris = torch.empty(n, 16, dtype=self.dtype, device=dev)  # [n, 16] corners, flag, sphere; Morton order
        self._tri_face = torch.empty(n, dtype=torch.int32, device=dev)  # [n] original face index
        self._tri_bary = piece_bary.reshape(n, 9)[order.long()].contiguous()  # [n, 9] corners in face barycentrics
        box_k = torch.empty(m, 6, dtype=self.dtype, device=dev)
        wn_k = torch.empty(m, 8, dtype=self.dtype, device=dev)
        init_leaves(corners, piece_face.to(torch.int32).contiguous(), order, self._tris, self._tri_face, box_k, wn_k)
        depth = torch.empty(m, dtype=torch.int32, device=dev)
        pre = torch.empty(m, dtype=torch.int32, device=dev)
        node_order(nodes_k, parent, depth, pre)
        self.depth = 0
        if n > 1:
            inner = depth[: n - 1]
            self.depth = int(inner.max()) + 1  # levels of internal nodes; leaves sit at most one deeper
            if self.depth + 1 >= kmd.STACK_SIZE:
                raise RuntimeError(f"BVH depth {self.depth} exceeds the traversal stack ({kmd.STACK_SIZE})")
            if dev.type == "cpu":
                # One launch (a launch per level costs a thread-pool wake-up each, slow under load).
                refit_all(nodes_k, parent, torch.zeros(m, dtype=torch.int32, device=dev), box_k, wn_k)
            else:
                by_depth = torch.argsort(inner, descending=True, stable=True).to(torch.int32).contiguous()
                counts = torch.bincount(inner.long()).tolist()  # internal nodes per level, root first
                start = 0
                for count in reversed(counts):  # deepest level first
                    refit_level(by_depth, start, count, nodes_k, box_k, wn_k)
                    start += count
        self._nodes = torch.empty(m, 4, dtype=torch.int32, device=dev)  # [M, 4] left, right, first, last
        self._box = torch.empty(m, 6, dtype=self.dtype, device=dev)  # [M, 6] lo, hi
        self._wn = torch.empty(m, 8, dtype=self.dtype, device=dev)  # [M, 8] centre, radius, area vector, area
        to_preorder(pre, nodes_k, box_k, wn_k, self._nodes, self._box, self._wn)

    def _pseudonormals(self) -> torch.Tensor:
        """`[F, 21]` per face: unit face normal, angle-weighted pseudo-normals of
        corners a, b, c, then of edges ab, bc, ca (sums of the adjacent faces' unit normals)."""
        if self._pn is None:
            v, f = self.vertices.double(), self.faces
            a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
            fn = torch.nn.functional.normalize(torch.cross(b - a, c - a, dim=-1), dim=-1)

            def angle(x, y):
                return torch.atan2(torch.cross(x, y, dim=-1).norm(dim=-1), (x * y).sum(-1))

            angles = torch.stack([angle(b - a, c - a), angle(c - b, a - b), angle(a - c, b - c)], 1)  # [F, 3]
            vn = torch.zeros_like(v)
            vn.index_add_(0, f.reshape(-1), (angles[..., None] * fn[:, None, :]).reshape(-1, 3))
            vn = torch.nn.functional.normalize(vn, dim=-1)
            edges = torch.stack([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]], 1)  # [F, 3, 2]
            key = edges.amin(-1) * v.shape[0] + edges.amax(-1)
            uniq, inverse = torch.unique(key.reshape(-1), return_inverse=True)
            en = torch.zeros(uniq.shape[0], 3, dtype=v.dtype, device=v.device)
            en.index_add_(0, inverse, fn[:, None, :].expand(-1, 3, -1).reshape(-1, 3))
            en = torch.nn.functional.normalize(en, dim=-1)[inverse].reshape(-1, 3, 3)  # [F, 3, 3]
            pn = torch.cat([fn[:, None, :], vn[f], en], 1).reshape(-1, 21)  # [F, 21]
            self._pn = pn.to(self.dtype).contiguous()
        return self._pn

    # -- queries ---------------------------------------------------------------------------------

    def _check_points(self, points) -> torch.Tensor:
        check_tensor("points", points, shape=(None, 3), dtype=FLOAT_DTYPES, contiguous=False)
        with serial_torch(points.device):
            check_finite("points", points)
            return points.detach().to(self.dtype).contiguous()

    def _morton_order(self, points: torch.Tensor) -> torch.Tensor:
        """`[N] int32` permutation that sorts the points along a Morton curve."""
        if points.shape[0] < 2:
            return torch.zeros(points.shape[0], dtype=torch.int32, device=points.device)
        codes = torch.empty(points.shape[0], dtype=torch.int32, device=points.device)
        lo, scale = _quantisation(points)
        kmd.point_morton_kernel(self._dt)(points, codes, *lo, *scale)
        return torch.sort(codes)[1].to(torch.int32)

    def _run_query(self, points: torch.Tensor, mode: str):
        with serial_torch(points.device):
            return self._run_query_serial_torch(points, mode)

    def _run_query_serial_torch(self, points: torch.Tensor, mode: str):
        n = points.shape[0]
        dev = points.device
        sdf = points.new_empty(n)
        closest = points.new_empty(n, 3)
        face_id = torch.empty(n, dtype=torch.int32, device=dev)
        bary = points.new_empty(n, 3)
        normal = points.new_empty(n, 3)
        winding = points.new_empty(n if mode == "winding" else 1)
        pn = self._pseudonormals() if mode == "pseudonormal" else points.new_zeros(1, 21)
        kernel = kmd.query_kernel(self._dt, mode)
        beta = self.winding_beta
        beta_fast = min(beta, _SIGN_BETA) if beta > 0 else beta
        for s in range(0, n, self.chunk_size):
            e = min(n, s + self.chunk_size)
            pts = points[s:e]
            order = self._morton_order(pts)
            w = winding[s:e] if mode == "winding" else winding
            kernel(
                pts, order, self._box, self._nodes, self._tris, self._tri_face, self._tri_bary, self._wn, pn,
                sdf[s:e], closest[s:e], face_id[s:e], bary[s:e], normal[s:e], w, beta_fast, beta,
            )  # fmt: skip
        return sdf, closest, face_id.long(), bary, normal

    def query(self, points: torch.Tensor, sign_mode: str | None = None) -> SDFQuery:  # points: [N, 3]
        """Signed distance, closest point, closest face and SDF normal of each point.

        Args:
            points: `[N, 3]` float tensor on the runtime device (cast to the mesh's dtype; all
                outputs are in the mesh's dtype).
            sign_mode: "winding" | "pseudonormal"; None uses the mesh's default.

        Returns:
            `SDFQuery(sdf [N], closest [N, 3], face_id [N] int64, normal [N, 3])`; sdf < 0 inside.
            Not differentiable (use `signed_distance` for gradients w.r.t. points).
        """
        mode = self.sign_mode if sign_mode is None else sign_mode
        if mode not in SIGN_MODES:
            raise ValueError(f"sign_mode: expected one of {SIGN_MODES}, got {mode!r}")
        p = self._check_points(points)
        sdf, closest, face_id, _, normal = self._run_query(p, mode)
        return SDFQuery(sdf, closest, face_id, normal)

    def closest_points(self, points: torch.Tensor) -> ClosestPoints:  # points: [N, 3]
        """Unsigned distance, closest point, face index and barycentric weights -> `ClosestPoints`."""
        p = self._check_points(points)
        dist, closest, face_id, bary, _ = self._run_query(p, "none")
        return ClosestPoints(dist, closest, face_id, bary)

    def unsigned_distance(self, points: torch.Tensor) -> torch.Tensor:  # points: [N, 3]
        """`[N]` distance from each point to the mesh."""
        return self.closest_points(points).distance

    def signed_distance(self, points: torch.Tensor, sign_mode: str | None = None) -> torch.Tensor:
        """`[N]` signed distance (negative inside, in the mesh's dtype), differentiable w.r.t.
        `points` (the gradient is the `normal` of `query`, exact wherever the SDF is
        differentiable, i.e. off the surface and off the medial axis)."""
        mode = self.sign_mode if sign_mode is None else sign_mode
        if mode not in SIGN_MODES:
            raise ValueError(f"sign_mode: expected one of {SIGN_MODES}, got {mode!r}")
        p = self._check_points(points)
        if not (torch.is_grad_enabled() and points.requires_grad):
            return self._run_query(p, mode)[0]
        return _SignedDistance.apply(self, mode, points)

    __call__ = signed_distance

    def winding_number(self, points: torch.Tensor, exact: bool = False) -> torch.Tensor:  # points: [N, 3]
        """`[N]` generalised winding number: ~1 inside a closed outward-oriented mesh, ~0 outside,
        fractional near holes. `exact=True` sums every triangle's solid angle (O(F) per point);
        otherwise far BVH nodes use their dipole approximation (see `winding_beta`)."""
        p = self._check_points(points)
        out = p.new_empty(p.shape[0])
        kernel = kmd.winding_kernel(self._dt)
        beta = -1.0 if exact else self.winding_beta
        for s in range(0, p.shape[0], self.chunk_size):
            e = min(p.shape[0], s + self.chunk_size)
            pts = p[s:e]
            kernel(pts, self._morton_order(pts), self._nodes, self._tris, self._wn, out[s:e], beta)
        return out

    def __repr__(self) -> str:
        return (
            f"MeshSDF(V={self.vertices.shape[0]}, F={self.num_faces}, sign_mode={self.sign_mode!r}, "
            f"dtype={str(self.dtype).replace('torch.', '')}, device={self.vertices.device})"
        )


class _SignedDistance(torch.autograd.Function):
    @staticmethod
    def forward(ctx, mesh: MeshSDF, mode: str, points: torch.Tensor):
        p = points.detach().to(mesh.dtype).contiguous()
        sdf, _, _, _, normal = mesh._run_query(p, mode)
        ctx.save_for_backward(normal)
        ctx.in_dtype = points.dtype
        return sdf

    @staticmethod
    @once_differentiable  # the normal is a kernel output: a second derivative (curvature) would be silently 0
    def backward(ctx, grad_sdf: torch.Tensor):
        (normal,) = ctx.saved_tensors
        return None, None, (grad_sdf[:, None] * normal).to(ctx.in_dtype)
