"""Quaternion / parameterised poses, pose errors and the Sim(3) world <-> canonical transform."""

import math

import pytest
import torch
from scipy.spatial.transform import Rotation
from torch.func import functional_call

from taichi_sdf.cameras.camera import look_at
from taichi_sdf.cameras.pose import (
    CameraPose,
    PoseRefinement,
    axis_angle_to_matrix,
    camera_center_error,
    matrix_to_axis_angle,
    matrix_to_quaternion,
    matrix_to_rotation,
    pose_to_matrix,
    quaternion_to_matrix,
    rotation_error_deg,
    rotation_to_matrix,
    translation_error,
)
from taichi_sdf.cameras.sim3 import Sim3, decompose_similarity

D = torch.float64


def random_rotations(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(n, 3, generator=g, dtype=D)
    return axis_angle_to_matrix(v / v.norm(dim=-1, keepdim=True) * torch.rand(n, 1, generator=g, dtype=D) * 3.1)


def test_quaternion_known_rotation_and_scipy():
    c = math.cos(math.pi / 4)
    Rz90 = torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]], dtype=D)
    torch.testing.assert_close(quaternion_to_matrix(torch.tensor([c, 0, 0, c], dtype=D)), Rz90)
    # Normalised inside: any positive multiple (and the antipode) gives the same rotation.
    torch.testing.assert_close(quaternion_to_matrix(torch.tensor([-3 * c, 0, 0, -3 * c], dtype=D)), Rz90)
    q = torch.randn(20, 4, generator=torch.Generator().manual_seed(3), dtype=D)
    scipy_R = torch.from_numpy(Rotation.from_quat(q[:, [1, 2, 3, 0]].numpy()).as_matrix())  # scipy: (x, y, z, w)
    torch.testing.assert_close(quaternion_to_matrix(q), scipy_R)


def test_matrix_to_quaternion_roundtrip_including_half_turns():
    R = torch.cat(
        [random_rotations(32), torch.diag_embed(torch.tensor([[1.0, -1, -1], [-1, 1, -1], [-1, -1, 1], [1, 1, 1]], dtype=D))]
    )
    q = matrix_to_quaternion(R)
    assert (q[:, 0] >= 0).all()
    torch.testing.assert_close(q.norm(dim=-1), torch.ones(len(R), dtype=D))
    torch.testing.assert_close(quaternion_to_matrix(q), R)
    # Same quaternion as scipy up to the sign convention (w >= 0).
    ref = torch.from_numpy(Rotation.from_matrix(R[:32].numpy()).as_quat())[:, [3, 0, 1, 2]]
    torch.testing.assert_close(q[:32], ref * torch.sign(ref[:, :1]))


def test_quaternion_gradcheck():
    q = torch.tensor([[0.9, 0.1, -0.3, 0.2], [0.1, 2.0, 0.5, -1.0]], dtype=D, requires_grad=True)
    assert torch.autograd.gradcheck(quaternion_to_matrix, (q,))
    R = random_rotations(3, seed=5).requires_grad_()
    assert torch.autograd.gradcheck(matrix_to_quaternion, (R,))


@pytest.mark.parametrize("rotation", ["quaternion", "6d", "axis_angle"])
def test_rotation_parameterisations_roundtrip(rotation):
    R = random_rotations(8, seed=1)
    torch.testing.assert_close(rotation_to_matrix(matrix_to_rotation(R, rotation), rotation), R)


def test_rotation_and_translation_errors_of_known_values():
    Rz = lambda deg: axis_angle_to_matrix(torch.tensor([0, 0, math.radians(deg)], dtype=D))
    Rx = lambda deg: axis_angle_to_matrix(torch.tensor([math.radians(deg), 0, 0], dtype=D))
    for deg in (0.0, 1e-4, 30.0, 90.0, 179.9, 180.0):
        torch.testing.assert_close(
            rotation_error_deg(Rz(10.0), Rz(10.0) @ Rx(deg)), torch.tensor(deg, dtype=D), atol=1e-9, rtol=0
        )
    R1, R2 = random_rotations(10, seed=2), random_rotations(10, seed=3)
    angle = matrix_to_axis_angle(R1.transpose(1, 2) @ R2).norm(dim=-1)
    torch.testing.assert_close(rotation_error_deg(R1, R2), torch.rad2deg(angle))
    torch.testing.assert_close(translation_error(torch.tensor([1.0, 2, 3]), torch.tensor([4.0, 6, 3])), torch.tensor(5.0))
    # Same camera centre, different rotation: centre error 0, translation error not.
    cam = look_at(torch.tensor([[0.0, 0.5, 2.0]]))
    T1 = cam.T_cam_world[0]
    T2 = torch.eye(4, dtype=D)
    T2[:3, :3] = Rx(40.0) @ T1[:3, :3]  # about the camera x axis (not the optical axis, which keeps t)
    T2[:3, 3] = -T2[:3, :3] @ cam.centers[0]
    torch.testing.assert_close(camera_center_error(T1, T2), torch.tensor(0.0, dtype=D), atol=1e-12, rtol=0)
    assert translation_error(T1[:3, 3], T2[:3, 3]) > 0.5
    T3 = T1.clone()
    T3[:3, 3] -= T1[:3, :3] @ torch.tensor([0.3, 0.0, 0.4], dtype=D)  # centre moved by (0.3, 0, 0.4)
    torch.testing.assert_close(camera_center_error(T1, T3), torch.tensor(0.5, dtype=D))


