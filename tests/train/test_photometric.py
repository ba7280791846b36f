"""DIST's photometric warp loss: exact zero on a consistent scene, occlusion, the DIST-convention twin,
and float64 gradchecks through depth, both camera poses and the Sim(3) transform."""

import math

import pytest
import torch
from torch.func import functional_call

from taichi_sdf.cameras.camera import Camera, look_at
from taichi_sdf.cameras.pose import CameraPose, axis_angle_to_matrix
from taichi_sdf.cameras.sim3 import Sim3
from taichi_sdf.reference.train import photometric as twin
from taichi_sdf.train.photometric import DIST_DEPTH_THRESHOLD, photometric_warp, photometric_warp_loss

D = torch.float64


def pixel_rays(camera: Camera):
    """Camera centre `[3]` and world rays `[H, W, 3]` through the pixel centres, scaled to camera z = 1."""
    K, T = camera.K[0], camera.T_cam_world[0]
    rows, cols = torch.meshgrid(torch.arange(camera.height, dtype=D), torch.arange(camera.width, dtype=D), indexing="ij")
    pix = torch.stack([cols + 0.5, rows + 0.5, torch.ones_like(cols)], dim=-1)
    dirs = torch.linalg.solve(K, pix.reshape(-1, 3).T).T @ T[:3, :3]  # R^T K^-1 p
    return -T[:3, :3].T @ T[:3, 3], dirs.reshape(camera.height, camera.width, 3)


def plane_depth(camera: Camera, normal, offset):
    """Camera-z depth of the plane `normal . x = offset` (differentiable in the camera)."""
    c, dirs = pixel_rays(camera)
    n = torch.as_tensor(normal, dtype=D)
    return (offset - n @ c) / (dirs @ n)


def sphere_depth(camera: Camera, radius):
    """Camera-z depth of the sphere |x| = radius at the origin, inf where the ray misses."""
    c, dirs = pixel_rays(camera)
    a, b, cc = (dirs * dirs).sum(-1), dirs @ c, c @ c - radius**2
    disc = b * b - a * cc
    t = (-b - torch.sqrt(disc.clamp_min(0))) / a
    return torch.where(disc > 0, t, torch.full_like(t, math.inf))


def surface_points(camera: Camera, depth):
    c, dirs = pixel_rays(camera)
    return c + dirs * torch.where(torch.isfinite(depth), depth, torch.zeros_like(depth))[..., None]


A = torch.tensor([[0.9, -0.4, 0.3], [0.2, 0.7, -0.5], [-0.3, 0.1, 0.8]], dtype=D)


def linear_texture(x):
    return 0.5 + x @ A


def smooth_texture(x):
    return 0.5 + 0.4 * torch.sin(3 * x @ A + torch.tensor([0.0, 1.0, 2.0], dtype=D))


def render(camera, depth, texture):
    return torch.where(torch.isfinite(depth)[..., None], texture(surface_points(camera, depth)), torch.zeros(3, dtype=D))


def camera_at(centre, R, width=16, height=12, focal=20.0):
    T = torch.eye(4, dtype=D)
    T[:3, :3] = R
    T[:3, 3] = -R @ torch.as_tensor(centre, dtype=D)
    K = torch.tensor([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]], dtype=D)
    return Camera(K, T, width, height)


