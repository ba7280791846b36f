"""The class-mean shape: the single-view baseline that predicts one shape per class, whatever the image.

Single-view reconstruction papers score a network against shapes that ignore the input's details: the
class-mean shape and the nearest training shape (Tatarchenko et al., "What Do Single-view 3D
Reconstruction Networks Learn?", CVPR 2019, find both hard to beat on ShapeNet). The mean here is the
mean occupancy of the class's training meshes on a grid, thresholded at one half (a voxel is inside
when at least half of the training shapes occupy it), meshed by marching cubes. Occupancy is the
generalised winding number of each mesh (`MeshSDF.winding_number`), so meshes with small holes or
overlapping parts are handled as the dataset generator's occupancies are.

A fixed threshold of one half erases the parts whose place varies within a class (a table top at
varying heights, swept wings): the voxel mean of thin parts stays below one half everywhere. The
default threshold is therefore the one whose mean shape has the highest mean volumetric IoU with the
training shapes themselves (chosen on training data only), the strongest single shape by that measure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import trimesh

from taichi_sdf.geometry.mesh_sdf import MeshSDF
from taichi_sdf.geometry.meshing import grid_marching_cubes

__all__ = ["occupancy_grids", "best_threshold", "class_mean_mesh"]


def grid_corners(resolution: int, bound: float) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Grid corners `[R^3, 3]` spanning [-bound, bound]^3 (x slowest), the grid origin and step."""
    axis = torch.linspace(-bound, bound, resolution, dtype=torch.float32)
    points = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    step = 2.0 * bound / (resolution - 1)
    return points, np.full(3, -bound), np.full(3, step)


def occupancy_grids(meshes: Sequence[trimesh.Trimesh], resolution: int = 64, bound: float = 0.55) -> np.ndarray:
    """`[K, R, R, R]` bool: whether each grid corner of [-bound, bound]^3 (DVR's unit cube with its 0.1
    padding by default) lies inside each of the K meshes (winding number > 0.5)."""
    if len(meshes) == 0:
        raise ValueError("meshes: expected at least one mesh, got none")
    if not (isinstance(resolution, int) and resolution >= 2):
        raise ValueError(f"resolution: expected an int >= 2, got {resolution!r}")
    if not bound > 0:
        raise ValueError(f"bound: expected a positive float, got {bound!r}")
    points, _, _ = grid_corners(resolution, bound)
    grids = np.empty((len(meshes), resolution, resolution, resolution), dtype=bool)
    for k, mesh in enumerate(meshes):
        query = MeshSDF(mesh.vertices, mesh.faces)
        inside = query.winding_number(points.to(query.vertices.device)).abs() > 0.5
        grids[k] = inside.cpu().numpy().reshape(resolution, resolution, resolution)
    return grids


def best_threshold(grids: np.ndarray, candidates: Sequence[float] = tuple(np.arange(0.05, 0.951, 0.05))) -> tuple[float, float]:
    """(threshold, mean IoU): the share among `candidates` whose thresholded mean of `grids [K, ...]`
    has the highest mean IoU with the K grids themselves (ties: the higher threshold)."""
    share = grids.mean(0)
    best = (0.5, -1.0)
    for t in candidates:
        shape = share >= t
        inter = (grids & shape).reshape(len(grids), -1).sum(1)
        union = (grids | shape).reshape(len(grids), -1).sum(1)
        iou = float(np.mean(inter / np.maximum(union, 1)))
        if iou >= best[1]:
            best = (float(t), iou)
    return best


def class_mean_mesh(meshes: Sequence[trimesh.Trimesh], resolution: int = 64, bound: float = 0.55,
                    threshold: float | None = None) -> trimesh.Trimesh:  # fmt: skip
    """The class-mean shape of `meshes` (one class's training objects, in their shared object frame):
    marching cubes of their mean occupancy at `threshold` (None: `best_threshold`), closed at the
    grid's border. The threshold used is in `mesh.metadata["threshold"]`.

    Raises ValueError when no grid corner reaches `threshold` (the shapes share no common inside)."""
    if threshold is not None and not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold: expected a share in (0, 1) or None, got {threshold!r}")
    grids = occupancy_grids(meshes, resolution, bound)
    if threshold is None:
        threshold = best_threshold(grids)[0]
    share = grids.mean(0, dtype=np.float32)
    if not (share >= threshold).any():
        raise ValueError(f"meshes: no point of the grid is inside {threshold:.0%} of the {len(meshes)} shapes; "
                         "the class has no mean shape at this threshold")  # fmt: skip
    padded = np.pad(share, 1, constant_values=0.0)  # outside beyond the grid: the mesh is closed
    _, origin, step = grid_corners(resolution, bound)
    # Shares are multiples of 1/K: the iso-level midway below the first one >= threshold puts the surface
    # between "inside" (share >= threshold) and "outside" corners, never through a corner's exact value.
    k = math.ceil(threshold * len(meshes) - 1e-9)
    level = (k - 0.5) / len(meshes)
    verts, faces = grid_marching_cubes(padded, level, origin - step, step, inside="positive")
    mesh = trimesh.Trimesh(verts, faces, process=False)
    mesh.metadata["threshold"] = float(threshold)
    return mesh
