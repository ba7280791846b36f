"""Mesh shading and `render_mesh`: normals, Lambert / Phong / SH (known values, RH constants, numerical
integration, gradcheck), image regression of every mode x shading against the torch twin (values
and VJPs), hand-known pixels of a camera-facing textured quad, gradchecks through the whole renderer
and argument errors."""

import math

import pytest
import torch
import trimesh

from taichi_sdf.cameras.camera import Camera, fibonacci_sphere, look_at
from taichi_sdf.mesh import render as mesh_render
from taichi_sdf.mesh.shading import (
    RH_CONSTANTS,
    DirectionalLight,
    Material,
    face_normals,
    lambert,
    phong,
    sh_basis,
    sh_irradiance,
    sh_shading,
    vertex_normals,
)
from taichi_sdf.reference.mesh import render as twin
from tests.helpers import assert_matches_twin

F64 = torch.float64


def _rand(*shape, seed=0, lo=0.0, hi=1.0):
    g = torch.Generator().manual_seed(seed)
    return lo + (hi - lo) * torch.rand(*shape, generator=g, dtype=F64)


def _unit(*shape, seed=0):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)
    return x / x.norm(dim=-1, keepdim=True)


# -- normals -------------------------------------------------------------------------------------------


def test_face_and_vertex_normals_known_and_gradcheck(device):
    # two triangles sharing the edge v0 v1: one in the xy-plane (area 0.5, normal +z), one in the
    # xz-plane (area 1, normal -y); area weighting at v0: normalize(0.5 * z + 1 * -y)
    v = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 2]], dtype=F64, device=device)
    f = torch.tensor([[0, 1, 2], [0, 1, 3]], dtype=torch.int64, device=device)
    fn = face_normals(v, f)
    torch.testing.assert_close(fn.cpu(), torch.tensor([[0.0, 0, 1], [0, -1, 0]], dtype=F64))
    vn = vertex_normals(v, f).cpu()
    torch.testing.assert_close(vn[0], torch.tensor([0.0, -1.0, 0.5], dtype=F64) / math.sqrt(1.25))
    torch.testing.assert_close(vn[2], torch.tensor([0.0, 0, 1], dtype=F64))
    # batched form == per-mesh form
    vb = torch.stack([v, 2.0 * v.flip(-1)])
    torch.testing.assert_close(vertex_normals(vb, f)[1], vertex_normals(vb[1], f))
    # an icosphere's smooth normals are nearly radial
    m = trimesh.creation.icosphere(subdivisions=2)
    vi = torch.tensor(m.vertices, dtype=F64)
    cos = (vertex_normals(vi, torch.tensor(m.faces)) * vi / vi.norm(dim=-1, keepdim=True)).sum(-1)
    assert float(cos.min()) > 0.999
    vg = (v + 0.1 * _rand(4, 3, seed=1).to(device)).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: (vertex_normals(x, f), face_normals(x, f)), (vg,))


def test_degenerate_and_unused_vertices_give_zero_normals_and_finite_grads(device):
    v = torch.tensor([[0.0, 0, 0], [1, 0, 0], [2, 0, 0], [5, 5, 5]], dtype=F64, device=device, requires_grad=True)
    f = torch.tensor([[0, 1, 2]], device=device)  # collinear; vertex 3 unused
    n = vertex_normals(v, f)
    assert float(n.detach().abs().sum()) == 0.0 and float(face_normals(v, f).detach().abs().sum()) == 0.0
    n.sum().backward()
    assert torch.isfinite(v.grad).all()


# -- spherical harmonics -----------------------------------------------------------------------------------