def test_zero_for_an_affine_warp_of_a_linear_texture_and_depth_errors_show():
    # Fronto-parallel plane z = 0 seen by two cameras whose optical axes are both +z: the warp between
    # the images is a similarity, and bilinear sampling reproduces a texture linear in the pixels exactly.
    cam_i = camera_at([0.0, 0.0, -3.0], torch.eye(3, dtype=D))
    cam_j = camera_at([0.13, -0.07, -3.0], axis_angle_to_matrix(torch.tensor([0, 0, math.radians(10)], dtype=D)))
    depth_i, depth_j = plane_depth(cam_i, [0, 0, 1], 0.0), plane_depth(cam_j, [0, 0, 1], 0.0)
    torch.testing.assert_close(depth_i, torch.full_like(depth_i, 3.0))
    image_i, image_j = render(cam_i, depth_i, linear_texture), render(cam_j, depth_j, linear_texture)
    out = photometric_warp(depth_i, cam_i, image_i, cam_j, image_j, depth_j)
    assert out.valid.sum() > 0.5 * out.valid.numel()
    assert float(out.loss) < 1e-12
    torch.testing.assert_close(out.warped[out.valid], image_i[out.valid])
    # uv lands where the camera projects the surface point.
    uv, z = cam_j.project(surface_points(cam_i, depth_i).reshape(-1, 3))
    torch.testing.assert_close(out.uv.reshape(-1, 2), uv[0])
    torch.testing.assert_close(out.z_proj.reshape(-1), z[0])
    # A depth error below the consistency threshold keeps the pixels and costs colour.
    wrong = photometric_warp(depth_i + 0.02, cam_i, image_i, cam_j, image_j, depth_j)
    assert wrong.valid.sum() > 0.4 * wrong.valid.numel() and float(wrong.loss) > 1e-4  # vs < 1e-12 above
    # A larger one fails the visibility test everywhere: loss 0, still differentiable, no NaN.
    depth = (depth_i + 0.1).requires_grad_()
    gone = photometric_warp(depth, cam_i, image_i, cam_j, image_j, depth_j)
    assert not gone.valid.any() and float(gone.loss.detach()) == 0.0
    gone.loss.backward()
    assert torch.equal(depth.grad, torch.zeros_like(depth))


def sphere_scene(azimuth_j_deg, width=24, height=20):
    eyes = torch.tensor(
        [[0.0, 0.6, 2.5], [2.5 * math.sin(math.radians(azimuth_j_deg)), 0.6, 2.5 * math.cos(math.radians(azimuth_j_deg))]]
    )
    cams = look_at(eyes, width=width, height=height, fov_x_deg=50.0)
    cam_i, cam_j = cams[0], cams[1]
    depth_i, depth_j = sphere_depth(cam_i, 0.8), sphere_depth(cam_j, 0.8)
    return cam_i, cam_j, depth_i, depth_j, render(cam_i, depth_i, smooth_texture), render(cam_j, depth_j, smooth_texture)