@pytest.mark.parametrize("rotation", ["quaternion", "6d", "axis_angle"])
def test_camera_pose_starts_at_its_init_and_gives_gradients(rotation):
    cams = look_at(torch.tensor([[0.0, 0.5, 2.0], [1.5, -0.3, 1.0]]), width=6, height=5)
    pose = CameraPose(cams.T_cam_world, rotation=rotation)
    assert pose.rot.shape == (2, {"quaternion": 4, "6d": 6, "axis_angle": 3}[rotation])
    torch.testing.assert_close(pose(), cams.T_cam_world)
    cam = pose.camera(cams.K, 6, 5)
    torch.testing.assert_close(cam.T_cam_world, cams.T_cam_world)
    uv, _ = cam.project(torch.tensor([[0.1, 0.2, -0.1]], dtype=D))
    uv.sum().backward()
    assert pose.rot.grad.abs().sum() > 0 and pose.trans.grad.abs().sum() > 0

    def T_of(rot, trans):
        return functional_call(pose, {"rot": rot, "trans": trans}, ())

    assert torch.autograd.gradcheck(
        T_of, (pose.rot.detach().clone().requires_grad_(), pose.trans.detach().clone().requires_grad_())
    )


def test_pose_refinement_quaternion_starts_at_identity():
    refine = PoseRefinement(2, rotation="quaternion").double()
    torch.testing.assert_close(refine.delta(), torch.eye(4, dtype=D).expand(2, 4, 4))


def test_pose_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="rotation"):
        rotation_to_matrix(torch.zeros(3), "euler")
    with pytest.raises(ValueError, match="q: expected"):
        quaternion_to_matrix(torch.ones(2, 3))
    with pytest.raises(ValueError, match="R: expected"):
        matrix_to_quaternion(torch.eye(4))
    with pytest.raises(ValueError, match="translation"):
        pose_to_matrix(torch.tensor([1.0, 0, 0, 0]), torch.zeros(2))
    with pytest.raises(ValueError, match="T_cam_world"):
        CameraPose(torch.eye(3))
    with pytest.raises(ValueError, match="T_cam_world"):
        CameraPose(torch.diag(torch.tensor([1.0, 1, -1, 1])))  # a reflection
    with pytest.raises(ValueError, match="R2"):
        rotation_error_deg(torch.eye(3), torch.eye(2))
    with pytest.raises(TypeError, match="t1"):
        translation_error([0, 0, 0], torch.zeros(3))


# -- Sim(3) -----------------------------------------------------------------------------------------


def test_sim3_known_transform_and_dist_composition():
    sim = Sim3(dtype=D)
    with torch.no_grad():
        sim.log_scale.fill_(math.log(2.0))
        sim.rot.copy_(torch.tensor([0, 0, math.pi / 2], dtype=D))
        sim.trans.copy_(torch.tensor([1.0, 2, 3], dtype=D))
    x = torch.tensor([[1.0, 0, 0], [0, 0, 1]], dtype=D)
    torch.testing.assert_close(sim.from_canonical(x), torch.tensor([[1.0, 4, 3], [1, 2, 5]], dtype=D))
    torch.testing.assert_close(sim.to_canonical(sim.from_canonical(x)), x)
    torch.testing.assert_close(sim.scale, torch.tensor(2.0, dtype=D))
    # With an init the correction is composed on the left (PMO/DIST: delta @ estim_3Dsim).
    init = torch.eye(4, dtype=D)
    init[:3, :3] = 0.5 * axis_angle_to_matrix(torch.tensor([0.3, -0.2, 0.1], dtype=D))
    init[:3, 3] = torch.tensor([0.1, 0.2, -0.3], dtype=D)
    sim2 = Sim3(init[:3], dtype=D)
    sim2.load_state_dict({**sim.state_dict(), "init": sim2.init})
    torch.testing.assert_close(sim2.matrix(), sim.matrix() @ init)
    torch.testing.assert_close(sim2.scale, torch.tensor(1.0, dtype=D))
    torch.testing.assert_close(sim2.from_canonical(x), sim.from_canonical(x @ init[:3, :3].T + init[:3, 3]))


