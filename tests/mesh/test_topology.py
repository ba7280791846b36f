"""taichi_sdf.mesh.topology on meshes whose connectivity and cotangents are known by hand."""

import math

import pytest
import torch

from taichi_sdf.mesh import topology

TETRA_FACES = torch.tensor([[0, 2, 1], [0, 1, 3], [1, 2, 3], [0, 3, 2]])


def fan(n: int, height: float = 0.0, dtype=torch.float64):
    """A regular n-gon fan: centre vertex 0 (lifted by `height`), rim vertices 1..n on the unit circle."""
    a = torch.arange(n, dtype=dtype) * (2 * math.pi / n)
    rim = torch.stack([a.cos(), a.sin(), torch.zeros_like(a)], dim=1)
    vertices = torch.cat([torch.tensor([[0.0, 0.0, height]], dtype=dtype), rim])
    k = torch.arange(n)
    faces = torch.stack([torch.zeros_like(k), 1 + k, 1 + (k + 1) % n], dim=1)
    return vertices, faces


def test_two_triangles_share_one_edge():
    faces = torch.tensor([[0, 1, 2], [2, 1, 3]])
    t = topology.mesh_topology(faces)
    assert t.edges.tolist() == [[0, 1], [0, 2], [1, 2], [1, 3], [2, 3]]
    # face_edges[f, k] joins corners k and k + 1
    assert t.face_edges.tolist() == [[0, 2, 1], [2, 3, 4]]
    assert t.pair_faces.tolist() == [[0, 1]]
    assert t.pair_edges.tolist() == [[1, 2]]
    assert t.pair_opposite.tolist() == [[0, 3]]
    assert t.num_referenced == 4


def test_tetrahedron_pairs_every_edge_with_the_two_other_vertices():
    faces = TETRA_FACES
    pair_faces, pair_edges, pair_opposite = topology.adjacent_face_pairs(faces)
    assert topology.mesh_edges(faces).shape == (6, 2) and pair_edges.shape == (6, 2)
    assert sorted(map(tuple, pair_edges.tolist())) == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    for (f0, f1), edge, opp in zip(pair_faces.tolist(), pair_edges.tolist(), pair_opposite.tolist()):
        assert f0 != f1
        assert sorted(edge + opp) == [0, 1, 2, 3]  # the two faces' third vertices are the other two
        assert set(edge) < set(faces[f0].tolist()) and set(edge) < set(faces[f1].tolist())
        assert opp[0] in faces[f0].tolist() and opp[1] in faces[f1].tolist()


def test_non_manifold_edge_gives_every_pair_and_boundary_edges_none():
    faces = torch.tensor([[0, 1, 2], [1, 0, 3], [0, 1, 4]])  # three faces on the edge (0, 1)
    pair_faces, pair_edges, pair_opposite = topology.adjacent_face_pairs(faces)
    assert sorted(map(tuple, pair_faces.tolist())) == [(0, 1), (0, 2), (1, 2)]
    assert pair_edges.tolist() == [[0, 1]] * 3
    assert sorted(map(tuple, pair_opposite.tolist())) == [(2, 3), (2, 4), (3, 4)]
    single = topology.adjacent_face_pairs(torch.tensor([[0, 1, 2]]))
    assert all(x.shape == (0, 2) for x in single)


def test_vertex_neighbours_of_a_fan():
    _, faces = fan(5)
    source, target, degree = topology.vertex_neighbours(faces, 7)  # vertex 6 is unused
    assert degree.tolist() == [5, 3, 3, 3, 3, 3, 0]
    assert sorted(target[source == 0].tolist()) == [1, 2, 3, 4, 5]
    assert sorted(target[source == 1].tolist()) == [0, 2, 5]
    assert source.shape == target.shape == (2 * 10,)


def test_cache_is_per_tensor_and_sees_in_place_changes():
    faces = torch.tensor([[0, 1, 2], [2, 1, 3]])
    first = topology.mesh_topology(faces)
    assert topology.mesh_topology(faces) is first
    assert topology.mesh_topology(faces.clone()) is not first  # another tensor: computed again, equal
    assert torch.equal(topology.mesh_topology(faces.clone()).edges, first.edges)
    faces[1, 2] = 4  # in place: the version counter changes
    assert topology.mesh_topology(faces).edges.tolist() == [[0, 1], [0, 2], [1, 2], [1, 4], [2, 4]]


