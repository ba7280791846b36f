"""Soft rasterization (SoftRas, DIB-R, hard): agreement with the torch twin (values and VJPs, through
the camera projection), float64 gradchecks, hand-known pixels, edge cases, tiled == brute force."""

import math
from pathlib import Path

import pytest
import torch

from taichi_sdf.cameras.camera import Camera, look_at
from taichi_sdf.mesh import raster
from taichi_sdf.reference.mesh import raster as twin
from tests.helpers import assert_matches_twin

W, H = 16, 12
TOL = {torch.float32: dict(atol=2e-4, rtol=1e-4), torch.float64: dict(atol=1e-10, rtol=1e-9)}
SOFTRAS = dict(sigma=1e-3, gamma=1e-2, far=10.0)
DIBR = dict(sigmainv=300.0, boxlen=0.25, knum=4)


def random_mesh(dtype, device, F=40, V=30, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    v = (torch.rand(V, 3, generator=g, dtype=dtype) * 2 - 1) * scale
    tris, seen = [], set()
    while len(tris) < F:  # distinct triangles (a duplicate would tie in depth with its twin)
        t = torch.randperm(V, generator=g)[:3]
        if frozenset(t.tolist()) not in seen:
            seen.add(frozenset(t.tolist()))
            tris.append(t)
    faces = torch.stack(tris).to(torch.int32)
    colors = torch.rand(V, 2, generator=g, dtype=dtype)  # 2 channels everywhere: one compiled variant
    return v.to(device), faces.to(device), colors.to(device)


def cameras(dtype, device, width=W, height=H, n=2):
    eye = torch.tensor([[0.3, 0.4, 3.0], [-2.5, 0.5, 1.5], [0.5, -2.8, 0.9]], dtype=torch.float64)[:n]
    return look_at(eye, width=width, height=height, fov_x_deg=50.0).to(device, dtype)


def outputs(out):
    return tuple(x for x in (out.rgb, out.alpha, out.depth, out.face_id, out.bary) if x is not None)


# -- (a, b) values and VJPs vs the twin ----------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mode,kw", [("softras", SOFTRAS), ("dibr", DIBR)])
def test_matches_twin_values_and_vjps(device, dtype, mode, kw):
    """Random meshes seen by 2 cameras: rgb, alpha, depth, face ids, barycentrics and the gradients
    w.r.t. vertices, colours, K and T_cam_world (random cotangents) agree with the twin."""
    v, faces, colors = random_mesh(dtype, device)
    cam = cameras(dtype, device)

    def run(fn):
        return lambda v, c, K, T: outputs(fn(v, faces, Camera(K, T, W, H), c, mode=mode, **kw))

    inputs = (v.requires_grad_(), colors.requires_grad_(), cam.K.clone().requires_grad_(),
              cam.T_cam_world.clone().requires_grad_())  # fmt: skip
    out = raster.soft_rasterize(v, faces, cam, colors, mode=mode, **kw)
    assert 0.2 < float((out.face_id >= 0).float().mean()) < 0.95  # the scene covers part of the image
    assert_matches_twin(run(raster.soft_rasterize), run(twin.soft_rasterize), inputs, **TOL[dtype])


@pytest.mark.parametrize("mode,with_colors", [("softras", False), ("dibr", True)])
def test_matches_twin_default_settings_batched_vertices(device, mode, with_colors):
    """Kaolin/SoftRas defaults (sharp), a mesh per camera, float32; SoftRas silhouette only (the
    colour-free kernel variant)."""
    dtype = torch.float32
    v, faces, colors = random_mesh(dtype, device, F=24, seed=3)
    vb = torch.stack([v, v.flip(0)])
    cb = torch.stack([colors, colors.flip(0)]) if with_colors else None
    cam = cameras(dtype, device)
    assert_matches_twin(
        lambda v: outputs(raster.soft_rasterize(v, faces, cam, cb, mode=mode)),
        lambda v: outputs(twin.soft_rasterize(v, faces, cam, cb, mode=mode)),
        (vb.requires_grad_(),), **TOL[dtype],
    )  # fmt: skip


@pytest.mark.parametrize("dtype", [torch.float32])
def test_hard_matches_twin(device, dtype):
    v, faces, _ = random_mesh(dtype, device, F=60, seed=1)
    cam = cameras(dtype, device)
    a = raster.hard_rasterize(v, faces, cam)
    b = twin.hard_rasterize(v, faces, cam)
    for x, y in zip(outputs(a), outputs(b)):
        torch.testing.assert_close(x, y, **TOL[dtype])
    assert not a.depth.requires_grad
    assert a.rgb is None and set(a.face_id.unique().tolist()) - {-1} <= set(range(60))


# -- (c) gradcheck --------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode,kw", [
    ("softras", dict(sigma=0.05, gamma=0.05, far=5.0, dist_eps=1e-8)),
    ("dibr", dict(sigmainv=20.0, boxlen=0.6, knum=3)),
])  # fmt: skip
def test_gradcheck(device, mode, kw):
    """Tiny scene (3 faces, 6x5 pixels), float64, settings smooth at the pixel grid: gradients w.r.t.
    vertices, colours, intrinsics K and pose T_cam_world."""
    dtype = torch.float64
    v = torch.tensor([[-0.6, -0.5, 0.1], [0.7, -0.4, -0.2], [0.1, 0.6, 0.3], [-0.5, 0.5, -0.3], [0.6, 0.45, 0.2]],
                     dtype=dtype, device=device)  # fmt: skip
    faces = torch.tensor([[0, 1, 2], [0, 2, 3], [1, 4, 2]], dtype=torch.int32, device=device)
    colors = torch.rand(5, 2, generator=torch.Generator().manual_seed(0), dtype=dtype).to(device)
    cam = cameras(dtype, device, width=6, height=5, n=1)
    cam = Camera(cam.K, cam.T_cam_world, 6, 5)

    def fn(v, c, K, T):
        out = raster.soft_rasterize(v, faces, Camera(K, T, 6, 5), c, mode=mode, **kw)
        return out.rgb, out.alpha, out.depth

    out = raster.soft_rasterize(v, faces, cam, colors, mode=mode, **kw)
    assert 0 < int((out.face_id >= 0).sum()) < 30
    K, T = cam.K.clone().requires_grad_(), cam.T_cam_world.clone().requires_grad_()
    assert torch.autograd.gradcheck(fn, (v.requires_grad_(), colors.requires_grad_(), K, T), atol=1e-6, rtol=1e-4)


