"""Batched pinhole cameras and conversions between camera conventions.

Our convention (DESIGN.md section 3): OpenCV axes (x right, y down, z forward), world-to-camera
`T_cam_world = [R | t]`, intrinsics `K` in pixels with the centre of pixel (row i, column j) at
(u, v) = (j + 0.5, i + 0.5). Conversions:

- NeRF / OpenGL: camera-to-world `transform_matrix` with x right, y up, z backward; focal from
  `camera_angle_x`; principal point at the image centre.
- IDR / DTU: `world_mat = K' [R | t]` (4x4, P with a [0, 0, 0, 1] row) projects world points to pixels
  whose centres are at integers, and `scale_mat` maps the normalised (unit-sphere) frame to the world;
  `world_mat @ scale_mat` is the camera of the normalised frame. Decomposed here by RQ (no OpenCV).
- DVR: `camera_mat` maps camera coordinates to pixel coordinates in [-1, 1] (pixel index 0 -> -1,
  index W-1 -> +1), `world_mat = [R | t]`, `scale_mat` as IDR.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# OpenCV camera axes -> OpenGL camera axes (flip y and z).
_CV_TO_GL = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64))


def _batched(name: str, x, trailing: tuple[int, ...], dtype=None) -> torch.Tensor:
    x = torch.as_tensor(x, dtype=dtype)
    if not x.is_floating_point():
        x = x.to(torch.get_default_dtype())
    if tuple(x.shape) == trailing:
        x = x[None]
    if x.dim() != len(trailing) + 1 or tuple(x.shape[1:]) != trailing:
        dims = ", ".join(str(d) for d in trailing)
        raise ValueError(f"{name}: expected shape [B, {dims}] or [{dims}], got {list(x.shape)}")
    return x


def invert_rigid(T: torch.Tensor) -> torch.Tensor:
    """Inverse of rigid transforms `[..., 4, 4]` ([R | t] -> [R^T | -R^T t])."""
    R, t = T[..., :3, :3], T[..., :3, 3:]
    out = torch.zeros_like(T)
    out[..., :3, :3] = R.transpose(-1, -2)
    out[..., :3, 3:] = -R.transpose(-1, -2) @ t
    out[..., 3, 3] = 1.0
    return out


def check_rotation(name: str, R: torch.Tensor, atol: float = 1e-4) -> None:
    """Raise ValueError unless `R [..., 3, 3]` is a proper rotation (orthonormal, det +1)."""
    if not torch.isfinite(R).all():
        raise ValueError(f"{name}: contains non-finite values")
    eye = torch.eye(3, dtype=R.dtype, device=R.device)
    err = (R.transpose(-1, -2) @ R - eye).abs().amax()
    det = torch.linalg.det(R.double())
    if err > atol or (det - 1).abs().max() > 10 * atol:
        raise ValueError(
            f"{name}: expected a rotation (orthonormal with det +1), got max |R^T R - I| = {float(err):.2e}, "
            f"det in [{float(det.min()):.4f}, {float(det.max()):.4f}]"
        )


@dataclass
class Camera:
    """A batch of B pinhole cameras sharing one image size.

    Attributes:
        K: `[B, 3, 3]` intrinsics in pixels (pixel centres at +0.5).
        T_cam_world: `[B, 4, 4]` world-to-camera rigid transforms (OpenCV axes).
        width, height: image size in pixels.
    """

    K: torch.Tensor
    T_cam_world: torch.Tensor
    width: int
    height: int

    def __post_init__(self) -> None:
        self.K = _batched("K", self.K, (3, 3))
        self.T_cam_world = _batched("T_cam_world", self.T_cam_world, (4, 4), dtype=self.K.dtype)
        if self.K.shape[0] == 0:
            raise ValueError("K: expected at least one camera, got an empty batch [0, 3, 3]")
        if self.K.shape[0] != self.T_cam_world.shape[0]:
            raise ValueError(
                f"T_cam_world: expected {self.K.shape[0]} poses like K, got {self.T_cam_world.shape[0]}"
            )
        if not (isinstance(self.width, int) and isinstance(self.height, int)) or self.width < 1 or self.height < 1:
            raise ValueError(f"width, height: expected positive ints, got {self.width!r}, {self.height!r}")
        if not torch.isfinite(self.K).all() or (self.K[:, 0, 0] <= 0).any() or (self.K[:, 1, 1] <= 0).any():
            raise ValueError("K: expected finite intrinsics with positive focal lengths fx = K[0,0], fy = K[1,1]")
        if not torch.isfinite(self.T_cam_world).all():
            bad = (~torch.isfinite(self.T_cam_world)).flatten(1).any(1).nonzero()[:, 0].tolist()
            raise ValueError(f"T_cam_world: expected finite poses, got NaN/inf in camera(s) {bad[:10]}")
        bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=self.T_cam_world.dtype, device=self.T_cam_world.device)
        if not torch.allclose(self.T_cam_world[:, 3], bottom.expand(len(self), 4), atol=1e-6):
            raise ValueError("T_cam_world: expected the last row of every pose to be [0, 0, 0, 1]")
        with torch.no_grad():
            check_rotation("T_cam_world", self.T_cam_world[:, :3, :3])

    # -- basic accessors -------------------------------------------------------------------------

    def __len__(self) -> int:
        return self.K.shape[0]

    def __getitem__(self, index) -> Camera:
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return Camera(self.K[index], self.T_cam_world[index], self.width, self.height)

    @property
    def device(self) -> torch.device:
        return self.K.device

    @property
    def dtype(self) -> torch.dtype:
        return self.K.dtype

    def to(self, device=None, dtype=None) -> Camera:
        return Camera(self.K.to(device, dtype), self.T_cam_world.to(device, dtype), self.width, self.height)

    @property
    def R(self) -> torch.Tensor:
        """`[B, 3, 3]` world-to-camera rotation."""
        return self.T_cam_world[:, :3, :3]

    @property
    def t(self) -> torch.Tensor:
        """`[B, 3]` world-to-camera translation."""
        return self.T_cam_world[:, :3, 3]

    @property
    def T_world_cam(self) -> torch.Tensor:
        """`[B, 4, 4]` camera-to-world transforms (OpenCV axes)."""
        return invert_rigid(self.T_cam_world)

    @property
    def centers(self) -> torch.Tensor:
        """`[B, 3]` camera centres in world coordinates."""
        return self.T_world_cam[:, :3, 3]

    @staticmethod
    def cat(cameras: list[Camera]) -> Camera:
        sizes = {(c.width, c.height) for c in cameras}
        if len(sizes) != 1:
            raise ValueError(f"cameras: expected one image size, got {sorted(sizes)}")
        return Camera(
            torch.cat([c.K for c in cameras]), torch.cat([c.T_cam_world for c in cameras]), *sizes.pop()
        )

    # -- geometry --------------------------------------------------------------------------------

    def project(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Project world points `[N, 3]` (same for all cameras) or `[B, N, 3]`.

        Returns:
            pixels `[B, N, 2]` as continuous (u, v) with pixel centres at +0.5, and camera z-depth `[B, N]`.
        """
        if points.dim() == 2:
            points = points[None].expand(len(self), -1, -1)
        p_cam = points @ self.R.transpose(1, 2) + self.t[:, None, :]
        z = p_cam[..., 2]
        uvw = p_cam @ self.K.transpose(1, 2)
        return uvw[..., :2] / uvw[..., 2:3], z

    def image_rays(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Rays through every pixel centre: origins, unit directions `[B, H, W, 3]` (Taichi kernel)."""
        from taichi_sdf.cameras.rays import image_rays

        return image_rays(self.K.contiguous(), self.T_cam_world.contiguous(), self.height, self.width)

    def pixel_rays(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rays through continuous pixel positions `[B, N, 2]`: origins, unit directions `[B, N, 3]`."""
        from taichi_sdf.cameras.rays import pixel_rays

        return pixel_rays(self.K.contiguous(), self.T_cam_world.contiguous(), pixels)

    def resized(self, width: int, height: int) -> Camera:
        """The same cameras at another resolution (the image plane is rescaled, field of view kept)."""
        sx, sy = width / self.width, height / self.height
        S = torch.tensor([[sx, 0, 0], [0, sy, 0], [0, 0, 1]], dtype=self.dtype, device=self.device)
        return Camera(S @ self.K, self.T_cam_world, width, height)

    def transformed(self, T_world_new: torch.Tensor) -> Camera:
        """Cameras expressed in a new frame related to the world by a rigid transform `[4, 4]`
        (`x_world = T_world_new @ x_new`). For similarity transforms use `from_projection`."""
        T = torch.as_tensor(T_world_new, dtype=self.dtype, device=self.device)
        return Camera(self.K, self.T_cam_world @ T, self.width, self.height)

    # -- conversions -----------------------------------------------------------------------------

    @classmethod
    def from_projection(cls, P: torch.Tensor, width: int, height: int, pixel_center: float = 0.5) -> Camera:
        """From projection matrices `P = K [R | t]` (`[B, 3, 4]` or `[B, 4, 4]`, any scale).

        `pixel_center` is where the convention of P puts the centre of pixel 0: 0.0 for IDR/DTU and
        OpenCV calibrations (integer centres), 0.5 for ours.
        """
        P = torch.as_tensor(P)
        if P.dim() == 2:
            P = P[None]
        if P.dim() != 3 or P.shape[1] not in (3, 4) or P.shape[2] != 4:
            raise ValueError(f"P: expected shape [B, 3, 4] or [B, 4, 4], got {list(P.shape)}")
        K, R, t = decompose_projection(P[:, :3, :4])
        K = K.clone()
        K[:, 0, 2] += 0.5 - pixel_center
        K[:, 1, 2] += 0.5 - pixel_center
        T = torch.eye(4, dtype=K.dtype).repeat(len(K), 1, 1)
        T[:, :3, :3] = R
        T[:, :3, 3] = t
        return cls(K, T, width, height)

    def projection(self, pixel_center: float = 0.5) -> torch.Tensor:
        """`[B, 4, 4]` projection `K' [R | t]` with a [0, 0, 0, 1] row, K' shifted to `pixel_center`."""
        K = self.K.clone()
        K[:, 0, 2] -= 0.5 - pixel_center
        K[:, 1, 2] -= 0.5 - pixel_center
        P = torch.eye(4, dtype=self.dtype, device=self.device).repeat(len(self), 1, 1)
        P[:, :3, :4] = K @ self.T_cam_world[:, :3, :4]
        return P

    @classmethod
    def from_idr(cls, world_mat, scale_mat, width: int, height: int) -> Camera:
        """IDR/DTU `world_mat_i`, `scale_mat_i` (`[B, 4, 4]`) -> cameras of the normalised frame."""
        world_mat = _batched("world_mat", world_mat, (4, 4), dtype=torch.float64)
        scale_mat = _batched("scale_mat", scale_mat, (4, 4), dtype=torch.float64)
        return cls.from_projection(world_mat @ scale_mat, width, height, pixel_center=0.0)

    def to_idr(self, scale_mat=None) -> torch.Tensor:
        """`world_mat` `[B, 4, 4]` for these normalised-frame cameras, given `scale_mat` (normalised ->
        world, default identity): `world_mat @ scale_mat == projection(pixel_center=0)`."""
        P = self.projection(pixel_center=0.0).double()
        if scale_mat is None:
            return P
        scale_mat = _batched("scale_mat", scale_mat, (4, 4), dtype=torch.float64).to(P.device)
        return P @ torch.linalg.inv(scale_mat)

    @classmethod
    def from_nerf(
        cls,
        c2w,
        width: int,
        height: int,
        camera_angle_x: float | None = None,
        focal: float | None = None,
        cx: float | None = None,
        cy: float | None = None,
    ) -> Camera:
        """NeRF/OpenGL camera-to-world `[B, 4, 4]` (or `[B, 3, 4]`) -> cameras.

        Give `camera_angle_x` (horizontal field of view in radians, as in `transforms.json`) or `focal`
        (pixels). The principal point defaults to the image centre (W/2, H/2).
        """
        c2w = torch.as_tensor(c2w, dtype=torch.float64)
        if c2w.dim() == 2:
            c2w = c2w[None]
        if c2w.dim() != 3 or c2w.shape[1] not in (3, 4) or c2w.shape[2] != 4:
            raise ValueError(f"c2w: expected shape [B, 4, 4] or [B, 3, 4], got {list(c2w.shape)}")
        if (camera_angle_x is None) == (focal is None):
            raise ValueError("camera_angle_x, focal: give exactly one of them")
        if focal is None:
            if not 0 < camera_angle_x < math.pi:
                raise ValueError(f"camera_angle_x: expected radians in (0, pi), got {camera_angle_x!r}")
            focal = 0.5 * width / math.tan(0.5 * camera_angle_x)
        M = torch.eye(4, dtype=torch.float64).repeat(len(c2w), 1, 1)
        M[:, :3, :4] = c2w[:, :3, :4]
        T_world_cam = M @ _CV_TO_GL
        K = torch.tensor(
            [[focal, 0.0, width / 2 if cx is None else cx], [0.0, focal, height / 2 if cy is None else cy], [0, 0, 1]],
            dtype=torch.float64,
        ).repeat(len(c2w), 1, 1)
        return cls(K, invert_rigid(T_world_cam), width, height)

    def to_nerf(self) -> torch.Tensor:
        """`[B, 4, 4]` NeRF/OpenGL camera-to-world matrices (focal: `K[:, 0, 0]`)."""
        return self.T_world_cam @ _CV_TO_GL.to(self.device, self.dtype)

    @property
    def camera_angle_x(self) -> torch.Tensor:
        """`[B]` horizontal field of view in radians."""
        return 2 * torch.atan(0.5 * self.width / self.K[:, 0, 0])

    @classmethod
    def from_dvr(cls, camera_mat, world_mat, width: int, height: int, scale_mat=None) -> Camera:
        """DVR `camera_mat_i` (camera -> [-1, 1] pixels), `world_mat_i` ([R | t]) and optional
        `scale_mat_i` (object frame -> world), all `[B, 4, 4]`, -> cameras of the object frame."""
        camera_mat = _batched("camera_mat", camera_mat, (4, 4), dtype=torch.float64)
        world_mat = _batched("world_mat", world_mat, (4, 4), dtype=torch.float64)
        K = camera_mat[:, :3, :3].clone()
        K[:, 2] = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
        # u_ndc = 2 * (u - 0.5) / (W - 1) - 1  <=>  u = (u_ndc + 1) * (W - 1) / 2 + 0.5
        A = torch.tensor(
            [[(width - 1) / 2, 0, (width - 1) / 2 + 0.5], [0, (height - 1) / 2, (height - 1) / 2 + 0.5], [0, 0, 1]],
            dtype=torch.float64,
        )
        T = world_mat
        if scale_mat is not None:
            scale_mat = _batched("scale_mat", scale_mat, (4, 4), dtype=torch.float64)
            P = camera_mat[:, :3, :4] @ world_mat @ scale_mat
            cam = cls.from_projection(P, width, height, pixel_center=0.5)
            # from_projection works in ndc pixels here; map them to ours.
            return cls(A @ cam.K, cam.T_cam_world, width, height)
        return cls(A @ K, T, width, height)

    def to_dvr(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(camera_mat, world_mat), `[B, 4, 4]` each, in DVR's [-1, 1] pixel convention."""
        A = torch.tensor(
            [[(self.width - 1) / 2, 0, (self.width - 1) / 2 + 0.5], [0, (self.height - 1) / 2, (self.height - 1) / 2 + 0.5], [0, 0, 1]],
            dtype=torch.float64,
            device=self.device,
        )
        camera_mat = torch.eye(4, dtype=torch.float64, device=self.device).repeat(len(self), 1, 1)
        camera_mat[:, :3, :3] = torch.linalg.inv(A) @ self.K.double()
        return camera_mat, self.T_cam_world.double().clone()


def decompose_projection(P: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split projection matrices `P [B, 3, 4] = s K [R | t]` into K (`K[2, 2] = 1`, positive focal
    lengths), a proper rotation R and t, by an RQ decomposition of `P[:, :3]` (float64)."""
    P = torch.as_tensor(P, dtype=torch.float64)
    if not torch.isfinite(P).all():
        raise ValueError("P: contains non-finite values")
    M = P[:, :3, :3]
    det = torch.linalg.det(M)
    if (det.abs() <= 1e-12 * M.abs().amax(dim=(1, 2)) ** 3).any():
        raise ValueError("P: the left 3x3 block is singular; not a projection matrix of a pinhole camera")
    sign = torch.sign(det)[:, None, None]
    M, P = M * sign, P * sign
    # RQ via QR of the row-reversed transpose: M = (J U^T J)(J Q^T) with J the exchange matrix.
    J = torch.flip(torch.eye(3, dtype=torch.float64), dims=[0])
    Q, U = torch.linalg.qr((J @ M).transpose(1, 2))
    K = J @ U.transpose(1, 2) @ J
    R = J @ Q.transpose(1, 2)
    D = torch.diag_embed(torch.sign(torch.diagonal(K, dim1=1, dim2=2)))
    K, R = K @ D, D @ R  # positive diagonal of K
    if (torch.linalg.det(R) < 0).any():  # cannot happen once det(M) > 0, kept as a guard
        raise ValueError("P: decomposition gave an improper rotation")
    scale = K[:, 2:3, 2:3]
    t = torch.linalg.solve(K, P[:, :3, 3:])[..., 0]
    return K / scale, R, t


# -- view sets ------------------------------------------------------------------------------------


def look_at_poses(eye, target, up=(0.0, 1.0, 0.0)) -> torch.Tensor:
    """World-to-camera `[B, 4, 4]` (OpenCV axes) for cameras at `eye [B, 3]` looking at `target [B, 3]`;
    `up` is the world direction that appears upward in the image."""
    eye = torch.as_tensor(eye, dtype=torch.float64).reshape(-1, 3)
    target = torch.as_tensor(target, dtype=torch.float64).reshape(-1, 3).expand_as(eye)
    up = torch.as_tensor(up, dtype=torch.float64).reshape(-1, 3).expand_as(eye)
    z = target - eye
    if (z.norm(dim=-1) < 1e-12).any():
        raise ValueError("eye, target: a camera sits on its target")
    z = z / z.norm(dim=-1, keepdim=True)
    x = torch.cross(z, up, dim=-1)  # right = forward x up (then y = z x x points down)
    if (x.norm(dim=-1) < 1e-9).any():
        # Looking straight along `up`: pick any perpendicular right vector.
        alt = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).expand_as(z)
        bad = x.norm(dim=-1) < 1e-9
        x[bad] = torch.cross(z[bad], alt[bad], dim=-1)
    x = x / x.norm(dim=-1, keepdim=True)
    y = torch.cross(z, x, dim=-1)
    R = torch.stack([x, y, z], dim=1)  # rows are the camera axes in world coordinates
    T = torch.eye(4, dtype=torch.float64).repeat(len(eye), 1, 1)
    T[:, :3, :3] = R
    T[:, :3, 3] = -(R @ eye[..., None])[..., 0]
    return T


def intrinsics(width: int, height: int, fov_x_deg: float = 40.0, count: int = 1) -> torch.Tensor:
    """`[count, 3, 3]` K for a horizontal field of view, principal point at the image centre."""
    if not 0 < fov_x_deg < 180:
        raise ValueError(f"fov_x_deg: expected degrees in (0, 180), got {fov_x_deg!r}")
    f = 0.5 * width / math.tan(math.radians(fov_x_deg) / 2)
    K = torch.tensor([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], dtype=torch.float64)
    return K.repeat(count, 1, 1)


def look_at(eye, target=(0.0, 0.0, 0.0), up=(0.0, 1.0, 0.0), width=128, height=128, fov_x_deg=40.0) -> Camera:
    """Cameras at `eye [B, 3]` looking at `target`, with a horizontal field of view in degrees."""
    T = look_at_poses(eye, target, up)
    return Camera(intrinsics(width, height, fov_x_deg, len(T)), T, width, height)


def fibonacci_sphere(n: int, radius: float = 1.0) -> torch.Tensor:
    """`[n, 3]` nearly uniform points on a sphere (golden-angle spiral, +y is the pole axis)."""
    if n < 1:
        raise ValueError(f"n: expected >= 1, got {n}")
    i = torch.arange(n, dtype=torch.float64) + 0.5
    y = 1 - 2 * i / n
    r = torch.sqrt(torch.clamp(1 - y * y, min=0))
    phi = math.pi * (3 - math.sqrt(5)) * i
    return radius * torch.stack([r * torch.cos(phi), y, r * torch.sin(phi)], dim=-1)


def fibonacci_cameras(n: int, radius: float = 2.75, width=128, height=128, fov_x_deg=40.0, target=(0.0, 0.0, 0.0)) -> Camera:
    """n cameras on a Fibonacci sphere looking at `target` (+y up)."""
    eye = fibonacci_sphere(n, radius) + torch.as_tensor(target, dtype=torch.float64)
    return look_at(eye, target, (0.0, 1.0, 0.0), width, height, fov_x_deg)


def orbit_cameras(
    n: int, radius: float = 2.75, elevation_deg: float = 20.0, width=128, height=128, fov_x_deg=40.0, target=(0.0, 0.0, 0.0)
) -> Camera:
    """n cameras on a horizontal circle (a turntable) at an elevation above the xz-plane, +y up."""
    if not (isinstance(n, int) and n >= 1):
        raise ValueError(f"n: expected an int >= 1, got {n!r}")
    az = torch.arange(n, dtype=torch.float64) * (2 * math.pi / n)
    el = math.radians(elevation_deg)
    eye = radius * torch.stack(
        [math.cos(el) * torch.sin(az), torch.full_like(az, math.sin(el)), math.cos(el) * torch.cos(az)], dim=-1
    ) + torch.as_tensor(target, dtype=torch.float64)
    return look_at(eye, target, (0.0, 1.0, 0.0), width, height, fov_x_deg)
