"""A learnable similarity transform Sim(3) between the world and the canonical (DeepSDF) frame.

DIST's real-data mode (`run_multi_realdata.py`, `core/inv_optimizer/optimize_multi.py`) renders the
DeepSDF decoder in its canonical frame (the shape inside the unit sphere) while the cameras live in the
world of a reconstruction. A rough similarity `estim_3Dsim.npy` (3x4, canonical -> world) is refined by a
learnable correction composed on the left, as PMO's `params_to_mtrx` does:

    T_world_canon = [exp(log_scale) R(rot) | trans] @ T_world_canon_init

with the correction starting at the identity (log_scale = 0, rot = identity, trans = 0). A camera of the
world becomes a camera of the canonical frame measured in canonical units (`cameras_in_canonical`:
DIST's `R @ A / s`, `(R @ b + t) / s` of `loss_multi.compute_loss_color_warp`), so depths rendered
there are canonical-frame depths.
"""

from __future__ import annotations

import torch
from torch import nn

from taichi_sdf.cameras.camera import Camera
from taichi_sdf.cameras.pose import ROTATIONS, matrix_to_rotation, rotation_to_matrix

__all__ = ["Sim3", "decompose_similarity", "similarity_matrix"]


def similarity_matrix(log_scale: torch.Tensor, R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """`[..., 4, 4]` = `[exp(log_scale) R | t]` from `log_scale [...]`, `R [..., 3, 3]`, `t [..., 3]`."""
    top = torch.cat([torch.exp(log_scale)[..., None, None] * R, t[..., None]], dim=-1)  # [..., 3, 4]
    bottom = torch.zeros_like(top[..., :1, :])
    bottom[..., 0, 3] = 1
    return torch.cat([top, bottom], dim=-2)


def decompose_similarity(M, name: str = "M") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Nearest similarity to an affine map `M [3, 4]` or `[4, 4]`: `(scale [], R [3, 3], t [3])`.

    R is the rotation of the polar decomposition of `M[:3, :3]` (SVD `U V^T`, a reflection is refused)
    and scale the mean singular value, the least-squares `s` of `|s R - A|`; for an exact similarity these
    give back s and R (DIST's loader takes the largest singular value, the same number then)."""
    M = torch.as_tensor(M)
    if M.dim() != 2 or M.shape[0] not in (3, 4) or M.shape[1] != 4:
        raise ValueError(f"{name}: expected a similarity of shape [3, 4] or [4, 4], got {list(M.shape)}")
    if not M.is_floating_point():
        M = M.to(torch.get_default_dtype())
    if not torch.isfinite(M).all():
        raise ValueError(f"{name}: contains non-finite values")
    A = M[:3, :3].double()
    U, S, Vh = torch.linalg.svd(A)
    if torch.linalg.det(A) <= 0 or S[-1] <= 1e-12 * S[0]:
        raise ValueError(f"{name}: the 3x3 block must have a positive determinant (a rotation times a scale), got {A.tolist()}")
    R = U @ Vh
    return S.mean().to(M.dtype), R.to(M.dtype), M[:3, 3].clone()


class Sim3(nn.Module):
    """`T_world_canon = [exp(log_scale) R(rot) | trans] @ T_world_canon_init` (see the module docstring).

    Args:
        init: rough canonical -> world similarity `[3, 4]` or `[4, 4]` (DIST's `estim_3Dsim.npy`), projected
            on the nearest similarity (`decompose_similarity`); None is the identity.
        rotation: parameterisation of the correction's rotation: "axis_angle" (PMO/DIST's Lie algebra
            vector, the default), "quaternion" or "6d".
        dtype: of parameters and buffers (float32; float64 for gradchecks).

    Parameters: `log_scale []`, `rot [P]`, `trans [3]`; buffer `init [4, 4]`.
    """

    def __init__(self, init=None, rotation: str = "axis_angle", dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        if rotation not in ROTATIONS:
            raise ValueError(f"rotation: expected one of {ROTATIONS}, got {rotation!r}")
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype: expected torch.float32 or torch.float64, got {dtype}")
        self.rotation = rotation
        if init is None:
            M = torch.eye(4, dtype=dtype)
        else:
            s, R, t = decompose_similarity(torch.as_tensor(init).double(), "init")
            M = similarity_matrix(s.log(), R, t).to(dtype)
        self.register_buffer("init", M)
        self.log_scale = nn.Parameter(torch.zeros((), dtype=dtype))
        self.rot = nn.Parameter(matrix_to_rotation(torch.eye(3, dtype=dtype), rotation))
        self.trans = nn.Parameter(torch.zeros(3, dtype=dtype))

    def matrix(self) -> torch.Tensor:
        """`T_world_canon [4, 4]`: canonical -> world (differentiable in the parameters)."""
        return similarity_matrix(self.log_scale, rotation_to_matrix(self.rot, self.rotation), self.trans) @ self.init

    forward = matrix

    def parts(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`(scale [], R [3, 3], t [3])` of `T_world_canon = [scale R | t]`."""
        M = self.matrix()
        scale = torch.exp(self.log_scale) * self.init[:3, :3].norm() / 3**0.5  # |s R|_F = sqrt(3) s
        return scale, M[:3, :3] / scale, M[:3, 3]

    @property
    def scale(self) -> torch.Tensor:
        return self.parts()[0]

    def _points(self, name: str, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
        if x.dim() < 1 or x.shape[-1] != 3:
            raise ValueError(f"{name}: expected shape [N, 3] (or [..., 3]), got {list(x.shape)}")
        if x.dtype != self.init.dtype:
            raise ValueError(
                f"{name}: expected dtype {str(self.init.dtype).replace('torch.', '')} like the Sim3, got {str(x.dtype).replace('torch.', '')}"
            )
        return x

    def to_canonical(self, x: torch.Tensor) -> torch.Tensor:
        """World points `[N, 3]` -> canonical points `[N, 3]`: `R^T (x - t) / s`."""
        s, R, t = self.parts()
        return (self._points("x", x) - t) @ R / s

    def from_canonical(self, x: torch.Tensor) -> torch.Tensor:
        """Canonical points `[N, 3]` -> world points `[N, 3]`: `s R x + t`."""
        s, R, t = self.parts()
        return s * self._points("x", x) @ R.T + t

    def normals_to_canonical(self, n: torch.Tensor) -> torch.Tensor:
        """World directions / unit normals `[N, 3]` -> canonical `[N, 3]` (rotation only: a uniform scale
        keeps normal directions; SDF gradients would also scale by s, which is not applied)."""
        return self._points("n", n) @ self.parts()[1]

    def normals_from_canonical(self, n: torch.Tensor) -> torch.Tensor:
        """Canonical directions / unit normals `[N, 3]` -> world `[N, 3]` (rotation only)."""
        return self._points("n", n) @ self.parts()[1].T

    def cameras_in_canonical(self, camera: Camera) -> Camera:
        """World cameras -> cameras of the canonical frame in canonical units (same K, same images):
        `T_cam_canon = [R_c R | (R_c t + t_c) / s]`. Differentiable in the Sim(3) parameters and in
        `camera.T_cam_world`; depths rendered with it are canonical depths (world depth / s)."""
        if not isinstance(camera, Camera):
            raise TypeError(f"camera: expected a Camera, got {type(camera).__name__}")
        s, R, t = self.parts()
        T = camera.T_cam_world.to(R.dtype)
        Rc, tc = T[:, :3, :3], T[:, :3, 3]
        top = torch.cat([Rc @ R, ((Rc @ t + tc) / s)[..., None]], dim=-1)  # [B, 3, 4]
        bottom = torch.zeros_like(top[:, :1, :])
        bottom[..., 0, 3] = 1
        return Camera(camera.K.to(R.dtype), torch.cat([top, bottom], dim=1), camera.width, camera.height)