# -- (d) hand-known pixels ------------------------------------------------------------------------------


def _screen(xy, z, dtype, device):
    xy = torch.as_tensor(xy, dtype=dtype)
    z = torch.as_tensor(z, dtype=dtype).expand(xy.shape[0])
    return torch.cat([xy, z[:, None]], -1)[None].to(device)


@pytest.mark.parametrize("mode", ["softras", "dibr"])
def test_hand_known_coverage(device, mode):
    """One big triangle with a vertical edge through the centres of column 4 (x = 4.5)."""
    dtype = torch.float32
    sv = _screen([[4.5, -10.0], [4.5, 30.0], [40.0, 5.0]], 2.0, dtype, device)
    faces = torch.tensor([[0, 1, 2]], dtype=torch.int32, device=device)
    colors = torch.ones(3, 2, dtype=dtype, device=device) if mode == "dibr" else None  # compiled variants
    out = raster.soft_rasterize_screen(sv, faces, W, H, colors, mode=mode)
    a = out.alpha[0]
    assert float(a[5, 10]) == 1.0  # deep inside (SoftRas: D = sigmoid(huge) = 1; DIB-R: covered)
    assert float(a[5, 0]) < 1e-12  # 4 pixels outside the edge
    assert int(out.face_id[0, 5, 4]) == 0  # on the edge counts as inside
    if mode == "softras":
        assert float(a[5, 4]) == 0.5  # on the edge: d = 0, D = sigmoid(0)
        # one pixel outside: d^2 = (2/12)^2 NDC^2 is beyond SoftRas' cut-off 9.2 sigma: nothing
        assert float(a[5, 3]) == 0.0
        # with a wide sigma: D = sigmoid(-+d^2 / sigma) one pixel outside / inside
        sig = 0.02
        out = raster.soft_rasterize_screen(sv, faces, W, H, mode=mode, sigma=sig)
        assert abs(float(out.alpha[0, 5, 3]) - 1 / (1 + math.exp((2 / 12) ** 2 / sig))) < 1e-6
        assert abs(float(out.alpha[0, 5, 5]) - 1 / (1 + math.exp(-((2 / 12) ** 2) / sig))) < 1e-6
    else:
        # DIB-R: uncovered pixel at d = 1 px gets exp(-d^2 * sigmainv)
        assert abs(float(a[5, 3]) - math.exp(-((2 / 12) ** 2) * 7000.0)) < 1e-6