@pytest.mark.parametrize("n", [3, 6, 9])
def test_cotangent_weights_of_a_regular_fan(n):
    vertices, faces = fan(n)
    w = topology.cotangent_weights(vertices, faces)
    edges = topology.mesh_edges(faces)
    spoke = edges[:, 0] == 0
    # a spoke is opposite the two rim angles pi/2 - pi/n of its triangles: 2 cot(pi/2 - pi/n) = 2 tan(pi/n);
    # a rim edge lies on the boundary, opposite the centre angle 2 pi / n
    torch.testing.assert_close(w[spoke], torch.full((n,), 2 * math.tan(math.pi / n), dtype=torch.float64))
    torch.testing.assert_close(w[~spoke], torch.full((n,), 1 / math.tan(2 * math.pi / n), dtype=torch.float64))
    batched = topology.cotangent_weights(torch.stack([vertices, 2 * vertices]), faces)
    torch.testing.assert_close(batched, torch.stack([w, w]))  # scale-invariant


def test_cotangent_weights_clamp_degenerate_triangles():
    vertices = torch.tensor([[0.0, 0, 0], [1, 0, 0], [2, 0, 0], [1, 1, 0]], dtype=torch.float64, requires_grad=True)
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])  # face 0 is a straight line: zero area
    w = topology.cotangent_weights(vertices, faces)
    assert torch.isfinite(w).all()
    edges = topology.mesh_edges(faces).tolist()
    # edge (0, 2): opposite vertex 1 of the flat face (angle pi), cot = (1, 0).(-1, 0) / max(0, 1e-6), plus
    # opposite vertex 3 of face 1 (a right angle, cot 0)
    assert float(w.detach()[edges.index([0, 2])]) == pytest.approx(-1 / topology.COT_AREA_EPS)
    w.sum().backward()
    assert torch.isfinite(vertices.grad).all()


def test_cotangent_weights_gradcheck():
    noise = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    vertices = fan(4, height=0.3)[0] + 0.05 * noise
    faces = fan(4)[1]
    assert torch.autograd.gradcheck(lambda v: topology.cotangent_weights(v, faces), (vertices.requires_grad_(),))


def test_bad_faces_and_vertices_name_the_argument():
    good = torch.tensor([[0, 1, 2]])
    with pytest.raises(ValueError, match="faces: expected dtype int32 or int64"):
        topology.mesh_topology(good.float())
    with pytest.raises(ValueError, match=r"faces: expected shape \[\*, 3\]"):
        topology.mesh_topology(torch.tensor([[0, 1, 2, 3]]))
    with pytest.raises(ValueError, match="faces: expected at least one triangle"):
        topology.mesh_topology(good[:0])
    with pytest.raises(ValueError, match="faces: expected vertex indices >= 0"):
        topology.mesh_topology(torch.tensor([[0, -1, 2]]))
    with pytest.raises(ValueError, match="faces: face 1 repeats a vertex"):
        topology.mesh_topology(torch.tensor([[0, 1, 2], [1, 1, 2]]))
    with pytest.raises(TypeError, match="faces: expected a torch.Tensor"):
        topology.mesh_topology([[0, 1, 2]])
    with pytest.raises(ValueError, match="num_vertices: expected an int >= 3"):
        topology.vertex_neighbours(good, 2)
    with pytest.raises(ValueError, match=r"faces: index 2 is out of range for 2 vertices"):
        topology.cotangent_weights(torch.zeros(2, 3), good)
    with pytest.raises(ValueError, match=r"vertices: expected shape \[V, 3\] or \[B, V, 3\]"):
        topology.cotangent_weights(torch.zeros(3, 2), good)
    with pytest.raises(ValueError, match="vertices: expected dtype float32 or float64"):
        topology.cotangent_weights(torch.zeros(3, 3, dtype=torch.int64), good)
