"""Torch twins of `taichi_sdf.kernels.implicit.scenes`: `(points [N, 3], params [P]) -> [N]`."""

from __future__ import annotations

import torch

from taichi_sdf.reference.implicit import sdf_lib as L


def sphere(p: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    return L.sd_sphere(L.translate(p, params[:3]), params[3])


def csg(p: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    s, R, rc = params[0], params[1], params[2]
    body = L.op_intersection(L.sd_round_box(p, torch.stack([s, s, s]), 0.0625), L.sd_sphere(p, R))
    along_y = L.sd_cylinder(p, 1.0, rc)
    along_x = L.sd_cylinder(p[:, [1, 0, 2]], 1.0, rc)
    along_z = L.sd_cylinder(p[:, [0, 2, 1]], 1.0, rc)
    return L.op_subtraction(body, L.op_union(along_y, L.op_union(along_x, along_z)))


def sphere_box(p: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    a = L.sd_sphere(L.translate(p, [-0.25, 0.0, 0.0]), params[0])
    b = L.sd_box(L.translate(p, [0.3125, 0.0, 0.0]), torch.stack([params[1]] * 3))
    return L.op_union(a, b)


def blobs(p: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    torus = L.sd_torus(p, params[0], params[1])
    ball = L.sd_sphere(L.translate(p, [0.0, 0.25, 0.0]), params[2])
    stick = L.sd_capsule(p, [-0.25, -0.375, 0.125], [0.375, 0.0, -0.125], params[4])
    return L.op_smooth_union(L.op_smooth_union(torus, ball, params[3]), stick, params[3])


TWINS = {"sphere": sphere, "csg": csg, "sphere_box": sphere_box, "blobs": blobs}


def twin(name: str):
    """The twin `(points [N, 3], params) -> [N]` of the built-in scene `name` (`field.name`)."""
    return TWINS[name]
