"""The browser-camera adapter: viser's (position, wxyz, vertical fov) <-> the project's `Camera`."""

import math

import numpy as np
import pytest
import torch

from taichi_sdf.cameras.camera import look_at
from taichi_sdf.cameras.viser_camera import (
    camera_from_viser,
    matrix_to_quaternion,
    quaternion_to_matrix,
    vertical_fov,
    viser_pose,
)


def test_quaternion_round_trip_on_random_rotations():
    rng = np.random.default_rng(0)
    for _ in range(50):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        q = -q if q[0] < 0 else q
        R = quaternion_to_matrix(q)
        assert np.allclose(R @ R.T, np.eye(3), atol=1e-12) and np.linalg.det(R) == pytest.approx(1.0)
        assert np.allclose(matrix_to_quaternion(R), q, atol=1e-10)
    # 180-degree turns take the non-trace branches of Shepperd's method
    for axis in np.eye(3):
        R = 2 * np.outer(axis, axis) - np.eye(3)
        assert np.allclose(quaternion_to_matrix(matrix_to_quaternion(R)), R, atol=1e-12)


def test_a_look_at_camera_survives_the_round_trip_through_viser():
    cam = look_at(torch.tensor([[1.2, 0.7, -2.1]]), (0.1, 0.0, 0.2), (0.0, 1.0, 0.0), 64, 48, 50.0)
    wxyz, position = viser_pose(cam)
    back = camera_from_viser(position, wxyz, vertical_fov(cam), 64, 48)
    assert torch.allclose(back.T_cam_world.double(), cam.T_cam_world, atol=1e-5)
    assert torch.allclose(back.K.double(), cam.K, atol=1e-4)
    # and a world point projects to the same pixel
    p = torch.tensor([[0.3, -0.2, 0.4]])
    assert torch.allclose(back.project(p)[0], cam.to(dtype=torch.float32).project(p)[0], atol=1e-3)


def test_viser_axes_are_opencv_and_fov_is_vertical():
    # identity orientation: the camera looks down world +z with +y down in the image
    cam = camera_from_viser((0.0, 0.0, -3.0), (1.0, 0.0, 0.0, 0.0), math.radians(60.0), 80, 40)
    uv, z = cam.project(torch.tensor([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
    assert torch.allclose(uv[0, 0], torch.tensor([40.0, 20.0])) and z[0, 0] == pytest.approx(3.0)
    assert uv[0, 1, 1] > 20.0  # world +y is image down
    assert cam.K[0, 1, 1] == pytest.approx(20.0 / math.tan(math.radians(30.0)))  # fy from the height
    assert cam.K[0, 0, 0] == cam.K[0, 1, 1]  # square pixels


@pytest.mark.parametrize(("kw", "match"), [
    ({"wxyz": (0.0, 0.0, 0.0, 0.0)}, "wxyz"), ({"fov_y": 0.0}, "fov_y"), ({"fov_y": 4.0}, "fov_y"),
    ({"width": 0}, "width"), ({"position": (0.0, float("nan"), 0.0)}, "position"),
])  # fmt: skip
def test_bad_viser_cameras_are_named(kw, match):
    args = {"position": (0.0, 0.0, -3.0), "wxyz": (1.0, 0.0, 0.0, 0.0), "fov_y": 1.0, "width": 8, "height": 8} | kw
    with pytest.raises(ValueError, match=match):
        camera_from_viser(**args)
