"""The DIB-R / SoftRas mesh regularisers and image losses of taichi_sdf.train.losses, on meshes whose
answer is known by hand, against literal re-statements of the originals' reductions, and in float64
gradcheck."""

import math

import numpy as np
import pytest
import torch

from taichi_sdf.train import losses

F64 = torch.float64
TETRA = torch.tensor([[1.0, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=F64)  # regular, |x| = sqrt 3
TETRA_FACES = torch.tensor([[0, 2, 1], [0, 1, 3], [1, 2, 3], [0, 3, 2]])
CUBE = torch.tensor([[x, y, z] for x in (0.0, 1) for y in (0.0, 1) for z in (0.0, 1)], dtype=F64)  # index 4x + 2y + z
CUBE_FACES = torch.tensor([
    [0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5],  # x = 0, x = 1
    [0, 4, 5], [0, 5, 1], [2, 3, 7], [2, 7, 6],  # y = 0, y = 1
    [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3],  # z = 0, z = 1
])  # fmt: skip


def grid(n: int, spacing: float = 0.25):
    """A flat (n + 1) x (n + 1) grid in z = 0, every square split along the same diagonal."""
    i, j = torch.meshgrid(torch.arange(n + 1), torch.arange(n + 1), indexing="ij")
    vertices = torch.stack([i * spacing, j * spacing, torch.zeros_like(i)], -1).reshape(-1, 3).to(F64)
    a = (i[:-1, :-1] * (n + 1) + j[:-1, :-1]).reshape(-1)
    b, c, d = a + n + 1, a + 1, a + n + 2  # (i+1, j), (i, j+1), (i+1, j+1)
    faces = torch.cat([torch.stack([a, b, d], 1), torch.stack([a, d, c], 1)])
    return vertices, faces


def fan(n: int):
    """Regular n-gon fan: centre 0 at the origin, rim 1..n on the unit circle."""
    a = torch.arange(n, dtype=F64) * (2 * math.pi / n)
    vertices = torch.cat([torch.zeros(1, 3, dtype=F64), torch.stack([a.cos(), a.sin(), 0 * a], 1)])
    k = torch.arange(n)
    return vertices, torch.stack([0 * k, 1 + k, 1 + (k + 1) % n], 1)


def sphere(noise: float = 0.05, seed: int = 0):
    """A closed icosahedron subdivided once (42 vertices), jittered."""
    import trimesh

    m = trimesh.creation.icosphere(subdivisions=1)
    g = torch.Generator().manual_seed(seed)
    v = torch.tensor(m.vertices, dtype=F64) + noise * torch.randn(len(m.vertices), 3, generator=g, dtype=F64)
    return v, torch.tensor(m.faces, dtype=torch.int64)


# ------------------------------------------------------------------------------ literal re-statements


def softras_laplacian(vertices, faces):
    """SoftRas' LaplacianLoss: a dense matrix with -1 on neighbours, the degree on the diagonal, every
    row divided by its diagonal; sum of squares per mesh, mean over the batch."""
    V = vertices.shape[-2]
    L = np.zeros((V, V))
    f = faces.numpy()
    for a, b in ((0, 1), (1, 2), (2, 0)):
        L[f[:, a], f[:, b]] = -1
        L[f[:, b], f[:, a]] = -1
    L[np.diag_indices(V)] = -L.sum(1)
    L /= L.diagonal()[:, None]
    x = vertices.reshape(-1, V, 3)
    return (torch.from_numpy(L) @ x).pow(2).sum((1, 2)).mean()


def angle_cot_laplacian(vertices, faces):
    """The cotangent Laplacian with each angle measured by atan2 (a face loop, dense weights)."""
    x = vertices.detach().numpy()
    V = len(x)
    W = np.zeros((V, V))
    for face in faces.tolist():
        for k in range(3):
            i, j, o = face[k], face[(k + 1) % 3], face[(k + 2) % 3]
            u, w = x[i] - x[o], x[j] - x[o]
            cot = 1 / math.tan(math.atan2(np.linalg.norm(np.cross(u, w)), u @ w))
            W[i, j] += cot
            W[j, i] += cot
    delta = x - (W @ x) / W.sum(1, keepdims=True)
    return float((delta**2).sum())


def angle_flatten(vertices, faces):
    """sum over edges with two faces of (cos theta + 1)^2, theta measured between the opposite vertices'
    perpendiculars to the edge with numpy."""
    x = vertices.detach().numpy()
    incident = {}
    for face in faces.tolist():
        for k in range(3):
            edge = tuple(sorted((face[k], face[(k + 1) % 3])))
            incident.setdefault(edge, []).append(face[(k + 2) % 3])
    total = 0.0
    for (i, j), (a, b) in ((e, o) for e, o in incident.items() if len(o) == 2):
        d = (x[j] - x[i]) / np.linalg.norm(x[j] - x[i])
        pa, pb = x[a] - x[i], x[b] - x[i]
        pa, pb = pa - (pa @ d) * d, pb - (pb @ d) * d
        total += (pa @ pb / np.linalg.norm(pa) / np.linalg.norm(pb) + 1) ** 2
    return total


# ----------------------------------------------------------------------------------------- Laplacian


def test_uniform_laplacian_is_zero_inside_a_flat_grid_and_sees_a_bump():
    v, f = grid(4)  # 5 x 5 vertices; vertex 12 = (2, 2) is interior with 6 interior neighbours
    flat = float(losses.laplacian_loss(v, f))
    assert flat > 0  # the boundary vertices are pulled inwards: SoftRas counts every vertex
    h = 0.1
    bumped = v.clone()
    bumped[12, 2] = h
    # z only: vertex 12 gets h, each of its 6 neighbours (degree 6) gets -h / 6: h^2 (1 + 6 / 36)
    assert float(losses.laplacian_loss(bumped, f)) - flat == pytest.approx(h * h * 7 / 6, rel=1e-9)


def test_uniform_laplacian_of_a_regular_tetrahedron():
    # each vertex's neighbours average to -x / 3, so the offset is 4 x / 3 and |offset|^2 = 16 / 9 * 3
    assert float(losses.laplacian_loss(TETRA, TETRA_FACES)) == pytest.approx(4 * 16 / 3)


@pytest.mark.parametrize("n", [5, 8])
def test_laplacians_of_a_regular_fan(n):
    v, f = fan(n)
    c = math.cos(2 * math.pi / n)
    # rim vertex k: neighbours centre (0), rim k - 1 and k + 1 (summing to 2 cos(2 pi / n) x_k); |x_k| = 1
    assert float(losses.laplacian_loss(v, f)) == pytest.approx(n * (1 - 2 * c / 3) ** 2)
    w_spoke, w_rim = 2 * math.tan(math.pi / n), 1 / math.tan(2 * math.pi / n)
    expected = n * (1 - 2 * w_rim * c / (w_spoke + 2 * w_rim)) ** 2  # the centre's offset is 0
    assert float(losses.laplacian_loss(v, f, kind="cotangent")) == pytest.approx(expected)


def test_laplacians_match_literal_restatements_on_a_jittered_sphere():
    v, f = sphere()
    batch = torch.stack([v, 1.5 * v.flip(1)])
    torch.testing.assert_close(losses.laplacian_loss(batch, f), softras_laplacian(batch, f))
    assert float(losses.laplacian_loss(v, f, "cotangent")) == pytest.approx(angle_cot_laplacian(v, f), rel=1e-9)


def test_laplacian_ignores_unused_vertices_and_translation():
    v, f = fan(6)
    extra = torch.cat([v, torch.tensor([[5.0, 5.0, 5.0]], dtype=F64)])  # not in any face
    for kind in ("uniform", "cotangent"):
        base = losses.laplacian_loss(v, f, kind)
        torch.testing.assert_close(losses.laplacian_loss(extra, f, kind), base)
        torch.testing.assert_close(losses.laplacian_loss(v + torch.tensor([1.0, -2.0, 3.0], dtype=F64), f, kind), base)


# ----------------------------------------------------------------------------------------- flatten


def test_flatten_of_known_dihedral_angles():
    v, f = grid(3)
    assert float(losses.flatten_loss(v, f)) == pytest.approx(0.0, abs=1e-6)  # coplanar: theta = 180 deg
    assert float(losses.flatten_loss(CUBE, CUBE_FACES)) == pytest.approx(12.0, rel=1e-5)  # 12 edges at 90 deg
    # regular tetrahedron: dihedral angle arccos(1/3) on all 6 edges
    assert float(losses.flatten_loss(TETRA, TETRA_FACES)) == pytest.approx(6 * (4 / 3) ** 2, rel=1e-5)
    folded = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0.3, 1, 0], [0.3, 1, 0]], dtype=F64)  # face 1 folded onto face 0
    assert float(losses.flatten_loss(folded, torch.tensor([[0, 1, 2], [1, 0, 3]]))) == pytest.approx(4.0, rel=1e-5)