def test_rh_constants_and_closed_form():
    """c1..c5 are Ramamoorthi-Hanrahan's, and sh_irradiance is their eq. 13."""
    paper = [0.429043, 0.511664, 0.743125, 0.886227, 0.247708]  # printed to 6 digits (c2 is 0.5116634)
    assert all(abs(c - p) < 1.5e-6 for c, p in zip(RH_CONSTANTS, paper))
    c1, c2, c3, c4, c5 = RH_CONSTANTS
    n = _unit(2, 50, 3, seed=2)
    L = _rand(2, 9, 3, seed=3, lo=-1, hi=1)
    x, y, z = (n[..., i : i + 1] for i in range(3))
    Lk = [L[:, k][:, None, :] for k in range(9)]  # [L00, L1-1, L10, L11, L2-2, L2-1, L20, L21, L22]
    E = (c1 * Lk[8] * (x * x - y * y) + c3 * Lk[6] * z * z + c4 * Lk[0] - c5 * Lk[6]
         + 2 * c1 * (Lk[4] * x * y + Lk[7] * x * z + Lk[5] * y * z) + 2 * c2 * (Lk[3] * x + Lk[1] * y + Lk[2] * z))  # fmt: skip
    torch.testing.assert_close(sh_irradiance(n, L), E, atol=1e-12, rtol=0)
    # shared coefficients [9, 3] broadcast over the batch; constant-only SH gives constant irradiance
    const = torch.zeros(9, 3, dtype=F64)
    const[0] = torch.tensor([1.0, 2.0, 3.0], dtype=F64)
    torch.testing.assert_close(sh_irradiance(n, const), (c4 * const[0]).expand(2, 50, 3))


def test_sh_basis_is_orthonormal():
    d = fibonacci_sphere(20000).to(F64)
    Y = sh_basis(d)
    gram = Y.T @ Y * (4 * math.pi / len(d))
    torch.testing.assert_close(gram, torch.eye(9, dtype=F64), atol=2e-3, rtol=0)


def test_sh_irradiance_matches_numerical_integration():
    """E(n) = int L(w) max(n . w, 0) dw by quadrature over a Fibonacci sphere, for a random radiance
    band-limited to l <= 2 (where the 9-term formula is exact)."""
    dirs = fibonacci_sphere(40000).to(F64)
    L = _rand(9, 3, seed=4, lo=-0.3, hi=0.3)
    L[0] += 2.0
    radiance = sh_basis(dirs) @ L  # [M, 3]
    n = _unit(1, 12, 3, seed=5)
    cos = (n[0] @ dirs.T).clamp_min(0)  # [12, M]
    E_num = cos @ radiance * (4 * math.pi / len(dirs))
    torch.testing.assert_close(sh_irradiance(n, L)[0], E_num, atol=2e-3, rtol=0)


def test_directional_light_projected_to_sh_is_clamped_cosine_within_bound():
    """A directional light (colour c) projected on 9 coefficients: E / pi = c f(n . l) with
    f(t) = 3/32 + t/2 + 15 t^2 / 32 exactly, at most 3/32 of c from c max(n . l, 0) (at n . l = 0)."""
    light = DirectionalLight(direction=(0.2, -1.0, 0.4), color=(1.0, 0.5, 2.0), ambient=0.0)
    coeffs = light.to_sh(F64)
    assert coeffs.shape == (1, 9, 3)
    n = _unit(1, 4000, 3, seed=6)
    l_dir = -torch.tensor([0.2, -1.0, 0.4], dtype=F64) / math.sqrt(1.2)
    t = (n * l_dir).sum(-1, keepdim=True)
    c = torch.tensor([1.0, 0.5, 2.0], dtype=F64)
    E = sh_irradiance(n, coeffs) / math.pi
    torch.testing.assert_close(E, c * (3 / 32 + t / 2 + 15 * t * t / 32), atol=1e-12, rtol=0)
    err = (E - c * t.clamp_min(0)).abs() / c
    assert float(err.max()) <= 3 / 32 + 1e-12 and float(err.max()) > 0.09
    # the ambient term is exact, and SH shading of the sun approximates Lambert within the same bound
    sun = DirectionalLight()
    albedo = _rand(1, 4000, 3, seed=7)
    diff = (sh_shading(albedo, n, sun.to_sh(F64)) - lambert(albedo, n, sun)).abs()
    assert float((diff / (albedo * 0.65)).max()) <= 3 / 32 + 1e-12


# -- Lambert / Phong --------------------------------------------------------------------------------------


