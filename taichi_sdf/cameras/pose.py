"""Differentiable rotation parameterisations (axis-angle, 6D, quaternion), learnable camera poses, a
per-camera pose refinement module and the pose errors reported by camera optimisation."""

from __future__ import annotations

import torch
from torch import nn

from taichi_sdf.cameras.camera import Camera, check_rotation


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


def _check_last(name: str, x, size: int, what: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 1 or x.shape[-1] != size:
        raise ValueError(f"{name}: expected {what} of shape [..., {size}], got {list(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point tensor, got {str(x.dtype).replace('torch.', '')}")


def _check_matrix(name: str, x, rows: tuple[int, ...], cols: int) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 2 or x.shape[-2] not in rows or x.shape[-1] != cols:
        want = " or ".join(f"[..., {r}, {cols}]" for r in rows)
        raise ValueError(f"{name}: expected shape {want}, got {list(x.shape)}")


def quaternion_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """Quaternion `[..., 4]` (w, x, y, z: scalar first, as DIST's camera 7-vector in
    `core/utils/render_utils.py`) -> rotation `[..., 3, 3]`. `q` is normalised here, so an optimiser
    may move it freely off the unit sphere; q and -q give the same rotation; q = 0 is undefined."""
    _check_last("q", q, 4, "quaternions (w, x, y, z)")
    w, x, y, z = (q / q.norm(dim=-1, keepdim=True)).unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]  # fmt: skip
    return torch.stack(rows, dim=-1).reshape(*q.shape[:-1], 3, 3)


def matrix_to_quaternion(R: torch.Tensor) -> torch.Tensor:
    """Rotation `[..., 3, 3]` -> unit quaternion `[..., 4]` (w, x, y, z) with w >= 0.

    Of the four closed forms (each divides by one of 4w^2, 4x^2, 4y^2, 4z^2) the one with the largest
    divisor is taken, so the result is accurate for every rotation, 180 degrees included."""
    _check_matrix("R", R, (3,), 3)
    m = R.unbind(-1)  # columns
    m00, m10, m20 = m[0].unbind(-1)
    m01, m11, m21 = m[1].unbind(-1)
    m02, m12, m22 = m[2].unbind(-1)
    # Row k is 4 q_k * (w, x, y, z) for k = w, x, y, z.
    candidates = torch.stack(
        [
            torch.stack([1 + m00 + m11 + m22, m21 - m12, m02 - m20, m10 - m01], -1),
            torch.stack([m21 - m12, 1 + m00 - m11 - m22, m10 + m01, m02 + m20], -1),
            torch.stack([m02 - m20, m10 + m01, 1 - m00 + m11 - m22, m21 + m12], -1),
            torch.stack([m10 - m01, m02 + m20, m21 + m12, 1 - m00 - m11 + m22], -1),
        ],
        dim=-2,
    )  # [..., 4, 4]
    best = candidates.diagonal(dim1=-2, dim2=-1).argmax(-1)  # [...]
    q = torch.gather(candidates, -2, best[..., None, None].expand(*best.shape, 1, 4))[..., 0, :]
    q = q / q.norm(dim=-1, keepdim=True)
    return torch.where(q[..., :1] < 0, -q, q)


ROTATIONS = ("quaternion", "6d", "axis_angle")
_ROTATION_SIZE = {"quaternion": 4, "6d": 6, "axis_angle": 3}


def _check_rotation_kind(rotation) -> None:
    if rotation not in ROTATIONS:
        raise ValueError(f"rotation: expected one of {ROTATIONS}, got {rotation!r}")


def rotation_to_matrix(param: torch.Tensor, rotation: str = "quaternion") -> torch.Tensor:
    """Rotation parameters `[..., P]` (P = 4 quaternion w-first, 6 for 6D, 3 for axis-angle) ->
    `[..., 3, 3]`."""
    _check_rotation_kind(rotation)
    _check_last("param", param, _ROTATION_SIZE[rotation], f"{rotation} rotation parameters")
    if rotation == "quaternion":
        return quaternion_to_matrix(param)
    if rotation == "6d":
        return rotation_6d_to_matrix(param)
    return axis_angle_to_matrix(param)


def matrix_to_rotation(R: torch.Tensor, rotation: str = "quaternion") -> torch.Tensor:
    """Inverse of `rotation_to_matrix`: rotations `[..., 3, 3]` -> parameters `[..., P]`."""
    _check_rotation_kind(rotation)
    _check_matrix("R", R, (3,), 3)
    if rotation == "quaternion":
        return matrix_to_quaternion(R)
    if rotation == "6d":
        return matrix_to_rotation_6d(R)
    return matrix_to_axis_angle(R)


def pose_to_matrix(param: torch.Tensor, translation: torch.Tensor, rotation: str = "quaternion") -> torch.Tensor:
    """World-to-camera `T_cam_world [..., 4, 4] = [R(param) | translation]` from rotation parameters
    `[..., P]` and `translation [..., 3]` (differentiable in both)."""
    R = rotation_to_matrix(param, rotation)
    _check_last("translation", translation, 3, "translations")
    top = torch.cat([R, translation[..., None].to(R.dtype)], dim=-1)  # [..., 3, 4]
    bottom = torch.zeros_like(top[..., :1, :])
    bottom[..., 0, 3] = 1
    return torch.cat([top, bottom], dim=-2)