def test_flatten_matches_measured_angles_and_averages_the_batch():
    v, f = sphere(0.1)
    assert float(losses.flatten_loss(v, f)) == pytest.approx(angle_flatten(v, f), rel=1e-4)
    batch = torch.stack([v, sphere(0.1, seed=1)[0]])
    expected = (losses.flatten_loss(batch[0], f) + losses.flatten_loss(batch[1], f)) / 2
    torch.testing.assert_close(losses.flatten_loss(batch, f), expected)


# ------------------------------------------------------------------------- edge length, normal consistency


def test_edge_length_of_a_unit_cube():
    # 12 sides of length 1 and 6 face diagonals of length sqrt 2
    assert float(losses.edge_length_loss(CUBE, CUBE_FACES)) == pytest.approx((12 + 6 * 2) / 18)
    assert float(losses.edge_length_loss(CUBE, CUBE_FACES, target=1.0)) == pytest.approx(6 * (2**0.5 - 1) ** 2 / 18)
    batch = torch.stack([CUBE, 2 * CUBE])  # the doubled cube: (12 * 4 + 6 * 8) / 18
    assert float(losses.edge_length_loss(batch, CUBE_FACES)) == pytest.approx((24 / 18 + 96 / 18) / 2)


def test_normal_consistency_of_known_meshes():
    assert float(losses.normal_consistency_loss(CUBE, CUBE_FACES)) == pytest.approx(12 / 18)  # 1 - cos 90 deg
    assert float(losses.normal_consistency_loss(TETRA, TETRA_FACES)) == pytest.approx(4 / 3)  # normals at cos -1/3
    v, f = grid(3)
    assert float(losses.normal_consistency_loss(v, f)) == pytest.approx(0.0, abs=1e-12)
    flipped = CUBE_FACES.clone()
    flipped[3] = flipped[3].flip(0)  # the winding of the faces does not matter
    assert float(losses.normal_consistency_loss(CUBE, flipped)) == pytest.approx(12 / 18)
    single = TETRA.clone().requires_grad_()
    zero = losses.normal_consistency_loss(single, TETRA_FACES[:1])  # no shared edge
    assert float(zero.detach()) == 0.0 and zero.requires_grad


