"""Differentiable rotation parameterisations and a per-camera pose refinement module."""

from __future__ import annotations

import torch
from torch import nn

from taichi_sdf.cameras.camera import Camera


def axis_angle_to_matrix(v: torch.Tensor) -> torch.Tensor:
    """Rodrigues: axis-angle `[..., 3]` (angle = norm) -> rotation `[..., 3, 3]`, smooth at zero."""
    theta2 = (v * v).sum(-1, keepdim=True)[..., None]  # [..., 1, 1]
    small = theta2 < 1e-8
    theta2_safe = torch.where(small, torch.ones_like(theta2), theta2)
    theta = torch.sqrt(theta2_safe)
    # sin(t)/t and (1 - cos t)/t^2 with Taylor series near zero (keeps gradients finite there).
    a = torch.where(small, 1 - theta2 / 6, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(theta)) / theta2_safe)
    x, y, z = v.unbind(-1)
    zero = torch.zeros_like(x)
    Kx = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(*v.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=v.dtype, device=v.device).expand_as(Kx)
    return eye + a * Kx + b * (Kx @ Kx)


def matrix_to_axis_angle(R: torch.Tensor) -> torch.Tensor:
    """Inverse of `axis_angle_to_matrix` for angles in [0, pi) (float64 recommended)."""
    cos = ((R.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1, 1)
    theta = torch.acos(cos)
    w = torch.stack([R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]], -1)
    sin = torch.sin(theta)
    scale = torch.where(sin.abs() < 1e-8, 0.5 + theta**2 / 12, theta / (2 * sin.clamp_min(1e-12)))
    return w * scale[..., None]


def rotation_6d_to_matrix(d6: torch.Tensor) -> torch.Tensor:
    """Zhou et al.'s continuous 6D representation `[..., 6]` (first two rows) -> rotation `[..., 3, 3]`."""
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = a1 / a1.norm(dim=-1, keepdim=True)
    a2 = a2 - (b1 * a2).sum(-1, keepdim=True) * b1
    b2 = a2 / a2.norm(dim=-1, keepdim=True)
    b3 = torch.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-2)


def matrix_to_rotation_6d(R: torch.Tensor) -> torch.Tensor:
    """Rotation `[..., 3, 3]` -> 6D `[..., 6]` (its first two rows)."""
    return R[..., :2, :].reshape(*R.shape[:-2], 6)


class PoseRefinement(nn.Module):
    """Learnable per-camera pose corrections, initialised to identity.

    `T_cam_world = [dR | dt] @ T_cam_world_init` with dR from an axis-angle (or 6D) parameter, so
    the optimiser sees small, well-conditioned variables. Used to refine noisy cameras (IDR
    `--train_cameras`, DIST camera optimisation).
    """

    def __init__(self, num_cameras: int, rotation: str = "axis_angle") -> None:
        super().__init__()
        if rotation not in ("axis_angle", "6d"):
            raise ValueError(f"rotation: expected 'axis_angle' or '6d', got {rotation!r}")
        self.rotation = rotation
        init = torch.zeros(num_cameras, 3) if rotation == "axis_angle" else matrix_to_rotation_6d(torch.eye(3)).repeat(num_cameras, 1)
        self.rot = nn.Parameter(init)
        self.trans = nn.Parameter(torch.zeros(num_cameras, 3))

    def delta(self, index: torch.Tensor | None = None) -> torch.Tensor:
        """`[B, 4, 4]` correction transforms for the cameras `index` (all when None)."""
        rot = self.rot if index is None else self.rot[index]
        trans = self.trans if index is None else self.trans[index]
        R = axis_angle_to_matrix(rot) if self.rotation == "axis_angle" else rotation_6d_to_matrix(rot)
        bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=R.dtype, device=R.device).expand(len(R), 1, 4)
        return torch.cat([torch.cat([R, trans[..., None]], dim=-1), bottom], dim=1)

    def forward(self, T_cam_world: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """Corrected `[B, 4, 4]` poses for initial poses `T_cam_world [B, 4, 4]` of cameras `index`."""
        return self.delta(index).to(T_cam_world.dtype) @ T_cam_world

    def refine(self, camera: Camera, index: torch.Tensor | None = None) -> Camera:
        return Camera(camera.K, self(camera.T_cam_world, index), camera.width, camera.height)