def test_hand_known_quad_hard(device):
    """Two triangles tiling the rectangle [1, 9] x [1, 7]; no pixel centre lies on the diagonal."""
    dtype = torch.float32
    xy = [[1.0, 1.0], [9.0, 1.0], [9.0, 7.0], [1.0, 7.0]]
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]], dtype=torch.int32, device=device)
    sv = _screen(xy, 2.0, dtype, device)
    out = raster.hard_rasterize_screen(sv, faces, 10, 8)
    jj, ii = torch.meshgrid(torch.arange(8) + 0.5, torch.arange(10) + 0.5, indexing="ij")
    inside = (ii > 1) & (ii < 9) & (jj > 1) & (jj < 7)
    upper = (jj - 1) < 0.75 * (ii - 1)
    expected = torch.where(inside, torch.where(upper, 0, 1), -1).to(torch.int32)
    assert torch.equal(out.face_id[0].cpu(), expected)
    assert torch.equal(out.alpha[0].cpu(), inside.to(dtype))
    # pixel (x=6, y=2), centre (6.5, 2.5): w = (0.3125, 0.4375, 0.25) in face 0, depth 2
    torch.testing.assert_close(out.bary[0, 2, 6].cpu(), torch.tensor([0.3125, 0.4375, 0.25], dtype=dtype))
    assert float(out.depth[0, 2, 6]) == pytest.approx(2.0, abs=1e-6)
    assert float(out.depth[0, 0, 0]) == 0.0 and float(out.bary[0, 0, 0].abs().sum()) == 0.0
    # perspective-correct barycentrics with z = (1, 2, 4, 1): b_k ~ w_k / z_k, depth = 1 / sum(w_k / z_k)
    sv = torch.cat([sv[..., :2], torch.tensor([1.0, 2.0, 4.0, 1.0], dtype=dtype, device=device)[None, :, None]], -1)
    out = raster.hard_rasterize_screen(sv, faces, 10, 8)
    q = torch.tensor([0.3125 / 1, 0.4375 / 2, 0.25 / 4], dtype=dtype)
    torch.testing.assert_close(out.bary[0, 2, 6].cpu(), q / q.sum())
    assert float(out.depth[0, 2, 6]) == pytest.approx(1 / float(q.sum()), abs=1e-6)
    # attributes interpolate with those barycentrics
    attr = torch.arange(12, dtype=dtype, device=device).reshape(4, 3)
    img = raster.interpolate(attr, faces, out)
    torch.testing.assert_close(img[0, 2, 6], (out.bary[0, 2, 6][:, None] * attr[[0, 1, 2]]).sum(0))
    assert float(img[0, 0, 0].abs().sum()) == 0.0


def test_front_face_wins(device):
    """Two overlapping triangles: the nearer one (smaller camera z) owns the pixel in every mode."""
    dtype = torch.float32
    xy = [[0.0, 0.0], [16.0, 0.0], [0.0, 12.0]]
    sv = torch.cat([_screen(xy, 3.0, dtype, device), _screen(xy, 2.0, dtype, device)], 1)
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]], dtype=torch.int32, device=device)
    colors = torch.tensor([[1.0, 1.0]] * 3 + [[0.0, 0.0]] * 3, dtype=dtype, device=device)
    for mode in ("softras", "dibr"):
        out = raster.soft_rasterize_screen(sv, faces, W, H, colors, mode=mode)
        assert int(out.face_id[0, 2, 2]) == 1 and float(out.depth[0, 2, 2]) == pytest.approx(2.0)
        assert float(out.rgb[0, 2, 2, 0]) < 1e-6  # the front colour (softmax with gamma 1e-4)
    assert int(raster.hard_rasterize_screen(sv, faces, W, H).face_id[0, 2, 2]) == 1