def test_lambert_and_phong_known_values():
    n = torch.tensor([[[0.0, 0.0, 1.0]]], dtype=F64)
    albedo = torch.tensor([[[0.5, 0.25, 1.0]]], dtype=F64)
    light = DirectionalLight(direction=(0.0, -0.6, -0.8), color=(1.0, 1.0, 0.5), ambient=0.1)
    expected = albedo * (0.1 + torch.tensor([1.0, 1.0, 0.5], dtype=F64) * 0.8)
    torch.testing.assert_close(lambert(albedo, n, light), expected)
    # viewer along the mirror direction r = (0, -0.6, 0.8): full highlight; Blinn: h = normalize(l + v)
    v = torch.tensor([[[0.0, -0.6, 0.8]]], dtype=F64)
    mat = Material(specular=(0.5, 0.5, 0.5), shininess=8.0)
    torch.testing.assert_close(phong(albedo, n, v, light, mat), expected + 0.5 * torch.tensor([1.0, 1.0, 0.5], dtype=F64))
    light2 = DirectionalLight(direction=(0.0, 0.0, -1.0), color=(1.0, 1.0, 0.5), ambient=0.1)  # l = (0, 0, 1)
    v2 = torch.tensor([[[0.0, -0.6, 0.8]]], dtype=F64)  # h = normalize(0, -0.6, 1.8): n . h = 3 / sqrt(10)
    torch.testing.assert_close(phong(albedo, n, v2, light2, mat, blinn=True),
                               albedo * (0.1 + torch.tensor([1.0, 1.0, 0.5], dtype=F64))
                               + 0.5 * (3 / math.sqrt(10)) ** 8 * torch.tensor([1.0, 1.0, 0.5], dtype=F64))  # fmt: skip
    # no highlight from a light behind the surface
    back = DirectionalLight(direction=(0.0, 0.6, 0.8), color=1.0, ambient=0.1)
    torch.testing.assert_close(phong(albedo, n, -v, back, mat), albedo * 0.1)


def test_viz_shading_of_sdf_hits_is_the_mesh_shading_with_known_values():
    """`viz.lambert` / `viz.phong` (tracer images) are `lambert` / `phong` with the light
    DirectionalLight(light_dir, 1 - ambient, ambient), clamped and composited over the background."""
    from taichi_sdf import viz

    n = torch.tensor([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, -1.0, 0.0], [1.0, 0.0, 0.0]], dtype=F64)
    hit = torch.tensor([True, True, True, False])
    # rays: straight down onto the top face (v = l: full highlight), 36.87 deg off it (r . v = 0.8)
    d = torch.tensor([[0.0, -1.0, 0.0], [-0.6, -0.8, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]], dtype=F64)
    albedo, bg = (0.5, 0.25, 1.0), (0.1, 0.2, 0.3)
    a = torch.tensor(albedo, dtype=F64)
    kw = dict(light_dir=(0.0, -2.0, 0.0), albedo=albedo, background=bg)
    ph = viz.phong(n, d, hit, ambient=0.15, specular=0.4, shininess=32.0, **kw)
    torch.testing.assert_close(ph[0], (a + 0.4 * 0.85).clamp(0, 1))  # lit: albedo, plus the full highlight
    torch.testing.assert_close(ph[1], (a + 0.4 * 0.85 * 0.8**32).clamp(0, 1))
    torch.testing.assert_close(ph[2], a * 0.15)  # facing away from the light: ambient, no highlight
    torch.testing.assert_close(ph[3], torch.tensor(bg, dtype=F64))
    lam = viz.lambert(n, hit, ambient=0.2, **kw)
    torch.testing.assert_close(lam[:3], torch.stack([a, a, a * 0.2]))
    # one implementation: the same numbers from the mesh shading functions
    light = DirectionalLight(direction=(0.0, -2.0, 0.0), color=0.85, ambient=0.15)
    ref = phong(a.expand(4, 3), n, -d, light, Material(specular=0.4, shininess=32.0)).clamp(0, 1)
    torch.testing.assert_close(ph[:3], ref[:3], rtol=0, atol=0)