# ----------------------------------------------------------------------------------------- images


def test_silhouette_iou_of_unit_squares():
    pred = torch.zeros(2, 4, 4)
    target = torch.zeros(2, 4, 4)
    target[:, 1:3, 1:3] = 1  # a 2 x 2 square
    pred[0, 1:3, 2:4] = 1  # the same square moved one pixel: intersection 2, union 6
    pred[1, 1:3, 1:3] = 0.5  # half-covered square: intersection 2, union 2 + 4 - 2
    expected = 1 - (2 / 6 + 2 / 4) / 2
    assert float(losses.silhouette_iou_loss(pred, target)) == pytest.approx(expected)
    assert float(losses.silhouette_iou_loss(pred, target > 0.5)) == pytest.approx(expected)  # bool masks
    assert float(losses.silhouette_iou_loss(target, target)) == pytest.approx(0.0)
    assert float(losses.silhouette_iou_loss(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2))) == 1.0  # both empty


def test_masked_image_l1_averages_over_every_entry():
    pred = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])  # [1, 1, 2, 2]
    target = torch.zeros_like(pred)
    assert float(losses.masked_image_l1(pred, target)) == pytest.approx(10 / 4)
    assert float(losses.masked_image_l1(pred, target, torch.tensor([[[True, False]]]))) == pytest.approx(3 / 4)
    assert float(losses.masked_image_l1(pred, target, torch.tensor([[[0.5, 1.0]]]))) == pytest.approx((1.5 + 7) / 4)


