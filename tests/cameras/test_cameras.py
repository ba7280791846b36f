"""Cameras: construction checks, look-at/view sets, and round trips of every conversion."""

import math

import pytest
import torch

from taichi_sdf.cameras import camera as C
from taichi_sdf.cameras.camera import Camera
from taichi_sdf.cameras.pose import (
    PoseRefinement,
    axis_angle_to_matrix,
    matrix_to_axis_angle,
    matrix_to_rotation_6d,
    rotation_6d_to_matrix,
)
from taichi_sdf.reference.cameras import rays as rays_ref


def random_cameras(B=4, seed=0, width=64, height=48, skew=True) -> Camera:
    g = torch.Generator().manual_seed(seed)
    R = axis_angle_to_matrix(torch.randn(B, 3, generator=g, dtype=torch.float64))
    t = torch.randn(B, 3, generator=g, dtype=torch.float64) + torch.tensor([0, 0, 4.0], dtype=torch.float64)
    T = torch.eye(4, dtype=torch.float64).repeat(B, 1, 1)
    T[:, :3, :3], T[:, :3, 3] = R, t
    K = torch.zeros(B, 3, 3, dtype=torch.float64)
    K[:, 0, 0] = 50 + 10 * torch.rand(B, generator=g, dtype=torch.float64)
    K[:, 1, 1] = 55 + 10 * torch.rand(B, generator=g, dtype=torch.float64)
    K[:, 0, 1] = 0.7 * torch.rand(B, generator=g, dtype=torch.float64) if skew else 0.0
    K[:, 0, 2] = width / 2 + torch.randn(B, generator=g, dtype=torch.float64)
    K[:, 1, 2] = height / 2 + torch.randn(B, generator=g, dtype=torch.float64)
    K[:, 2, 2] = 1
    return Camera(K, T, width, height)


def assert_same_camera(a: Camera, b: Camera, atol=1e-9):
    torch.testing.assert_close(a.K.double(), b.K.double(), atol=atol, rtol=0)
    torch.testing.assert_close(a.T_cam_world.double(), b.T_cam_world.double(), atol=atol, rtol=0)
    assert (a.width, a.height) == (b.width, b.height)