def test_shading_gradcheck():
    albedo = _rand(2, 3, 4, 3, seed=8).requires_grad_()
    n = _unit(2, 3, 4, 3, seed=9).requires_grad_()
    view = _unit(2, 3, 4, 3, seed=10)
    view = (view + torch.tensor([0.0, 0.0, 1.5], dtype=F64)).requires_grad_()
    d = torch.tensor([[0.3, -1.0, -0.5], [-0.2, -0.4, -1.0]], dtype=F64, requires_grad=True)
    col = torch.tensor([0.7, 0.6, 0.5], dtype=F64, requires_grad=True)
    amb = torch.tensor(0.2, dtype=F64, requires_grad=True)
    spec = torch.tensor([[0.3, 0.3, 0.3], [0.1, 0.2, 0.3]], dtype=F64, requires_grad=True)
    shin = torch.tensor([5.0, 9.0], dtype=F64, requires_grad=True)
    coeffs = _rand(2, 9, 3, seed=11).requires_grad_()

    def fn(albedo, n, view, d, col, amb, spec, shin, coeffs):
        light = DirectionalLight(d, col, amb)
        mat = Material(spec, shin)
        return (lambert(albedo, n, light), phong(albedo, n, view, light, mat), phong(albedo, n, view, light, mat, True),
                sh_shading(albedo, n, coeffs), light.to_sh(F64))  # fmt: skip

    assert torch.autograd.gradcheck(fn, (albedo, n, view, d, col, amb, spec, shin, coeffs))


def test_shading_errors():
    n = _unit(1, 2, 3)
    with pytest.raises(ValueError, match="direction: expected"):
        lambert(n, n, DirectionalLight(direction=(1.0, 0.0)))
    with pytest.raises(ValueError, match="color: expected a batch of 1 or 1"):
        lambert(n, n, DirectionalLight(color=torch.ones(2, 3, dtype=F64)))
    with pytest.raises(ValueError, match="coeffs: expected shape"):
        sh_irradiance(n, torch.zeros(4, 3, dtype=F64))
    with pytest.raises(ValueError, match="shininess: expected"):
        phong(n, n, n, None, Material(shininess=torch.ones(1, 1, dtype=F64)))


# -- render_mesh: image regression against the twin ----------------------------------------------------------

SOFT = dict(sigma=1e-4, gamma=1e-3, far=10.0)


def _sphere_scene(device, size=32):
    m = trimesh.creation.icosphere(subdivisions=1)
    v = torch.tensor(m.vertices, dtype=F64)
    f = torch.tensor(m.faces, dtype=torch.int32)
    uv = torch.stack([0.5 + torch.atan2(v[:, 0], v[:, 2]) / (2 * math.pi), 0.5 + 0.5 * v[:, 1]], -1)
    tex = _rand(6, 8, 3, seed=12)
    colors = _rand(len(v), 3, seed=13)
    cam = look_at(torch.tensor([[0.3, 0.4, 3.0], [-2.5, 0.5, 1.5]]), width=size, height=size, fov_x_deg=50.0)
    return v.to(device), f.to(device), uv.contiguous().to(device), tex.to(device), colors.to(device), cam.to(device, F64)