@pytest.mark.parametrize("rotation", ["axis_angle", "quaternion", "6d"])
def test_sim3_from_rough_matrix_roundtrips_and_normals(rotation):
    R = random_rotations(1, seed=4)[0]
    M = torch.cat([1.7 * R, torch.tensor([[0.4], [-1.0], [2.0]], dtype=D)], dim=1)  # [3, 4]
    sim = Sim3(M, rotation=rotation, dtype=D)
    torch.testing.assert_close(sim.matrix()[:3], M)
    s, R_, t = sim.parts()
    torch.testing.assert_close(s, torch.tensor(1.7, dtype=D))
    torch.testing.assert_close(R_, R)
    # A rough (not exactly similar) matrix is projected on the nearest similarity.
    rough = M + 1e-3 * torch.randn(3, 4, generator=torch.Generator().manual_seed(0), dtype=D)
    s2, R2, _ = decompose_similarity(rough)
    assert abs(float(s2) - 1.7) < 5e-3 and float(rotation_error_deg(R2, R)) < 0.5
    x = torch.randn(7, 3, generator=torch.Generator().manual_seed(1), dtype=D)
    torch.testing.assert_close(sim.from_canonical(sim.to_canonical(x)), x)
    torch.testing.assert_close(sim.to_canonical(sim.from_canonical(x)), x)
    n = x / x.norm(dim=-1, keepdim=True)
    n_c = sim.normals_to_canonical(n)
    torch.testing.assert_close(n_c.norm(dim=-1), torch.ones(7, dtype=D))
    torch.testing.assert_close(sim.normals_from_canonical(n_c), n)
    # Normals follow the points: the direction between two mapped points is the mapped direction.
    a, b = x[:1], x[:1] + 1e-3 * n[:1]
    torch.testing.assert_close(sim.to_canonical(b) - sim.to_canonical(a), 1e-3 / 1.7 * n_c[:1])


def test_sim3_cameras_in_canonical_project_like_the_world_and_scale_depth():
    R = random_rotations(1, seed=6)[0]
    sim = Sim3(torch.cat([2.5 * R, torch.tensor([[1.0], [0.5], [-2.0]], dtype=D)], dim=1), dtype=D)
    world = look_at(
        torch.tensor([[4.0, 3.0, 5.0], [-6.0, 1.0, 0.0]]) + torch.tensor([1.0, 0.5, -2.0]), torch.tensor([1.0, 0.5, -2.0])
    )
    canon = sim.cameras_in_canonical(world)
    x_c = 0.3 * torch.randn(9, 3, generator=torch.Generator().manual_seed(2), dtype=D)
    uv_c, z_c = canon.project(x_c)
    uv_w, z_w = world.project(sim.from_canonical(x_c))
    torch.testing.assert_close(uv_c, uv_w)
    torch.testing.assert_close(z_c, z_w / 2.5)


@pytest.mark.parametrize("rotation", ["axis_angle", "quaternion", "6d"])
def test_sim3_gradcheck(rotation):
    sim = Sim3(torch.cat([1.3 * random_rotations(1, seed=7)[0], torch.ones(3, 1, dtype=D)], dim=1), rotation=rotation, dtype=D)
    g = torch.Generator().manual_seed(3)
    params = {
        k: (v.detach() + 0.1 * torch.randn(v.shape, generator=g, dtype=D)).requires_grad_() for k, v in sim.named_parameters()
    }
    x = torch.randn(4, 3, generator=g, dtype=D, requires_grad=True)
    cam = look_at(torch.tensor([[0.5, 0.2, 3.0]]))

    def f(log_scale, rot, trans, x):
        p = {"log_scale": log_scale, "rot": rot, "trans": trans}
        cam_c = call_with(sim, p, "cameras_in_canonical", cam)
        return tuple(call_with(sim, p, m, x) for m in ("to_canonical", "from_canonical", "normals_to_canonical")) + (
            cam_c.T_cam_world,
        )

    assert torch.autograd.gradcheck(f, (params["log_scale"], params["rot"], params["trans"], x))


class _Method(torch.nn.Module):
    def __init__(self, sim, name):
        super().__init__()
        self.sim, self.name = sim, name

    def forward(self, *args):
        return getattr(self.sim, self.name)(*args)


def call_with(module, params, name, *args):
    """`module.<name>(*args)` with its parameters replaced by the tensors `params` (differentiable)."""
    return functional_call(_Method(module, name), {f"sim.{k}": v for k, v in params.items()}, args)


def test_sim3_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="init"):
        Sim3(torch.diag(torch.tensor([1.0, 1.0, -1.0, 1.0])))  # a reflection
    with pytest.raises(ValueError, match="init"):
        Sim3(torch.eye(3))
    with pytest.raises(ValueError, match="rotation"):
        Sim3(rotation="euler")
    with pytest.raises(ValueError, match="x: expected shape"):
        Sim3().to_canonical(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="x: expected dtype"):
        Sim3().to_canonical(torch.zeros(4, 3, dtype=D))
    with pytest.raises(TypeError, match="camera"):
        Sim3().cameras_in_canonical(torch.eye(4))