# ----------------------------------------------------------------------------------------- gradients


def test_mesh_terms_gradcheck_in_float64():
    v, f = grid(2)  # 9 vertices, one interior, 8 faces
    g = torch.Generator().manual_seed(3)
    batch = (v + 0.08 * torch.randn(2, *v.shape, generator=g, dtype=F64)).requires_grad_()
    terms = {
        "uniform": lambda x: losses.laplacian_loss(x, f),
        "cotangent": lambda x: losses.laplacian_loss(x, f, kind="cotangent"),
        "flatten": lambda x: losses.flatten_loss(x, f),
        "edge": lambda x: losses.edge_length_loss(x, f, target=0.3),
        "normal": lambda x: losses.normal_consistency_loss(x, f),
    }
    for name, term in terms.items():
        assert torch.autograd.gradcheck(term, (batch,)), name


def test_image_terms_gradcheck_in_float64():
    g = torch.Generator().manual_seed(0)
    pred = torch.rand(2, 3, 4, generator=g, dtype=F64).requires_grad_()
    target = (torch.rand(2, 3, 4, generator=g, dtype=F64) > 0.5).to(F64)
    assert torch.autograd.gradcheck(lambda p: losses.silhouette_iou_loss(p, target), (pred,))
    image = torch.rand(2, 3, 4, 3, generator=g, dtype=F64).requires_grad_()
    image_gt = torch.rand(2, 3, 4, 3, generator=g, dtype=F64)
    assert torch.autograd.gradcheck(lambda p: losses.masked_image_l1(p, image_gt, pred.detach()), (image,))


# ----------------------------------------------------------------------------------------- bad input


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="kind: expected one of"):
        losses.laplacian_loss(TETRA, TETRA_FACES, kind="cot")
    with pytest.raises(ValueError, match=r"vertices: expected shape \[V, 3\] or \[B, V, 3\]"):
        losses.flatten_loss(TETRA[:, :2], TETRA_FACES)
    with pytest.raises(ValueError, match="faces: index 3 is out of range for 3 vertices"):
        losses.edge_length_loss(TETRA[:3], TETRA_FACES)
    with pytest.raises(ValueError, match="faces: expected dtype int32 or int64"):
        losses.normal_consistency_loss(TETRA, TETRA_FACES.double())
    with pytest.raises(ValueError, match="target: expected an edge length >= 0"):
        losses.edge_length_loss(TETRA, TETRA_FACES, target=-1.0)
    with pytest.raises(ValueError, match=r"target: expected shape \[2, 3, 3\]"):
        losses.silhouette_iou_loss(torch.zeros(2, 3, 3), torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match=r"pred: expected shape \[\*, \*, \*\]"):
        losses.silhouette_iou_loss(torch.zeros(3, 3), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="target: expected dtype float32 or bool"):
        losses.silhouette_iou_loss(torch.zeros(1, 3, 3), torch.zeros(1, 3, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"mask: expected shape \[1, 2, 2\]"):
        losses.masked_image_l1(torch.zeros(1, 2, 2, 3), torch.zeros(1, 2, 2, 3), torch.ones(1, 2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"target: expected shape \[1, 2, 2, 3\]"):
        losses.masked_image_l1(torch.zeros(1, 2, 2, 3), torch.zeros(1, 2, 2, 4))
    with pytest.raises(TypeError, match="pred: expected a torch.Tensor"):
        losses.masked_image_l1(np.zeros((1, 2, 2, 3)), torch.zeros(1, 2, 2, 3))