@pytest.mark.parametrize("mode", ["softras", "dibr", "hard"])
@pytest.mark.parametrize("shading,source,normals", [
    ("none", "texture", "smooth"), ("lambert", "texture", "flat"), ("phong", "texture", "smooth"),
    ("blinn", "colors", "smooth"), ("sh", "texture", "smooth"), ("lambert", "colors", "smooth"),
])  # fmt: skip
@pytest.mark.slow
def test_render_matches_twin(device, mode, shading, source, normals):
    """32x32 icosphere seen by 2 cameras, float64: every output and the VJPs w.r.t. vertices, texture
    or colours, the light and the camera pose agree with the pure-torch twin pipeline."""
    v, f, uv, tex, colors, cam = _sphere_scene(device)
    kw = SOFT if mode == "softras" else {}
    d = torch.tensor([[0.3, -1.0, -0.5], [0.5, -0.2, -1.0]], dtype=F64, device=device)
    sh = _rand(1, 9, 3, seed=14).to(device)

    # differentiate w.r.t. the inputs this case uses
    names = ["v", "a"] + (["d"] if shading in ("lambert", "phong", "blinn") else []) + (["sh"] if shading == "sh" else [])
    names += ["T"] if mode != "hard" or shading in ("phong", "blinn") else []
    a = tex if source == "texture" else colors
    values = dict(v=v, a=a, d=d, T=cam.T_cam_world, sh=sh)

    def run(render):
        def fn(*xs):
            x = {**values, **dict(zip(names, xs))}
            light = x["sh"] if shading == "sh" else DirectionalLight(x["d"], 0.7, 0.2)
            albedo = dict(texture=(x["a"], uv, f)) if source == "texture" else dict(colors=x["a"])
            return tuple(render(x["v"], f, Camera(cam.K, x["T"], cam.width, cam.height), **albedo, shading=shading,
                                light=light, normals=normals, mode=mode, background=(0.1, 0.2, 0.3), **kw))  # fmt: skip
        return fn

    out = mesh_render.render_mesh(v, f, cam, mode=mode, **kw)
    assert 0.2 < float((out.face_id >= 0).double().mean()) < 0.9
    inputs = tuple(values[k].clone().requires_grad_() for k in names)
    assert_matches_twin(run(mesh_render.render_mesh), run(twin.render_mesh), inputs, atol=1e-10, rtol=1e-9)


@pytest.mark.parametrize("light", [None, DirectionalLight(direction=((0.3, -1.0, -0.5), (0.5, -0.2, -1.0)),
                                                            color=(0.9, 0.7, 0.5), ambient=((0.2,) * 3, (0.1,) * 3))])
def test_sh_of_a_directional_light_matches_twin(device, light):
    """The twin projects the light onto SH on its own (not with `DirectionalLight.to_sh`)."""
    v, f, uv, tex, colors, cam = _sphere_scene(device, size=12)
    a = mesh_render.render_mesh(v, f, cam, colors=colors, shading="sh", light=light, mode="hard")
    b = twin.render_mesh(v, f, cam, colors=colors, shading="sh", light=light, mode="hard")
    assert float((a.face_id >= 0).double().mean()) > 0.2
    torch.testing.assert_close(a.rgb, b.rgb, atol=1e-12, rtol=1e-12)


def test_batched_meshes_and_textures_match_per_image_renders(device):
    v, f, uv, tex, colors, cam = _sphere_scene(device, size=16)
    vb = torch.stack([v, 0.8 * v])
    texb = torch.stack([tex, tex.flip(0)])
    both = mesh_render.render_mesh(vb, f, cam, texture=(texb, uv, f), mode="dibr")
    for b in range(2):
        one = mesh_render.render_mesh(vb[b], f, cam[b], texture=(texb[b], uv, f), mode="dibr")
        for x, y in zip(both, one):
            torch.testing.assert_close(x[b : b + 1], y)


# -- render_mesh: hand-known pixels of a camera-facing textured quad -----------------------------------------

A, DIST, N = 0.8, 3.0, 33  # quad half side, camera distance, image side (odd: a pixel centre on the axis)


def _quad(device):
    v = torch.tensor([[-A, -A, 0.0], [A, -A, 0.0], [A, A, 0.0], [-A, A, 0.0]], dtype=F64, device=device)
    f = torch.tensor([[0, 1, 2], [0, 2, 3]], dtype=torch.int32, device=device)  # normal +z, towards the camera
    uv = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]], dtype=F64, device=device)
    Ht, Wt = 6, 8
    rows, cols = torch.meshgrid(torch.arange(Ht, dtype=F64), torch.arange(Wt, dtype=F64), indexing="ij")
    tex = torch.stack([cols / (Wt - 1), rows / (Ht - 1), torch.full_like(rows, 0.5)], -1).to(device)
    cam = look_at(torch.tensor([[0.0, 0.0, DIST]]), width=N, height=N, fov_x_deg=50.0).to(device, F64)
    return v, f, uv, tex, cam


