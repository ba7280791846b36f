"""MeshSDF (LBVH closest points + fast winding numbers) against the brute-force torch twin."""

import numpy as np
import pytest
import torch
import trimesh

from taichi_sdf.geometry.mesh_sdf import MeshSDF
from taichi_sdf.reference.geometry import mesh_sdf as ref
from tests.helpers import assert_matches_twin

# ------------------------------------------------------------------------------------------------
# Meshes and points
# ------------------------------------------------------------------------------------------------


def _bumpy_sphere(subdivisions=3, seed=0):
    """Watertight, outward-oriented, not convex: an icosphere with radially perturbed vertices."""
    m = trimesh.creation.icosphere(subdivisions)
    rng = np.random.default_rng(seed)
    v = m.vertices * (1.0 + 0.15 * rng.uniform(-1, 1, (len(m.vertices), 1)))
    return v, m.faces


def _box():
    m = trimesh.creation.box(extents=(1.2, 0.8, 1.6))
    return m.vertices, m.faces


def _torus():
    m = trimesh.creation.torus(0.7, 0.25, major_sections=24, minor_sections=12)
    return m.vertices, m.faces


def _soup(n=300, seed=1):
    """Random triangles (overlapping, intersecting, some degenerate): not a closed surface."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-1, 1, (n, 1, 3))
    tris = centres + 0.25 * rng.normal(size=(n, 3, 3))
    tris[:10, 1] = tris[:10, 0]  # zero-length edge
    tris[10:20, 2] = 0.5 * (tris[10:20, 0] + tris[10:20, 1])  # collinear corners
    tris[20:25, 1:] = tris[20:25, :1]  # all three corners equal
    return tris.reshape(-1, 3), np.arange(3 * n).reshape(n, 3)


MESHES = {"bumpy_sphere": _bumpy_sphere, "box": _box, "torus": _torus, "soup": _soup}
WATERTIGHT = ("bumpy_sphere", "box", "torus")


def _points(vertices, faces, n_near=1500, n_far=500, seed=0):
    """Points near the surface (two noise levels, DeepSDF-style), in the bounding volume and far."""
    rng = np.random.default_rng(seed)
    m = trimesh.Trimesh(vertices, faces, process=False)
    surf, _ = trimesh.sample.sample_surface(m, n_near, seed=seed)
    scale = np.linalg.norm(vertices, axis=1).max()
    near = surf + rng.normal(size=surf.shape) * np.where(rng.uniform(size=(n_near, 1)) < 0.5, 0.07, 0.02) * scale
    box = rng.uniform(-1.2, 1.2, (n_far, 3)) * scale
    far = rng.normal(size=(n_far // 5, 3))
    far = 3.0 * scale * far / np.linalg.norm(far, axis=1, keepdims=True)
    return np.concatenate([near, box, far])


def _tensors(vertices, faces, points, device, dtype=torch.float64):
    return (
        torch.as_tensor(vertices, dtype=dtype, device=device),
        torch.as_tensor(faces, dtype=torch.int64, device=device),
        torch.as_tensor(points, dtype=dtype, device=device),
    )


# ------------------------------------------------------------------------------------------------
# Distances, closest points
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", list(MESHES))
def test_closest_points_match_reference(name, dtype, device):
    v, f = MESHES[name]()
    V, F, P = _tensors(v, f, _points(v, f), device)
    mesh = MeshSDF(V, F, dtype=dtype)
    got = mesh.closest_points(P.to(dtype))
    want = ref.closest_points(V, F, P)
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(got.distance.double(), want.distance, atol=tol, rtol=0)
    assert got.face_id.dtype == torch.int64
    # The reported face is a closest face (ties between faces sharing an edge or a corner are
    # legitimate), the closest point lies on it at the reported barycentrics and at the distance.
    corners = V[F[got.face_id]]  # [N, 3, 3]
    bary = got.barycentric.double()
    assert bary.min() >= -1e-6 and (bary.sum(-1) - 1).abs().max() < 1e-5
    torch.testing.assert_close((bary[..., None] * corners).sum(1), got.closest.double(), atol=1e-5, rtol=0)
    torch.testing.assert_close((P - got.closest.double()).norm(dim=-1), want.distance, atol=2 * tol, rtol=0)
    torch.testing.assert_close(mesh.unsigned_distance(P.to(dtype)), got.distance)


def test_bvh_layout_invariants(device):
    """Pre-order layout: left child right after its parent, right child after the left subtree,
    leaf ranges partition the triangles, every box holds its triangles."""
    v, f = _soup(200)
    mesh = MeshSDF(v, f)
    nodes, box, tris = mesh._nodes.cpu().long(), mesh._box.cpu(), mesh._tris.cpu()
    count = nodes[:, 3] - nodes[:, 2] + 1
    inner = nodes[:, 0] >= 0
    idx = torch.arange(len(nodes))
    assert torch.equal(nodes[inner, 0], idx[inner] + 1)
    assert torch.equal(nodes[inner, 1], idx[inner] + 2 * count[nodes[inner, 0]])
    assert torch.equal(count[inner], count[nodes[inner, 0]] + count[nodes[inner, 1]])
    assert torch.equal(nodes[~inner, 2].sort().values, torch.arange(mesh.num_pieces))
    corners = tris[:, :9].reshape(-1, 3, 3)
    for j in torch.randperm(len(nodes))[:50].tolist():
        c = corners[nodes[j, 2] : nodes[j, 3] + 1].reshape(-1, 3)
        assert (c >= box[j, :3] - 1e-6).all() and (c <= box[j, 3:] + 1e-6).all()
    assert set(mesh._tri_face.cpu().tolist()) == set(range(len(f)))
    assert mesh.num_pieces > len(f)  # the soup's long triangles were split


def test_single_triangle_and_tiny_inputs(device):
    v = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], device=device)
    f = torch.tensor([[0, 1, 2]], device=device)
    mesh = MeshSDF(v, f)
    p = torch.tensor([[0.2, 0.2, 0.5], [2.0, 0.0, 0.0], [-1.0, -1.0, -1.0], [0.5, 0.5, 0.0]], device=device)
    got = mesh.closest_points(p)
    torch.testing.assert_close(got.distance, torch.tensor([0.5, 1.0, 3**0.5, 0.0], device=device), atol=1e-6, rtol=0)
    torch.testing.assert_close(got.closest[0], torch.tensor([0.2, 0.2, 0.0], device=device))
    torch.testing.assert_close(got.barycentric[1], torch.tensor([0.0, 1.0, 0.0], device=device))
    empty = mesh.query(torch.zeros(0, 3, device=device))
    assert empty.sdf.shape == (0,) and empty.closest.shape == (0, 3) and empty.face_id.shape == (0,)


def test_splitting_long_faces_changes_nothing(device):
    """A CAD-like cylinder (long side faces) with and without splitting: same distances, same
    barycentrics in the original faces, same signs in both modes."""
    m = trimesh.creation.cylinder(radius=0.3, height=1.5, sections=24)
    P = torch.as_tensor(_points(m.vertices, m.faces, 1500, 500), dtype=torch.float64, device=device)
    split = MeshSDF(m.vertices, m.faces, dtype=torch.float64)
    whole = MeshSDF(m.vertices, m.faces, dtype=torch.float64, split_edge=float("inf"))
    assert whole.num_pieces == len(m.faces) < split.num_pieces
    a, b = split.closest_points(P), whole.closest_points(P)
    torch.testing.assert_close(a.distance, b.distance, atol=1e-10, rtol=0)
    corners = torch.as_tensor(m.vertices, device=device)[torch.as_tensor(m.faces, device=device)[a.face_id]]
    torch.testing.assert_close((a.barycentric[..., None] * corners).sum(1), a.closest, atol=1e-10, rtol=0)
    inside = ref.winding_number(*_tensors(m.vertices, m.faces, P.cpu().numpy(), device)).abs() > 0.5
    for mode in ("winding", "pseudonormal"):
        sdf = split.query(P, sign_mode=mode).sdf
        assert torch.equal((sdf < 0)[sdf.abs() > 1e-9], inside[sdf.abs() > 1e-9]), mode


def test_chunking_and_order_do_not_change_results(device):
    v, f = _bumpy_sphere(2)
    p = torch.as_tensor(_points(v, f, 400, 200), dtype=torch.float32, device=device)
    a = MeshSDF(v, f).query(p)
    b = MeshSDF(v, f, chunk_size=97).query(p)
    perm = torch.randperm(len(p), device=device)
    c = MeshSDF(v, f).query(p[perm])
    torch.testing.assert_close(a.sdf, b.sdf)
    torch.testing.assert_close(a.sdf[perm], c.sdf)
    torch.testing.assert_close(a.closest[perm], c.closest)


# ------------------------------------------------------------------------------------------------
# Winding numbers and signs
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(MESHES))
def test_winding_number_matches_reference(name, device):
    v, f = MESHES[name]()
    V, F, P = _tensors(v, f, _points(v, f, 600, 300), device)
    want = ref.winding_number(V, F, P)
    mesh = MeshSDF(V, F)
    exact = mesh.winding_number(P.float(), exact=True)
    torch.testing.assert_close(exact.double(), want, atol=1e-4, rtol=0)
    fast = mesh.winding_number(P.float())  # order-1 dipoles, beta = 2
    assert (fast.double() - want).abs().max() < 0.1
    precise = MeshSDF(V, F, winding_beta=4.0).winding_number(P.float())
    assert (precise.double() - want).abs().max() < (fast.double() - want).abs().max()


@pytest.mark.parametrize("name", WATERTIGHT)
def test_winding_number_is_one_inside_zero_outside(name, device):
    v, f = MESHES[name]()
    mesh = MeshSDF(v, f)
    P = torch.as_tensor(_points(v, f), dtype=torch.float32, device=device)
    w = mesh.winding_number(P)
    d = mesh.unsigned_distance(P)
    inside = ref.winding_number(*_tensors(v, f, P.double().cpu().numpy(), device)).abs() > 0.5
    clear = d > 1e-3
    assert (w[inside & clear] - 1).abs().max() < 0.1  # beta = 2 dipoles: ~0.05 typical, far from 0.5
    assert w[~inside & clear].abs().max() < 0.1


@pytest.mark.parametrize("sign_mode", ["winding", "pseudonormal"])
@pytest.mark.parametrize("name", WATERTIGHT)
def test_sign_on_watertight_meshes(name, sign_mode, device):
    v, f = MESHES[name]()
    V, F, P = _tensors(v, f, _points(v, f, 3000, 1000, seed=3), device)
    inside = ref.winding_number(V, F, P).abs() > 0.5
    mesh = MeshSDF(V, F, sign_mode=sign_mode)
    q = mesh.query(P.float())
    clear = q.sdf.abs() > 1e-5  # a sign at |sdf| ~ float32 eps is a coin toss
    wrong = ((q.sdf < 0) != inside) & clear
    assert int(wrong.sum()) == 0, f"{int(wrong.sum())} / {len(P)} wrong signs"
    torch.testing.assert_close(q.sdf.abs(), mesh.unsigned_distance(P.float()))


def test_mesh_with_holes_keeps_signs_away_from_the_holes(device):
    """An icosphere with a few faces removed: the winding number still tells inside from outside
    for points well inside or outside; the pseudo-normal sign is reported, not asserted."""
    m = trimesh.creation.icosphere(3)
    rng = np.random.default_rng(0)
    holes = rng.choice(len(m.faces), 12, replace=False)
    faces = np.delete(m.faces, holes, axis=0)
    rng_p = np.random.default_rng(1)
    dirs = rng_p.normal(size=(4000, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    radii = np.concatenate([rng_p.uniform(0.0, 0.7, 2000), rng_p.uniform(1.3, 2.5, 2000)])
    P = torch.as_tensor(dirs * radii[:, None], dtype=torch.float32, device=device)
    truly_inside = torch.as_tensor(radii < 1.0, device=device)
    mesh = MeshSDF(m.vertices, faces)
    exact = ref.winding_number(*_tensors(m.vertices, faces, P.double().cpu().numpy(), device))
    assert (mesh.winding_number(P).double() - exact).abs().max() < 0.1
    wrong_w = ((mesh.query(P).sdf < 0) != truly_inside).float().mean().item()
    wrong_pn = ((mesh.query(P, sign_mode="pseudonormal").sdf < 0) != truly_inside).float().mean().item()
    print(f"mesh with 12 holes: wrong signs, winding {wrong_w:.2%}, pseudonormal {wrong_pn:.2%}")
    assert wrong_w < 0.001


def test_overlapping_parts_and_flipped_faces(device):
    """Two interpenetrating boxes (a union as a soup, as CAD-like models are built) and a mesh
    with all faces flipped: |w| > 0.5 inside in both cases."""
    a = trimesh.creation.box(extents=(1.0, 1.0, 1.0))
    b = trimesh.creation.box(extents=(0.4, 0.4, 2.0))
    v = np.concatenate([a.vertices, b.vertices])
    f = np.concatenate([a.faces, b.faces + len(a.vertices)])
    P = torch.tensor(
        [[0.0, 0.0, 0.0], [0.25, 0.0, 0.0], [0.1, 0.1, 0.45], [0.4, 0.4, 0.4], [0.0, 0.0, 0.9],
         [0.0, 0.1, -0.8], [0.8, 0.0, 0.0], [0.3, 0.3, 0.8], [0.0, 0.0, 1.2]],
        dtype=torch.float32, device=device,
    )  # fmt: skip
    inside = torch.tensor([1, 1, 1, 1, 1, 1, 0, 0, 0], dtype=torch.bool, device=device)
    q = MeshSDF(v, f).query(P)
    assert torch.equal(q.sdf < 0, inside)
    # [0.25, 0, 0] is inside the big box, 0.05 outside the inner one: its closest face is the inner
    # box's side, an internal face whose pseudo-normal says "outside".
    assert MeshSDF(v, f, sign_mode="pseudonormal").query(P[1:2]).sdf.item() > 0
    bv, bf = _box()
    flipped = MeshSDF(bv, bf[:, ::-1].copy())
    assert flipped.winding_number(P[:1], exact=True).item() == pytest.approx(-1.0, abs=1e-4)
    assert flipped.query(P[:1]).sdf.item() < 0


def test_normal_is_the_sdf_gradient(device):
    v, f = _bumpy_sphere(2)
    mesh = MeshSDF(v, f, dtype=torch.float64)
    P = torch.as_tensor(_points(v, f, 200, 100), device=device)
    q = mesh.query(P)
    keep = q.sdf.abs() > 1e-3
    P, normal = P[keep], q.normal[keep]
    torch.testing.assert_close(normal.norm(dim=-1), torch.ones(len(P), dtype=P.dtype, device=device))
    eps = 1e-6
    fd = torch.stack(
        [(mesh.signed_distance(P + eps * e) - mesh.signed_distance(P - eps * e)) / (2 * eps) for e in torch.eye(3, dtype=P.dtype, device=device)],
        -1,
    )  # fmt: skip
    agree = (fd - normal).norm(dim=-1) < 1e-4
    assert agree.float().mean() > 0.99  # the rest sit on the medial axis, where the SDF has a kink
    x = P.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(mesh.signed_distance(x).sum(), x)
    torch.testing.assert_close(g, normal)


# ------------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------------


def test_bad_inputs_raise_clear_errors(device):
    v, f = _box()
    with pytest.raises(ValueError, match="faces: the mesh has no faces"):
        MeshSDF(v, np.zeros((0, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="vertices: the mesh has no vertices"):
        MeshSDF(np.zeros((0, 3)), f)
    with pytest.raises(ValueError, match=r"faces: vertex indices must lie in \[0, 8\)"):
        MeshSDF(v, np.where(f == 7, 8, f))
    with pytest.raises(ValueError, match="faces: vertex indices"):
        MeshSDF(v, -f)
    bad = v.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="vertices: contains 1 non-finite"):
        MeshSDF(bad, f)
    with pytest.raises(ValueError, match="vertices: expected shape"):
        MeshSDF(v[:, :2], f)
    with pytest.raises(ValueError, match="faces: expected an integer dtype"):
        MeshSDF(v, f.astype(np.float32))
    with pytest.raises(TypeError, match="vertices: expected a torch.Tensor or numpy array"):
        MeshSDF(v.tolist(), f)
    with pytest.raises(ValueError, match="sign_mode"):
        MeshSDF(v, f, sign_mode="raycast")
    mesh = MeshSDF(v, f)
    with pytest.raises(ValueError, match="points: expected shape"):
        mesh.query(torch.zeros(5, 2, device=device))
    with pytest.raises(ValueError, match="points: contains 1 non-finite"):
        mesh.query(torch.tensor([[0.0, float("inf"), 0.0]], device=device))
    with pytest.raises(ValueError, match="points: expected dtype"):
        mesh.query(torch.zeros(5, 3, dtype=torch.int64, device=device))
    with pytest.raises(ValueError, match="sign_mode"):
        mesh.query(torch.zeros(5, 3, device=device), sign_mode="vote")


# ------------------------------------------------------------------------------------------------
# Gradients: VJP against the twin, no silent second derivative
# ------------------------------------------------------------------------------------------------


def test_signed_distance_vjp_matches_twin(device):
    """Random cotangents, float64, on points where the twin's SDF is differentiable: its autograd
    gradient agrees with central differences (the rest sit on the medial axis, where the closest
    face switches, or within 1e-3 of the surface)."""
    v, f = _bumpy_sphere(2)
    V, F, P = _tensors(v, f, _points(v, f, 300, 100, seed=3), device)
    mesh = MeshSDF(V, F, dtype=torch.float64)
    x = P.clone().requires_grad_(True)
    d = ref.signed_distance(V, F, x)
    (g,) = torch.autograd.grad(d.sum(), x)
    eps = 1e-6
    fd = torch.stack(
        [(ref.signed_distance(V, F, P + eps * e) - ref.signed_distance(V, F, P - eps * e)) / (2 * eps)
         for e in torch.eye(3, dtype=P.dtype, device=device)], -1,
    )  # fmt: skip
    smooth = ((fd - g).norm(dim=-1) < 1e-6) & (d.detach().abs() > 1e-3)
    assert smooth.sum() > 0.9 * len(P)  # the mask drops only the few kinked points
    P = P[smooth].requires_grad_(True)
    assert_matches_twin(mesh.signed_distance, lambda p: ref.signed_distance(V, F, p), [P], atol=1e-10, seed=5)


def test_signed_distance_double_backward_raises(device):
    """The gradient is the kernel's normal (a constant to autograd): a second derivative must raise,
    not give zero curvature."""
    v, f = _bumpy_sphere(1)
    mesh = MeshSDF(v, f, dtype=torch.float64)
    x = torch.as_tensor(_points(v, f, 20, 10), device=device).requires_grad_(True)
    (g,) = torch.autograd.grad((mesh.signed_distance(x) ** 2).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiate twice"):
        g.sum().backward()