class CameraPose(nn.Module):
    """Learnable absolute world-to-camera poses `T_cam_world [B, 4, 4] = [R(rot) | trans]`.

    DIST's camera optimisation (`run_single_camera.py`, `core/utils/render_utils.get_camera_from_tensor`)
    optimises a 7-vector: quaternion (w first) + translation; "6d" and "axis_angle" are the
    alternatives. Parameters: `rot [B, P]`, `trans [B, 3]`, initialised from `T_cam_world`
    (`[B, 4, 4]`, `[B, 3, 4]` or one unbatched pose), in its dtype.
    """

    def __init__(self, T_cam_world: torch.Tensor, rotation: str = "quaternion") -> None:
        super().__init__()
        _check_rotation_kind(rotation)
        T = torch.as_tensor(T_cam_world)
        _check_matrix("T_cam_world", T, (3, 4), 4)
        if T.dim() == 2:
            T = T[None]
        if T.dim() != 3:
            raise ValueError(f"T_cam_world: expected shape [B, 4, 4] or [4, 4], got {list(T.shape)}")
        if not T.is_floating_point():
            T = T.to(torch.get_default_dtype())
        T = T.detach()
        check_rotation("T_cam_world", T[:, :3, :3])
        self.rotation = rotation
        self.rot = nn.Parameter(matrix_to_rotation(T[:, :3, :3], rotation).clone())
        self.trans = nn.Parameter(T[:, :3, 3].clone())

    def forward(self) -> torch.Tensor:
        """`[B, 4, 4]` world-to-camera poses."""
        return pose_to_matrix(self.rot, self.trans, self.rotation)

    def camera(self, K: torch.Tensor, width: int, height: int) -> Camera:
        """`Camera` with intrinsics `K [B, 3, 3]` (or `[3, 3]`) at the current, differentiable poses."""
        T = self()
        return Camera(torch.as_tensor(K, dtype=T.dtype, device=T.device).expand(len(T), 3, 3), T, width, height)


def rotation_error_deg(R1: torch.Tensor, R2: torch.Tensor) -> torch.Tensor:
    """Geodesic angle in degrees between rotations `[..., 3, 3]` (the angle of `R1^T R2`), from
    atan2(|sin|, cos) so it stays accurate near 0 and 180 degrees. Returns `[...]`."""
    _check_matrix("R1", R1, (3,), 3)
    _check_matrix("R2", R2, (3,), 3)
    D = R1.transpose(-1, -2) @ R2
    cos2 = D.diagonal(dim1=-2, dim2=-1).sum(-1) - 1  # 2 cos(angle)
    sin2 = torch.stack([D[..., 2, 1] - D[..., 1, 2], D[..., 0, 2] - D[..., 2, 0], D[..., 1, 0] - D[..., 0, 1]], -1).norm(dim=-1)
    return torch.rad2deg(torch.atan2(sin2, cos2))


def translation_error(t1: torch.Tensor, t2: torch.Tensor) -> torch.Tensor:
    """Euclidean distance between translations `[..., 3]` (e.g. the `t` of two `T_cam_world`). Returns `[...]`."""
    _check_last("t1", t1, 3, "translations")
    _check_last("t2", t2, 3, "translations")
    return (t1 - t2).norm(dim=-1)


def camera_center_error(T1: torch.Tensor, T2: torch.Tensor) -> torch.Tensor:
    """Distance between the camera centres (`-R^T t`, world units) of world-to-camera poses
    `[..., 4, 4]` or `[..., 3, 4]`. Unlike `translation_error` it does not mix in the rotation error."""
    _check_matrix("T1", T1, (3, 4), 4)
    _check_matrix("T2", T2, (3, 4), 4)

    def centre(T):
        return -(T[..., :3, :3].transpose(-1, -2) @ T[..., :3, 3:])[..., 0]

    return (centre(T1) - centre(T2)).norm(dim=-1)


class PoseRefinement(nn.Module):
    """Learnable per-camera pose corrections, initialised to identity.

    `T_cam_world = [dR | dt] @ T_cam_world_init` with dR from an axis-angle (6D, quaternion) parameter, so
    the optimiser sees small, well-conditioned variables. Used to refine noisy cameras (IDR
    `--train_cameras`, DIST camera optimisation).
    """

    def __init__(self, num_cameras: int, rotation: str = "axis_angle") -> None:
        super().__init__()
        _check_rotation_kind(rotation)
        self.rotation = rotation
        self.rot = nn.Parameter(matrix_to_rotation(torch.eye(3), rotation).repeat(num_cameras, 1))
        self.trans = nn.Parameter(torch.zeros(num_cameras, 3))

    def delta(self, index: torch.Tensor | None = None) -> torch.Tensor:
        """`[B, 4, 4]` correction transforms for the cameras `index` (all when None)."""
        rot = self.rot if index is None else self.rot[index]
        trans = self.trans if index is None else self.trans[index]
        R = rotation_to_matrix(rot, self.rotation)
        bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=R.dtype, device=R.device).expand(len(R), 1, 4)
        return torch.cat([torch.cat([R, trans[..., None]], dim=-1), bottom], dim=1)

    def forward(self, T_cam_world: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """Corrected `[B, 4, 4]` poses for initial poses `T_cam_world [B, 4, 4]` of cameras `index`."""
        return self.delta(index).to(T_cam_world.dtype) @ T_cam_world

    def refine(self, camera: Camera, index: torch.Tensor | None = None) -> Camera:
        return Camera(camera.K, self(camera.T_cam_world, index), camera.width, camera.height)
