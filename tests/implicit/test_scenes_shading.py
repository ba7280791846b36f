"""Built-in scenes agree with their torch twins; shading helpers give the colours they promise."""

import pytest
import torch

from taichi_sdf import viz as shading
from taichi_sdf.cameras import camera as C
from taichi_sdf.implicit.fields import field_values
from taichi_sdf.implicit.scenes import SCENES, make_scene
from taichi_sdf.implicit.sphere_trace import sphere_trace
from taichi_sdf.reference.implicit import scenes as scene_twins
from taichi_sdf.reference.implicit import sphere_trace as twin


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SCENES))
def test_scene_matches_twin(device, name):
    field = make_scene(name, dtype=torch.float64, device=device)
    pts = (torch.rand(500, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 2 - 1).to(device)
    torch.testing.assert_close(field_values(field, pts), scene_twins.twin(name)(pts, field.params), atol=1e-12, rtol=0)
    cam = C.look_at(torch.tensor([[1.5, 1.0, 2.0]]), width=32, height=32).to(device, torch.float32)
    o, d = (x.reshape(-1, 3).contiguous() for x in cam.image_rays())
    f32 = make_scene(name, device=device)
    r = sphere_trace(f32, o, d)
    rt = twin.sphere_trace(scene_twins.twin(f32.name), f32.params, o, d)
    assert r.hit.float().mean() > 0.05
    assert (r.hit == rt.hit).float().mean() >= 0.995
    both = r.hit & rt.hit
    assert (r.t - rt.t)[both].abs().max() < 1e-4


def test_make_scene_errors():
    with pytest.raises(ValueError, match="scene: expected one of"):
        make_scene("teapot")
    with pytest.raises(ValueError, match="params: scene 'sphere' expects 4"):
        make_scene("sphere", params=[1.0])


def test_shading_helpers():
    n = torch.tensor([[0.0, 1.0, 0.0], [0.0, -1.0, 0.0], [1.0, 0.0, 0.0]])
    hit = torch.tensor([True, True, False])
    nm = shading.normal_map(n, hit)
    torch.testing.assert_close(nm[0], torch.tensor([0.5, 1.0, 0.5]))
    torch.testing.assert_close(nm[2], torch.zeros(3))
    lam = shading.lambert(n, hit, light_dir=(0.0, -1.0, 0.0), albedo=(1.0, 0.5, 0.0), ambient=0.2)
    torch.testing.assert_close(lam[0], torch.tensor([1.0, 0.5, 0.0]))  # facing the light: full albedo
    torch.testing.assert_close(lam[1], torch.tensor([0.2, 0.1, 0.0]))  # facing away: ambient only
    dm = shading.depth_map(torch.tensor([1.0, 3.0, 9.0]), hit)
    assert dm[0, 0] == 1.0 and abs(float(dm[1, 0]) - 0.2) < 1e-6 and dm[2].sum() == 0
    ph = shading.phong(n, torch.tensor([[0.0, -1.0, 0.0]] * 3), hit, light_dir=(0.0, -1.0, 0.0), albedo=(0.5, 0.5, 0.5))
    assert ph[0, 0] > lam.new_tensor(0.5)  # the highlight adds to the diffuse term


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SCENES))
def test_packet_kernel_matches_scalar_kernel(device, name):
    """SIMD packets of rays (CPU fast path) give the scalar kernel's results."""
    field = make_scene(name, dtype=torch.float64, device=device)
    cam = C.look_at(torch.tensor([[0.4, 1.2, 2.2]]), width=23, height=19).to(device, torch.float64)  # 437 rays: a partial packet
    o, d = (x.reshape(-1, 3).contiguous() for x in cam.image_rays())
    with torch.no_grad():
        a = sphere_trace(field, o, d, packets=False)
        b = sphere_trace(field, o, d, packets=True)
    assert torch.equal(a.hit, b.hit) and torch.equal(a.steps, b.steps)
    torch.testing.assert_close(a.t, b.t, atol=1e-12, rtol=0)
    torch.testing.assert_close(a.min_sdf, b.min_sdf, atol=1e-12, rtol=0)


def test_no_grad_fast_path_matches_differentiable_path(device):
    field = make_scene("csg", dtype=torch.float64, device=device)
    cam = C.look_at(torch.tensor([[1.0, 1.0, 2.0]]), width=24, height=24).to(device, torch.float64)
    o, d = (x.reshape(-1, 3).contiguous() for x in cam.image_rays())
    with torch.no_grad():
        fast = sphere_trace(field, o, d)
    slow = sphere_trace(field.with_params(field.params.clone().requires_grad_()), o, d)
    assert torch.equal(fast.hit, slow.hit)
    torch.testing.assert_close(fast.t, slow.t.detach(), atol=1e-9, rtol=0)
    torch.testing.assert_close(fast.points, slow.points.detach(), atol=1e-9, rtol=0)
    # Central differences vs exact gradients: equal away from the CSG creases.
    close = ((fast.normals - slow.normals.detach()).norm(dim=-1) < 1e-4).float().mean()
    assert close > 0.97
    torch.testing.assert_close(fast.min_sdf, slow.min_sdf.detach(), atol=1e-9, rtol=0)