# -- (e) edge cases ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["softras", "dibr"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_degenerate_behind_camera_and_empty(device, mode, dtype):
    """Zero-area faces (repeated index, collinear points), faces behind or on the camera plane, and an
    empty mesh: finite outputs, finite gradients, zero gradient for every skipped face."""
    cam = cameras(dtype, device, n=1)
    centre = cam.centers[0]
    fwd = cam.R[0, 2]  # camera z axis in world
    good = [[-0.5, -0.5, 0.0], [0.5, -0.4, 0.1], [0.0, 0.6, 0.0]]
    collinear = [[-0.3, 0.0, 0.2], [0.0, 0.1, 0.2], [0.3, 0.2, 0.2]]
    v = torch.tensor(good + collinear, dtype=dtype, device=device)
    behind = torch.stack([centre - fwd + 0.3 * cam.R[0, 0], centre - fwd - 0.3 * cam.R[0, 1], centre])  # z<0, z=0
    v = torch.cat([v, behind, (centre + 0.5 * fwd)[None]]).contiguous()
    # good, collinear, repeated index, all behind, crossing the camera plane, a corner at z = 0
    faces = torch.tensor([[0, 1, 2], [3, 4, 5], [0, 0, 1], [6, 7, 8], [0, 1, 6], [2, 9, 8]], dtype=torch.int32,
                         device=device)  # fmt: skip
    colors = torch.rand(10, 2, dtype=dtype).to(device)
    vv, cc = v.clone().requires_grad_(), colors.clone().requires_grad_()
    out = raster.soft_rasterize(vv, faces, cam, cc, mode=mode, sigma=1e-3)
    assert all(torch.isfinite(x).all() for x in (out.rgb, out.alpha, out.depth, out.bary))
    assert set(out.face_id.unique().tolist()) <= {-1, 0}  # only the good face draws
    loss = (out.rgb.sum() + out.alpha.sum() + out.depth.sum())
    loss.backward()
    assert torch.isfinite(vv.grad).all() and torch.isfinite(cc.grad).all()
    assert vv.grad[:3].abs().sum() > 0
    assert float(vv.grad[3:].abs().sum()) == 0.0 and float(cc.grad[3:].abs().sum()) == 0.0
    # a face whose corner sits at the near plane is skipped too
    z_first = float(raster.project_vertices(v[:1], cam)[0, 0, 2])
    out2 = raster.soft_rasterize(v, faces[:1], cam, colors, mode=mode, near=z_first)
    assert torch.isfinite(out2.alpha).all() and int(out2.face_id.max()) == -1
    # empty mesh: background, zero (finite) gradients
    vv = v.clone().requires_grad_()
    empty = torch.zeros(0, 3, dtype=torch.int64, device=device)
    out = raster.soft_rasterize(vv, empty, cam, cc, mode=mode, background=(0.1, 0.2))
    assert float(out.alpha.detach().abs().max()) == 0.0 and torch.equal(out.face_id, torch.full_like(out.face_id, -1))
    torch.testing.assert_close(out.rgb[0, 3, 4], torch.tensor([0.1, 0.2], dtype=dtype, device=device))
    (out.rgb.sum() + out.alpha.sum()).backward()
    assert float(vv.grad.abs().sum()) == 0.0
    hard = raster.hard_rasterize(v, empty, cam)
    assert int(hard.face_id.max()) == -1


def test_mesh_off_screen_and_huge_coordinates(device):
    """Faces entirely off screen, or with vertices projecting to huge pixel coordinates, are defined."""
    dtype = torch.float32
    sv = _screen([[-100.0, -100.0], [-90.0, -100.0], [-95.0, -90.0], [-1e7, -1e7], [1e7, -1e7], [0.0, 1e7]], 2.0,
                 dtype, device)  # fmt: skip
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]], dtype=torch.int32, device=device)
    svg = sv.clone().requires_grad_()
    out = raster.soft_rasterize_screen(svg, faces, W, H, sigma=1e-4)
    assert float(out.alpha.detach().min()) == 1.0 and int(out.face_id.min()) == 1
    out.alpha.sum().backward()
    assert torch.isfinite(svg.grad).all()


def test_tile_list_limit_raises(device, monkeypatch):
    v, faces, colors = random_mesh(torch.float32, device)
    monkeypatch.setattr(raster, "MAX_TILE_ENTRIES", 10)
    with pytest.raises(ValueError, match="tile, face"):
        raster.soft_rasterize(v, faces, cameras(torch.float32, device), colors)