def test_sphere_right_depth_beats_wrong_depth_and_misses_are_ignored():
    cam_i, cam_j, depth_i, depth_j, image_i, image_j = sphere_scene(40.0)
    assert (~torch.isfinite(depth_i)).sum() > 50  # background pixels (inf) exist
    right = photometric_warp(depth_i, cam_i, image_i, cam_j, image_j, depth_j)
    wrong = photometric_warp(depth_i * 1.01, cam_i, image_i, cam_j, image_j, depth_j)
    assert right.valid.sum() > 50
    assert float(wrong.loss) > 3 * float(right.loss)
    assert not right.valid[~torch.isfinite(depth_i)].any()
    # A hit mask removes pixels; masking view j's depth hides what it would see.
    mask_i = torch.isfinite(depth_i).clone()
    mask_i[:, : cam_i.width // 2] = False
    half = photometric_warp(depth_i, cam_i, image_i, cam_j, image_j, depth_j, mask_i=mask_i)
    assert torch.equal(half.valid, right.valid & mask_i)
    none = photometric_warp(depth_i, cam_i, image_i, cam_j, image_j, depth_j, mask_j=torch.zeros_like(mask_i))
    assert not none.valid.any()


def test_occluded_points_are_rejected():
    cam_i, cam_j, depth_i, depth_j, image_i, image_j = sphere_scene(90.0)
    out = photometric_warp(depth_i, cam_i, image_i, cam_j, image_j, depth_j)
    x = surface_points(cam_i, depth_i)  # [H, W, 3] on the sphere: the normal is x / r
    facing_j = ((cam_j.centers[0] - x) * x).sum(-1) > 0
    inside = ((out.uv >= 0.5) & (out.uv <= torch.tensor([cam_j.width - 0.5, cam_j.height - 0.5], dtype=D))).all(-1)
    hidden = torch.isfinite(depth_i) & inside & ~facing_j
    assert hidden.sum() > 20 and out.valid.sum() > 10
    assert not (out.valid & ~facing_j).any()  # every kept pixel is seen by view j


@pytest.mark.parametrize("azimuth", [25.0, 60.0])
def test_matches_the_dist_convention_twin_values_and_vjps(azimuth):
    cam_i, cam_j, depth_i, depth_j, image_i, image_j = sphere_scene(azimuth)
    T_i = cam_i.T_cam_world.clone().requires_grad_()
    T_j = cam_j.T_cam_world.clone().requires_grad_()
    depth = depth_i.clone().requires_grad_()
    out = photometric_warp(depth, Camera(cam_i.K, T_i, 24, 20), image_i, Camera(cam_j.K, T_j, 24, 20), image_j, depth_j)
    grads = torch.autograd.grad(out.loss, [depth, T_i, T_j])

    shift = torch.tensor([[0, 0, 0.5], [0, 0, 0.5], [0, 0, 0]], dtype=D)  # DIST's integer pixel centres
    T_i2 = cam_i.T_cam_world.clone().requires_grad_()
    T_j2 = cam_j.T_cam_world.clone().requires_grad_()
    depth2 = depth_i.clone().requires_grad_()
    loss, valid = twin.photometric_warp(
        depth2, cam_i.K[0] - shift, T_i2[0, :3, :3], T_i2[0, :3, 3], image_i,
        cam_j.K[0] - shift, T_j2[0, :3, :3], T_j2[0, :3, 3], image_j, depth_j,
    )  # fmt: skip
    grads2 = torch.autograd.grad(loss, [depth2, T_i2, T_j2])
    assert valid.sum() > 50
    assert torch.equal(out.valid, valid)
    torch.testing.assert_close(out.loss, loss)
    for a, b in zip(grads, grads2):
        assert a.abs().sum() > 0
        torch.testing.assert_close(a, b)


def tilted_plane_scene(width=6, height=5):
    cams = look_at(torch.tensor([[0.3, 0.2, -3.0], [-0.25, 0.1, -2.9]]), width=width, height=height)
    normal, offset = torch.tensor([-0.1, -0.2, 1.0], dtype=D), 0.05
    depth_i, depth_j = plane_depth(cams[0], normal, offset), plane_depth(cams[1], normal, offset)
    return (
        cams[0],
        cams[1],
        depth_i,
        depth_j,
        render(cams[0], depth_i, smooth_texture),
        render(cams[1], depth_j, smooth_texture),
        normal,
        offset,
    )


def assert_mask_stable(fn, inputs, valid, scale=1e-5, tries=4):
    """The kept pixels do not change under perturbations far larger than gradcheck's eps (so finite
    differences see one smooth branch)."""
    g = torch.Generator().manual_seed(0)
    for _ in range(tries):
        moved = [x.detach() + scale * torch.randn(x.shape, generator=g, dtype=D) for x in inputs]
        assert torch.equal(fn(*moved).valid, valid)


@pytest.mark.parametrize("rot_i, rot_j", [("quaternion", "6d"), ("axis_angle", "quaternion")])
def test_gradcheck_depth_and_both_poses(rot_i, rot_j):
    cam_i, cam_j, depth_i, depth_j, image_i, image_j, *_ = tilted_plane_scene()
    pose_i, pose_j = CameraPose(cam_i.T_cam_world, rot_i), CameraPose(cam_j.T_cam_world, rot_j)
    g = torch.Generator().manual_seed(1)
    # Off the true depth (still consistent) so the loss is not at its minimum.
    depth = (depth_i + 0.01 * torch.randn(depth_i.shape, generator=g, dtype=D)).requires_grad_()

    def warp(depth, ri, ti, rj, tj):
        ci = Camera(cam_i.K, functional_call(pose_i, {"rot": ri, "trans": ti}, ()), 6, 5)
        cj = Camera(cam_j.K, functional_call(pose_j, {"rot": rj, "trans": tj}, ()), 6, 5)
        return photometric_warp(depth, ci, image_i, cj, image_j, depth_j)

    inputs = [depth] + [p.detach().clone().requires_grad_() for p in (pose_i.rot, pose_i.trans, pose_j.rot, pose_j.trans)]
    out = warp(*inputs)
    assert out.valid.sum() >= 6 and float(out.loss.detach()) > 0
    assert_mask_stable(warp, inputs, out.valid)
    grads = torch.autograd.grad(out.loss, inputs)
    assert all(gr.abs().sum() > 0 for gr in grads)  # depth and both cameras receive gradient
    assert torch.equal(grads[0] != 0, out.valid)
    assert torch.autograd.gradcheck(lambda *x: warp(*x).loss, inputs)


def test_gradcheck_sim3_through_rendered_depth():
    # DIST real-data mode: world cameras, the shape (a plane here) and its depth in the canonical frame.
    R0 = axis_angle_to_matrix(torch.tensor([0.2, -0.3, 0.1], dtype=D))
    init = torch.cat([1.6 * R0, torch.tensor([[0.5], [-0.2], [1.0]], dtype=D)], dim=1)
    sim = Sim3(init, rotation="axis_angle", dtype=D)
    cam_c, cam_jc, _, _, image_i, image_j, normal, offset = tilted_plane_scene()
    # World cameras whose canonical versions (at the initial Sim3) are the scene's cameras.
    S = torch.diag(torch.tensor([1.6, 1.6, 1.6, 1], dtype=D))
    to_world = lambda cam: Camera(cam.K, S @ cam.T_cam_world @ torch.linalg.inv(sim.matrix().detach()), 6, 5)
    world_i, world_j = to_world(cam_c), to_world(cam_jc)
    torch.testing.assert_close(sim.cameras_in_canonical(world_i).T_cam_world, cam_c.T_cam_world)
    g = torch.Generator().manual_seed(2)
    inputs = [(p.detach() + 0.01 * torch.randn(p.shape, generator=g, dtype=D)).requires_grad_() for p in sim.parameters()]
    names = [n for n, _ in sim.named_parameters()]

    def warp(*params):
        p = dict(zip(names, params))
        ci = functional_call(_Canon(sim), {f"sim.{k}": v for k, v in p.items()}, (world_i,))
        cj = functional_call(_Canon(sim), {f"sim.{k}": v for k, v in p.items()}, (world_j,))
        depth_i = plane_depth(ci, normal, offset)  # the rendered depth moves with the Sim3
        return photometric_warp(depth_i, ci, image_i, cj, image_j, plane_depth(cj, normal, offset).detach())

    out = warp(*inputs)
    assert out.valid.sum() >= 6 and float(out.loss.detach()) > 0
    assert_mask_stable(warp, inputs, out.valid)
    assert all(gr.abs().sum() > 0 for gr in torch.autograd.grad(out.loss, inputs))
    assert torch.autograd.gradcheck(lambda *x: warp(*x).loss, inputs)


class _Canon(torch.nn.Module):
    def __init__(self, sim):
        super().__init__()
        self.sim = sim

    def forward(self, camera):
        return self.sim.cameras_in_canonical(camera)


def test_threshold_is_dists_squared_test_and_loss_helper():
    assert DIST_DEPTH_THRESHOLD == pytest.approx(0.0316227766)
    cam_i, cam_j, depth_i, depth_j, image_i, image_j, *_ = tilted_plane_scene(12, 10)
    out = photometric_warp(depth_i + 0.03, cam_i, image_i, cam_j, image_j, depth_j)
    off = photometric_warp(depth_i + 0.034, cam_i, image_i, cam_j, image_j, depth_j)
    assert out.valid.sum() > 20 and not off.valid.any()  # the view-j depths differ by ~0.03 * 1.01 here
    tight = photometric_warp(depth_i + 0.03, cam_i, image_i, cam_j, image_j, depth_j, depth_threshold=0.01)
    assert not tight.valid.any()
    torch.testing.assert_close(photometric_warp_loss(depth_i + 0.03, cam_i, image_i, cam_j, image_j, depth_j), out.loss)


def test_bad_inputs_name_the_argument():
    cam_i, cam_j, depth_i, depth_j, image_i, image_j, *_ = tilted_plane_scene()
    args = dict(depth_i=depth_i, camera_i=cam_i, image_i=image_i, camera_j=cam_j, image_j=image_j, depth_j=depth_j)
    cases = [
        ("depth_i", depth_i[:4], ValueError),
        ("depth_i", depth_i.float(), ValueError),
        ("depth_i", depth_i.tolist(), TypeError),
        ("image_i", image_i[..., :2], None),  # then image_j's C differs
        ("image_j", image_j.float(), ValueError),
        ("depth_j", depth_j.T, ValueError),
        ("camera_i", cam_i.T_cam_world, TypeError),
        ("camera_j", Camera.cat([cam_j, cam_j]), ValueError),
        ("mask_i", torch.ones(5, 6), ValueError),
        ("depth_threshold", 0.0, ValueError),
    ]
    for name, value, error in cases:
        bad = {**args, name: value}
        match = "image_j" if error is None else name
        with pytest.raises(error or ValueError, match=match):
            photometric_warp(**bad)