def _interior(cam):
    """Pixels well inside the quad: their (row, col), world points (x, y, 0) and the texture value
    there (the texture is linear in texel coordinates, so bilinear filtering reproduces it)."""
    fx = float(cam.K[0, 0, 0])
    idx = torch.arange(10, 23)
    r, c = torch.meshgrid(idx, idx, indexing="ij")
    x = (c.to(F64) + 0.5 - N / 2) * DIST / fx  # image right = world +x, image down = world -y
    y = -(r.to(F64) + 0.5 - N / 2) * DIST / fx
    u, v = (x + A) / (2 * A), (y + A) / (2 * A)
    tx, ty = u * 8 - 0.5, (1 - v) * 6 - 0.5
    albedo = torch.stack([tx / 7, ty / 5, torch.full_like(tx, 0.5)], -1).to(F64)
    return r, c, torch.stack([x, y, torch.zeros_like(x)], -1).to(F64), albedo


@pytest.mark.parametrize("mode", ["softras", "dibr", "hard"])
def test_textured_quad_hand_known_pixels(device, mode):
    v, f, uv, tex, cam = _quad(device)
    r, c, p, albedo = _interior(cam)
    bg = (0.1, 0.2, 0.3)
    kw = dict(mode=mode, texture=(tex, uv, f), background=bg)
    out = mesh_render.render_mesh(v, f, cam, shading="none", **kw)
    px = lambda img: img[0, r, c].detach().cpu()  # noqa: E731
    torch.testing.assert_close(px(out.rgb), albedo, atol=1e-9, rtol=0)  # orientation: v up, row 0 on top
    torch.testing.assert_close(px(out.depth), torch.full(r.shape, DIST, dtype=F64), atol=1e-9, rtol=0)
    torch.testing.assert_close(px(out.normals), torch.tensor([0.0, 0.0, 1.0], dtype=F64).expand(*r.shape, 3))
    assert set(px(out.face_id).unique().tolist()) == {0, 1}
    # SoftRas: pixel centres on the shared diagonal are on the edge of both faces (D = 1/2 each)
    assert float(px(out.alpha).min()) == (0.75 if mode == "softras" else 1.0)
    for corner in ((0, 0), (N - 1, 0), (3, N - 2)):  # background
        torch.testing.assert_close(out.rgb[0, corner[0], corner[1]].detach().cpu(), torch.tensor(bg, dtype=F64))
        assert int(out.face_id[0, corner[0], corner[1]]) == -1 and float(out.depth[0, corner[0], corner[1]]) == 0.0
    # Lambert: cos = 0.8 for a light travelling along (0, -0.6, -0.8)
    light = DirectionalLight((0.0, -0.6, -0.8), color=(0.9, 0.8, 0.7), ambient=0.1)
    col = torch.tensor([0.9, 0.8, 0.7], dtype=F64)
    lam = albedo * (0.1 + 0.8 * col)
    torch.testing.assert_close(px(mesh_render.render_mesh(v, f, cam, shading="lambert", light=light, **kw).rgb),
                               lam, atol=1e-9, rtol=0)  # fmt: skip
    # Phong with the analytic view directions from the surface points to the camera
    mat = Material(specular=0.5, shininess=4.0)
    view = torch.tensor([0.0, 0.0, DIST], dtype=F64) - p
    view = view / view.norm(dim=-1, keepdim=True)
    refl = torch.tensor([0.0, -0.6, 0.8], dtype=F64)
    spec = 0.5 * col * ((view * refl).sum(-1, keepdim=True).clamp_min(0) ** 4)
    torch.testing.assert_close(px(mesh_render.render_mesh(v, f, cam, shading="phong", light=light, material=mat,
                                                          **kw).rgb), lam + spec, atol=1e-9, rtol=0)  # fmt: skip
    # SH: a constant environment of radiance R gives albedo * R; the projected sun gives f(0.8) = 0.79375
    sh = torch.zeros(9, 3, dtype=F64, device=device)
    sh[0] = torch.tensor([1.0, 2.0, 0.5], dtype=F64) * math.sqrt(4 * math.pi)
    torch.testing.assert_close(px(mesh_render.render_mesh(v, f, cam, shading="sh", light=sh, **kw).rgb),
                               albedo * torch.tensor([1.0, 2.0, 0.5], dtype=F64), atol=1e-9, rtol=0)  # fmt: skip
    torch.testing.assert_close(px(mesh_render.render_mesh(v, f, cam, shading="sh", light=light, **kw).rgb),
                               albedo * (0.1 + 0.79375 * col), atol=1e-9, rtol=0)  # fmt: skip