def test_look_at_centres_target_and_keeps_up_upward():
    cam = C.look_at(torch.tensor([[0.3, 1.0, 3.0]]), (0.0, 0.2, 0.0), width=40, height=30)
    uv, z = cam.project(torch.tensor([[0.0, 0.2, 0.0], [0.0, 0.7, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(uv[0, 0], torch.tensor([20.0, 15.0], dtype=torch.float64))
    assert z[0, 0] > 0
    assert uv[0, 1, 1] < uv[0, 0, 1]  # +y (world up) is up in the image: smaller v
    torch.testing.assert_close(cam.centers[0], torch.tensor([0.3, 1.0, 3.0], dtype=torch.float64))


def test_look_at_straight_down_is_defined():
    cam = C.look_at(torch.tensor([[0.0, 3.0, 0.0]]))
    assert torch.isfinite(cam.T_cam_world).all()


def test_fibonacci_and_orbit():
    p = C.fibonacci_sphere(200, radius=2.0)
    torch.testing.assert_close(p.norm(dim=-1), torch.full((200,), 2.0, dtype=torch.float64))
    assert p.mean(0).norm() < 0.05  # nearly uniform
    cams = C.orbit_cameras(8, radius=3.0, elevation_deg=30.0)
    centres = cams.centers
    torch.testing.assert_close(centres.norm(dim=-1), torch.full((8,), 3.0, dtype=torch.float64))
    torch.testing.assert_close(centres[:, 1], torch.full((8,), 3.0 * math.sin(math.radians(30)), dtype=torch.float64))
    uv, _ = cams.project(torch.zeros(1, 3, dtype=torch.float64))
    torch.testing.assert_close(uv[:, 0], torch.full((8, 2), 64.0, dtype=torch.float64))


def test_pixel_centres_at_half():
    """The ray through pixel (0, 0)'s centre projects back to (0.5, 0.5)."""
    cam = random_cameras(2)
    o, d = rays_ref.image_rays(cam.K, cam.T_cam_world, cam.height, cam.width)
    uv, _ = cam.project(o[:, 0, 0:1] + 2.0 * d[:, 0, 0:1])
    torch.testing.assert_close(uv[:, 0], torch.full((2, 2), 0.5, dtype=torch.float64))
    o2, d2 = cam.image_rays()
    torch.testing.assert_close(d2, d)


def test_decompose_projection_roundtrip():
    cam = random_cameras(5, seed=1)
    P = cam.K @ cam.T_cam_world[:, :3, :4] * torch.tensor([2.0, -0.3, 7.0, 1.0, 0.01], dtype=torch.float64)[:, None, None]
    K, R, t = C.decompose_projection(P)
    torch.testing.assert_close(K, cam.K)
    torch.testing.assert_close(R, cam.R)
    torch.testing.assert_close(t, cam.t)


def test_decompose_rejects_singular():
    with pytest.raises(ValueError, match="P: the left 3x3 block is singular"):
        C.decompose_projection(torch.zeros(1, 3, 4))


def test_idr_roundtrip_and_pixel_convention():
    cam = random_cameras(3, seed=2)
    scale_mat = torch.eye(4, dtype=torch.float64)
    scale_mat[:3, :3] *= 1.7
    scale_mat[:3, 3] = torch.tensor([0.1, -0.4, 2.0])
    world_mat = cam.to_idr(scale_mat)
    back = Camera.from_idr(world_mat, scale_mat.expand(3, 4, 4), cam.width, cam.height)
    assert_same_camera(back, cam)
    # A normalised-frame point maps to the world by scale_mat; world_mat projects it to IDR pixels,
    # whose centres are integers: ours are the same positions + 0.5.
    x_norm = torch.tensor([[0.2, -0.1, 0.3]], dtype=torch.float64)
    x_world = x_norm @ scale_mat[:3, :3].T + scale_mat[:3, 3]
    p = torch.cat([x_world, torch.ones(1, 1, dtype=torch.float64)], -1) @ world_mat.transpose(1, 2)
    uv_idr = p[..., :2] / p[..., 2:3]
    uv, _ = cam.project(x_norm)
    torch.testing.assert_close(uv, uv_idr + 0.5)


def test_nerf_roundtrip():
    cam = random_cameras(3, seed=3, skew=False)
    cam.K[:, 1, 1] = cam.K[:, 0, 0]
    cam.K[:, 0, 2], cam.K[:, 1, 2] = cam.width / 2, cam.height / 2
    c2w = cam.to_nerf()
    angle = float(cam.camera_angle_x[0])
    back = Camera.from_nerf(c2w[:1], cam.width, cam.height, camera_angle_x=angle)
    assert_same_camera(back, cam[0])
    # OpenGL: the camera looks down its -z axis and +y is up in the image.
    centre, fwd, up = c2w[0, :3, 3], -c2w[0, :3, 2], c2w[0, :3, 1]
    uv, z = cam[0].project(torch.stack([centre + 2 * fwd, centre + 2 * fwd + 0.1 * up]))
    torch.testing.assert_close(uv[0, 0], torch.tensor([cam.width / 2, cam.height / 2], dtype=torch.float64))
    assert z[0, 0] > 0 and uv[0, 1, 1] < uv[0, 0, 1]


def test_nerf_argument_errors():
    with pytest.raises(ValueError, match="camera_angle_x, focal"):
        Camera.from_nerf(torch.eye(4), 10, 10)
    with pytest.raises(ValueError, match="c2w: expected shape"):
        Camera.from_nerf(torch.eye(3), 10, 10, focal=5.0)


def test_dvr_roundtrip_and_ndc_convention():
    cam = random_cameras(2, seed=4)
    camera_mat, world_mat = cam.to_dvr()
    back = Camera.from_dvr(camera_mat, world_mat, cam.width, cam.height)
    assert_same_camera(back, cam)
    x = torch.tensor([[0.1, 0.2, -0.3]], dtype=torch.float64)
    p = torch.cat([x, torch.ones(1, 1, dtype=torch.float64)], -1) @ (camera_mat @ world_mat).transpose(1, 2)
    ndc = p[..., :2] / p[..., 2:3]
    uv, _ = cam.project(x)
    torch.testing.assert_close(ndc[..., 0], 2 * (uv[..., 0] - 0.5) / (cam.width - 1) - 1)
    torch.testing.assert_close(ndc[..., 1], 2 * (uv[..., 1] - 0.5) / (cam.height - 1) - 1)
    # With a scale_mat (object frame -> world) the cameras become object-frame cameras.
    S = torch.eye(4, dtype=torch.float64)
    S[:3, :3] *= 2.0
    S[:3, 3] = torch.tensor([0.5, 0.0, -0.2])
    obj = Camera.from_dvr(camera_mat, world_mat, cam.width, cam.height, scale_mat=S.expand(2, 4, 4))
    x_obj = torch.tensor([[0.05, 0.1, 0.0]], dtype=torch.float64)
    uv_obj, _ = obj.project(x_obj)
    uv_world, _ = cam.project(x_obj @ S[:3, :3].T + S[:3, 3])
    torch.testing.assert_close(uv_obj, uv_world)


def test_resized_keeps_field_of_view():
    cam = random_cameras(1)
    small = cam.resized(32, 24)
    x = torch.tensor([[0.1, 0.2, 0.3]], dtype=torch.float64)
    torch.testing.assert_close(small.project(x)[0] * 2, cam.project(x)[0])


def test_camera_validation():
    cam = random_cameras(2)
    bad = cam.T_cam_world.clone()
    bad[0, :3, :3] *= 2
    with pytest.raises(ValueError, match="T_cam_world: expected a rotation"):
        Camera(cam.K, bad, 64, 48)
    with pytest.raises(ValueError, match="T_cam_world: expected 2 poses"):
        Camera(cam.K, cam.T_cam_world[:1], 64, 48)
    with pytest.raises(ValueError, match="K: expected shape"):
        Camera(torch.eye(4), cam.T_cam_world[:1], 64, 48)
    negf = cam.K.clone()
    negf[0, 0, 0] = -1
    with pytest.raises(ValueError, match="K: expected finite intrinsics"):
        Camera(negf, cam.T_cam_world, 64, 48)
    with pytest.raises(ValueError, match="width, height"):
        Camera(cam.K, cam.T_cam_world, 0, 48)


# -- pose parameterisations ------------------------------------------------------------------------


def test_axis_angle_roundtrip_and_gradcheck():
    g = torch.Generator().manual_seed(0)
    v = torch.randn(16, 3, generator=g, dtype=torch.float64)
    v = v / v.norm(dim=-1, keepdim=True) * torch.rand(16, 1, generator=g, dtype=torch.float64) * 3.0
    R = axis_angle_to_matrix(v)
    C.check_rotation("R", R, atol=1e-12)
    torch.testing.assert_close(matrix_to_axis_angle(R), v)
    assert torch.autograd.gradcheck(axis_angle_to_matrix, (v[:3].clone().requires_grad_(),))
    zero = torch.zeros(1, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(axis_angle_to_matrix, (zero,))
    torch.testing.assert_close(axis_angle_to_matrix(zero)[0], torch.eye(3, dtype=torch.float64))


def test_rotation_6d_roundtrip_and_gradcheck():
    R = axis_angle_to_matrix(torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1)))
    torch.testing.assert_close(rotation_6d_to_matrix(matrix_to_rotation_6d(R)), R)
    d6 = matrix_to_rotation_6d(R) + 0.1
    assert torch.autograd.gradcheck(rotation_6d_to_matrix, (d6.requires_grad_(),))


@pytest.mark.parametrize("rotation", ["axis_angle", "6d"])
def test_pose_refinement_starts_at_identity_and_is_differentiable_through_rays(rotation, device):
    cam = random_cameras(3).to(device)
    refine = PoseRefinement(3, rotation=rotation).double().to(device)
    refined = refine.refine(cam)
    torch.testing.assert_close(refined.T_cam_world, cam.T_cam_world)
    # Gradients reach the pose parameters through the Taichi ray kernel and agree with the twin.
    o, d = refined.image_rays()
    loss = (d * torch.linspace(-1, 1, 3, dtype=torch.float64, device=device)).sum() + o.square().sum()
    grads = torch.autograd.grad(loss, [refine.rot, refine.trans])
    o2, d2 = rays_ref.image_rays(refined.K, refine(cam.T_cam_world), cam.height, cam.width)
    loss2 = (d2 * torch.linspace(-1, 1, 3, dtype=torch.float64, device=device)).sum() + o2.square().sum()
    grads2 = torch.autograd.grad(loss2, [refine.rot, refine.trans])
    for a, b in zip(grads, grads2):
        assert a.abs().max() > 0
        torch.testing.assert_close(a, b)


def test_z_per_t_gives_camera_depth(device):
    """t * z_per_t is the camera z of the point at ray distance t (checked through the projection)."""
    from taichi_sdf.cameras.rays import z_per_t

    cam = C.look_at(torch.tensor([[0.3, 1.1, 2.4], [-1.5, 0.2, 0.9]]), width=7, height=5).to(device, torch.float64)
    o, d = cam.image_rays()  # [B, H, W, 3]
    t = torch.rand(d.shape[:-1], generator=torch.Generator().manual_seed(2), dtype=torch.float64).to(device) + 0.5
    x = o + t[..., None] * d
    R, tr = cam.T_cam_world[:, :3, :3], cam.T_cam_world[:, :3, 3]
    z_cam = torch.einsum("bj,bhwj->bhw", R[:, 2], x) + tr[:, None, None, 2]
    torch.testing.assert_close(t * z_per_t(cam.T_cam_world, d), z_cam)
    centre = z_per_t(cam.T_cam_world, d)[:, 2, 3]  # the pixel on the optical axis (K's centre)
    torch.testing.assert_close(centre, torch.ones_like(centre), atol=1e-12, rtol=0)
