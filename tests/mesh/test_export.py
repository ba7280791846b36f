"""taichi_sdf.mesh.export: OBJ + MTL + PNG and coloured PLY, read back with trimesh and with the project's
own mesh reader (`taichi_sdf.data.builtin.load_mesh_asset`)."""

import numpy as np
import pytest
import torch
import trimesh

from taichi_sdf.data.builtin import load_mesh_asset
from taichi_sdf.mesh.export import save_obj, save_ply


@pytest.fixture
def mesh():
    m = trimesh.creation.icosphere(subdivisions=1)
    g = torch.Generator().manual_seed(0)
    v = torch.tensor(m.vertices, dtype=torch.float32)
    f = torch.tensor(m.faces, dtype=torch.int32)
    return v, f, torch.rand(len(v), 2, generator=g), torch.rand(6, 9, 3, generator=g)


def corners(x, faces):
    return np.asarray(x)[np.asarray(faces)]  # [F, 3, ...] per face corner: independent of vertex order


def test_obj_round_trip_through_trimesh(tmp_path, mesh):
    v, f, uv, texture = mesh
    normals = torch.nn.functional.normalize(v, dim=1)
    path = save_obj(tmp_path / "out" / "shape.obj", v, f, uv=uv, texture=texture, normals=normals)
    assert path == str(tmp_path / "out" / "shape.obj")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["shape.mtl", "shape.obj", "shape.png"]  # no temp files
    assert "map_Kd shape.png" in (tmp_path / "out" / "shape.mtl").read_text()
    loaded = trimesh.load(path, process=False)
    assert len(loaded.faces) == len(f)
    np.testing.assert_array_equal(corners(loaded.vertices, loaded.faces).astype(np.float32), corners(v, f))
    np.testing.assert_array_equal(corners(loaded.visual.uv, loaded.faces).astype(np.float32), corners(uv, f))
    pixels = np.asarray(loaded.visual.material.image.convert("RGB"))
    np.testing.assert_array_equal(pixels, np.round(texture.numpy() * 255).astype(np.uint8))  # row 0 stays on top
    np.testing.assert_allclose(corners(loaded.vertex_normals, loaded.faces), corners(normals, f), atol=1e-6)


def test_obj_reads_back_with_the_project_texture_reader(tmp_path, mesh):
    v, f, uv, texture = mesh
    path = save_obj(tmp_path / "shape.obj", v.double(), f.long(), uv=uv, texture=texture)
    asset = load_mesh_asset(path)
    assert asset.albedo == "texture"
    np.testing.assert_array_equal(asset.texture, np.round(texture.numpy() * 255) / np.float32(255))
    np.testing.assert_allclose(corners(asset.uv, asset.faces), corners(uv, f), atol=1e-7)
    np.testing.assert_array_equal(corners(asset.vertices, asset.faces), corners(v.double(), f))  # float64 exactly


def test_obj_with_uv_seams_and_without_texture(tmp_path):
    v = torch.tensor([[0.0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]])
    f = torch.tensor([[0, 1, 2], [0, 2, 3]])
    uv = torch.tensor([[0.0, 0], [1, 0], [1, 1], [0.5, 0.5], [0, 1], [0.25, 0.75]])
    uv_faces = torch.tensor([[0, 1, 2], [3, 5, 4]])  # vertex 0 and 2 have another uv in face 1
    path = save_obj(tmp_path / "seam.obj", v, f, uv=uv, uv_faces=uv_faces)
    text = (tmp_path / "seam.obj").read_text()
    assert "f 1/1 2/2 3/3\nf 1/4 3/6 4/5" in text and "mtllib" not in text
    assert not (tmp_path / "seam.mtl").exists()
    loaded = trimesh.load(path, process=False)
    np.testing.assert_array_equal(corners(loaded.vertices, loaded.faces), corners(v, f))
    np.testing.assert_allclose(corners(loaded.visual.uv, loaded.faces), corners(uv, uv_faces))
    save_obj(tmp_path / "plain.obj", v, f, normals=torch.tensor([[0.0, 0, 1]] * 4))
    assert "f 1//1 2//2 3//3" in (tmp_path / "plain.obj").read_text()


def test_ply_round_trip_with_vertex_colours(tmp_path, mesh):
    v, f, _, _ = mesh
    colors = torch.rand(len(v), 3, generator=torch.Generator().manual_seed(1))
    colors[0] = torch.tensor([1.5, -0.2, 0.5])  # clipped to [0, 1]
    path = save_ply(tmp_path / "shape.ply", v, f, colors=colors)
    loaded = trimesh.load(path, process=False)
    np.testing.assert_array_equal(loaded.vertices.astype(np.float32), v.numpy())  # vertex order kept
    np.testing.assert_array_equal(loaded.faces, f.numpy())
    expected = np.round(colors.clamp(0, 1).numpy() * 255).astype(np.uint8)
    np.testing.assert_array_equal(loaded.visual.vertex_colors[:, :3], expected)
    asset = load_mesh_asset(path)
    np.testing.assert_allclose(asset.colors, expected / 255.0)
    save_ply(tmp_path / "shape.ply", v * 2, f)  # overwrites atomically, no colours
    assert float(trimesh.load(path, process=False).vertices[1, 0]) == pytest.approx(2 * float(v[1, 0]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shape.ply"]


def test_bad_input_names_the_argument(tmp_path, mesh):
    v, f, uv, texture = mesh
    obj = tmp_path / "a.obj"
    with pytest.raises(ValueError, match="path: expected a .obj file name"):
        save_obj(tmp_path / "a.ply", v, f)
    with pytest.raises(ValueError, match=r"vertices: expected shape \[\*, 3\]"):
        save_obj(obj, v[:, :2], f)
    with pytest.raises(ValueError, match="faces: expected integer indices"):
        save_obj(obj, v, f.float())
    with pytest.raises(ValueError, match=r"faces: indices must lie in \[0, 5\)"):
        save_obj(obj, v[:5], f)
    with pytest.raises(ValueError, match="uv: expected one uv per vertex"):
        save_obj(obj, v, f, uv=uv[:3])
    with pytest.raises(ValueError, match="uv_faces: given without uv"):
        save_obj(obj, v, f, uv_faces=f)
    with pytest.raises(ValueError, match=r"uv_faces: indices must lie in \[0, 3\)"):
        save_obj(obj, v, f, uv=uv[:3], uv_faces=f)
    with pytest.raises(ValueError, match="texture: given without uv"):
        save_obj(obj, v, f, texture=texture)
    with pytest.raises(ValueError, match=r"texture: expected shape \[H, W, 3\]"):
        save_obj(obj, v, f, uv=uv, texture=texture[..., :2])
    with pytest.raises(ValueError, match=r"normals: expected shape \[42, 3\]"):
        save_obj(obj, v, f, normals=v[:4])
    with pytest.raises(ValueError, match="vertices: contains 1 non-finite"):
        save_ply(tmp_path / "a.ply", torch.cat([v[:-1], torch.tensor([[float("nan"), 0, 0]])]), f)
    with pytest.raises(ValueError, match=r"colors: expected shape \[42, 3\]"):
        save_ply(tmp_path / "a.ply", v, f, colors=uv)
    with pytest.raises(ValueError, match="path: expected a .ply file name"):
        save_ply(obj, v, f)
    assert not list(tmp_path.iterdir())  # nothing written by a refused call