def test_validation_errors(device):
    v, faces, colors = random_mesh(torch.float32, device)
    cam = cameras(torch.float32, device)
    with pytest.raises(ValueError, match=r"faces: expected vertex indices in \[0, 30\)"):
        raster.soft_rasterize(v, faces + 5, cam)
    with pytest.raises(ValueError, match="faces: expected dtype int32 or int64"):
        raster.soft_rasterize(v, faces.float(), cam)
    with pytest.raises(ValueError, match="colors: expected dtype float32"):
        raster.soft_rasterize(v, faces, cam, colors.double())
    with pytest.raises(ValueError, match="colors: expected shape"):
        raster.soft_rasterize(v, faces, cam, colors[:5])
    with pytest.raises(ValueError, match="vertices: expected a batch of 2"):
        raster.soft_rasterize(v[None].expand(3, -1, -1).contiguous(), faces, cam)
    with pytest.raises(ValueError, match="mode: expected one of"):
        raster.soft_rasterize(v, faces, cam, mode="nvdiffrast")
    with pytest.raises(ValueError, match="sigma: expected a positive"):
        raster.soft_rasterize(v, faces, cam, sigma=0.0)
    with pytest.raises(ValueError, match="background: expected a float or 2 floats"):
        raster.soft_rasterize(v, faces, cam, colors, background=(1.0, 0.0, 0.5))
    with pytest.raises(ValueError, match="tile_size: expected a multiple of 4"):
        raster.soft_rasterize(v, faces, cam, tile_size=6)
    with pytest.raises(TypeError, match="cameras: expected a taichi_sdf.Camera"):
        raster.soft_rasterize(v, faces, None)


# -- (f) tiles ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode,kw", [("softras", SOFTRAS), ("dibr", DIBR)])
def test_tiled_equals_single_tile(device, mode, kw):
    """Small tiles give exactly the result of one tile holding every face (brute force), gradients too."""
    dtype = torch.float64
    v, faces, colors = random_mesh(dtype, device, F=60, V=40, seed=5)
    cam = cameras(dtype, device, width=37, height=29)
    res = []
    for tile in (4, 8, 64):
        vv, cc = v.clone().requires_grad_(), colors.clone().requires_grad_()
        out = raster.soft_rasterize(vv, faces, cam, cc, mode=mode, tile_size=tile, **kw)
        (out.rgb.square().sum() + out.alpha.square().sum() + out.depth.sum()).backward()
        res.append((outputs(out), vv.grad, cc.grad))
    for other in res[:2]:
        for a, b in zip(other[0], res[2][0]):
            torch.testing.assert_close(a, b, atol=0, rtol=0)
        torch.testing.assert_close(other[1], res[2][1], atol=1e-12, rtol=0)
        torch.testing.assert_close(other[2], res[2][2], atol=1e-12, rtol=0)


def test_module_and_repeatability(device):
    dtype = torch.float32
    v, faces, colors = random_mesh(dtype, device)
    cam = cameras(dtype, device)
    module = raster.SoftRasterizer("softras", sigma=1e-3, gamma=1e-2)
    assert "sigma=0.001" in repr(module)
    grads = []
    for _ in range(2):
        vv = v.clone().requires_grad_()
        out = module(vv, faces, cam, colors)
        (out.rgb.sum() + out.alpha.sum()).backward()
        grads.append(vv.grad)
    torch.testing.assert_close(grads[0], grads[1], atol=0, rtol=0)  # deterministic (no atomics)


def test_dibr_backward_stays_finite_next_to_tiny_faces():
    # A predicted mesh (642 vertices) and camera from the single-image DIB-R app where the backward gave
    # 36 NaN vertex and 9 NaN colour gradients: lanes of a packet outside a tiny face have sum_k w_k / z_k
    # = 0, so their perspective barycentrics are inf, and inf times a zero pixel gradient was NaN.
    import numpy as np

    from taichi_sdf.cameras.camera import Camera
    from taichi_sdf.mesh.render import render_mesh

    z = np.load(Path(__file__).parent / "data" / "dibr_nan_case.npz")
    v = torch.from_numpy(z["vertices"]).requires_grad_(True)
    c = torch.from_numpy(z["colors"]).requires_grad_(True)
    W, H = (int(x) for x in z["size"])
    cam = Camera(torch.from_numpy(z["K"])[None], torch.from_numpy(z["T"])[None], W, H)
    out = render_mesh(v[None], torch.from_numpy(z["faces"]), cam, colors=c[None], normals="smooth", shading="none",
                      mode="dibr", background=1.0, sigmainv=7000.0, boxlen=0.02, knum=30)  # fmt: skip
    for image, colour_dependent in ((out.rgb, True), (out.alpha, False)):
        gv, gc = torch.autograd.grad(image.sum(), [v, c], retain_graph=True)
        assert torch.isfinite(gv).all() and torch.isfinite(gc).all()
        assert gv.abs().sum() > 0 and (gc.abs().sum() > 0) == colour_dependent