# -- render_mesh: gradients --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode,kw", [
    ("softras", dict(sigma=0.05, gamma=0.05, far=5.0, dist_eps=1e-8)),
    ("dibr", dict(sigmainv=20.0, boxlen=0.6, knum=3)),
])  # fmt: skip
@pytest.mark.parametrize("shading", ["phong", "sh"])
def test_render_gradcheck(device, mode, kw, shading):
    """Tiny scene (3 faces, 6x5 pixels), float64: gradients w.r.t. vertices, texture and uv (phong)
    or vertex colours (sh), light (direction, colour or SH coefficients), shininess and camera pose."""
    v = torch.tensor([[-0.6, -0.5, 0.1], [0.7, -0.4, -0.2], [0.1, 0.6, 0.3], [-0.5, 0.5, -0.3], [0.6, 0.45, 0.2]],
                     dtype=F64, device=device)  # fmt: skip
    f = torch.tensor([[0, 1, 2], [0, 2, 3], [1, 4, 2]], dtype=torch.int32, device=device)
    uv = _rand(5, 2, seed=15).to(device)
    tex = _rand(3, 3, 3, seed=16).to(device) if shading == "phong" else _rand(5, 3, seed=18).to(device)
    cam = look_at(torch.tensor([[0.3, 0.4, 3.0]]), width=6, height=5, fov_x_deg=50.0).to(device, F64)
    sh = _rand(1, 9, 3, seed=17).to(device)

    def fn(v, tex, uv, d, col, shin, T, sh):
        light = sh if shading == "sh" else DirectionalLight(d, col, 0.2)
        albedo = dict(texture=(tex, uv, f)) if shading == "phong" else dict(colors=tex)
        out = mesh_render.render_mesh(v, f, Camera(cam.K, T, 6, 5), **albedo, shading=shading,
                                      light=light, material=Material(0.4, shin), mode=mode, background=0.3, **kw)  # fmt: skip
        return out.rgb, out.alpha, out.depth

    inputs = (v, tex, uv, torch.tensor([0.3, -1.0, -0.5], dtype=F64), torch.tensor([0.8, 0.7, 0.6], dtype=F64),
              torch.tensor(6.0, dtype=F64), cam.T_cam_world.clone(), sh)  # fmt: skip
    inputs = tuple(x.to(device).requires_grad_() for x in inputs)
    out = fn(*inputs)
    assert 0 < int((out[1] > 0.5).sum()) < 30
    assert torch.autograd.gradcheck(fn, inputs, atol=1e-6, rtol=1e-4)


def test_hard_mode_gradients_reach_attributes_only(device):
    v, f, uv, tex, colors, cam = _sphere_scene(device, size=12)
    cam = cam[0]
    d = torch.tensor([0.3, -1.0, -0.5], dtype=F64, device=device)

    def fn(tex, d):
        return mesh_render.render_mesh(v, f, cam, texture=(tex, uv, f), light=DirectionalLight(d), mode="hard").rgb

    assert torch.autograd.gradcheck(fn, (tex.clone().requires_grad_(), d.requires_grad_()))
    vv = v.clone().requires_grad_()
    out = mesh_render.render_mesh(vv, f, cam, colors=colors, mode="hard")
    assert not out.alpha.requires_grad and not out.depth.requires_grad
    out.rgb.sum().backward()  # through the shading normals only
    assert torch.isfinite(vv.grad).all() and float(vv.grad.abs().sum()) > 0


def test_module_and_errors(device):
    v, f, uv, tex, colors, cam = _sphere_scene(device, size=8)
    module = mesh_render.MeshRenderer("dibr", "sh", normals="flat", background=0.5)
    assert "shading='sh'" in repr(module)
    torch.testing.assert_close(module(v, f, cam, colors=colors).rgb,
                               mesh_render.render_mesh(v, f, cam, colors=colors, shading="sh", normals="flat",
                                                       mode="dibr", background=0.5).rgb)  # fmt: skip
    render = mesh_render.render_mesh
    with pytest.raises(ValueError, match="colors, texture: give one"):
        render(v, f, cam, colors=colors, texture=(tex, uv, f))
    with pytest.raises(ValueError, match="shading: expected one of"):
        render(v, f, cam, shading="toon")
    with pytest.raises(ValueError, match="mode: expected one of"):
        render(v, f, cam, mode="nvdiffrast")
    with pytest.raises(ValueError, match="normals: expected one of"):
        render(v, f, cam, normals="vertex")
    with pytest.raises(ValueError, match="normals: expected shape"):
        render(v, f, cam, normals=v[:5].contiguous())
    with pytest.raises(ValueError, match=r"uv_faces: expected uv indices in \[0, 42\)"):
        render(v, f, cam, texture=(tex, uv, f + 1))
    with pytest.raises(ValueError, match="uv_faces: expected shape"):
        render(v, f, cam, texture=(tex, uv, f[:3].contiguous()))
    with pytest.raises(ValueError, match="texture: expected shape"):
        render(v, f, cam, texture=(tex[..., :2].contiguous(), uv, f))
    with pytest.raises(ValueError, match="uv: expected dtype float64"):
        render(v, f, cam, texture=(tex, uv.float(), f))
    with pytest.raises(TypeError, match="texture: expected a tuple"):
        render(v, f, cam, texture=tex)
    with pytest.raises(ValueError, match="colors: expected 3 channels"):
        render(v, f, cam, colors=colors[:, :2].contiguous())
    with pytest.raises(TypeError, match="light: expected a DirectionalLight"):
        render(v, f, cam, light=torch.zeros(9, 3, dtype=F64))
    with pytest.raises(TypeError, match="light: expected SH coefficients"):
        render(v, f, cam, shading="sh", light=[0.0] * 9)
    with pytest.raises(ValueError, match="background: expected a float or 3 floats"):
        render(v, f, cam, background=(0.0, 1.0))
    with pytest.raises(TypeError, match="cameras: expected a taichi_sdf.Camera"):
        render(v, f, None)


@pytest.mark.parametrize("mode", ["softras", "dibr", "hard"])
def test_empty_mesh_renders_background(device, mode):
    v, _, uv, tex, _, cam = _sphere_scene(device, size=8)
    vv = v.clone().requires_grad_()
    empty = torch.zeros(0, 3, dtype=torch.int64, device=device)
    out = mesh_render.render_mesh(vv, empty, cam, texture=(tex, uv, empty), mode=mode, background=(0.1, 0.2, 0.3))
    torch.testing.assert_close(out.rgb.detach(), torch.tensor([0.1, 0.2, 0.3], dtype=F64, device=device).expand(2, 8, 8, 3))
    assert int(out.face_id.max()) == -1 and float(out.normals.detach().abs().sum()) == 0.0
    # every mode keeps the (zero) gradient path to the vertices, as with faces (hard: through the shading)
    assert out.rgb.requires_grad
    out.rgb.sum().backward()
    assert float(vv.grad.abs().sum()) == 0.0


def test_sh_light_errors(device):
    v, f, _, _, colors, cam = _sphere_scene(device, size=8)
    with pytest.raises(ValueError, match=r"light: expected SH coefficients of shape \[9, 3\]"):
        mesh_render.render_mesh(v, f, cam, shading="sh", light=torch.zeros(4, 3, dtype=F64, device=device))
    with pytest.raises(ValueError, match="light: expected SH coefficients for 1 or 2 images"):
        mesh_render.render_mesh(v, f, cam, shading="sh", light=torch.zeros(3, 9, 3, dtype=F64, device=device))
