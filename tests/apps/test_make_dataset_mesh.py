"""`python -m apps.make_dataset --mesh`: a textured box written as OBJ + MTL + PNG in tmp_path is
rendered into IDR / NeRF / COLMAP / nerfstudio datasets whose masks, depth maps, colours and ground truth agree with the
box and the written cameras; bad mesh files give errors that name the file."""

import json

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from apps import make_dataset
from apps.check_cameras import fraction_inside
from taichi_sdf.data import builtin
from taichi_sdf.data.multiview import load_colmap, load_idr, load_nerf, load_nerfstudio
from taichi_sdf.data.multiview.colmap_model import read_colmap_model

CENTRE = np.array([1.0, -2.0, 0.5])
HALF = np.array([0.3, 0.2, 0.25])
TEX_H, TEX_W = 4, 6


def _texture() -> np.ndarray:
    """`[4, 6, 3]` float texture linear in the texel coordinates (column, row)."""
    rows, cols = np.meshgrid(np.arange(TEX_H), np.arange(TEX_W), indexing="ij")
    return np.stack([0.2 + 0.6 * cols / (TEX_W - 1), 0.2 + 0.6 * rows / (TEX_H - 1), np.full(rows.shape, 0.5)], -1)


def _albedo(u, v):
    """The texture's bilinear value at uv (u right, v up; row 0 at v = 1), inside the texel centres."""
    x, y = u * TEX_W - 0.5, (1 - v) * TEX_H - 0.5
    return np.stack([0.2 + 0.6 * x / (TEX_W - 1), 0.2 + 0.6 * y / (TEX_H - 1), np.full(np.shape(x), 0.5)], -1)


def _box_uv(p):
    """Side (axis, sign) and uv of points p [N, 3] on the box, following the OBJ written below."""
    q = (p - CENTRE) / HALF
    axis = np.abs(q).argmax(1)
    sign = np.sign(q[np.arange(len(q)), axis])
    t1, t2 = (axis + 1) % 3, (axis + 2) % 3
    a, b = q[np.arange(len(q)), t1], q[np.arange(len(q)), t2]
    a, b = np.where(sign > 0, a, b), np.where(sign > 0, b, a)  # negative sides swap the tangents
    return axis, sign, (a + 1) / 2, (b + 1) / 2


def write_box(folder):
    """A box (24 vertices, 12 faces, counter-clockwise from outside), each side carrying the whole
    texture, as box.obj + box.mtl + tex.png (written by imageio)."""
    v, vt, f = [], [], []
    for axis in range(3):
        for sign in (1.0, -1.0):
            t1, t2 = (axis + 1) % 3, (axis + 2) % 3
            if sign < 0:
                t1, t2 = t2, t1
            base = len(v)
            for a, b in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
                p = CENTRE.copy()
                p[axis] += sign * HALF[axis]
                p[t1] += a * HALF[t1]
                p[t2] += b * HALF[t2]
                v.append(p)
                vt.append(((a + 1) / 2, (b + 1) / 2))
            f += [(base, base + 1, base + 2), (base, base + 2, base + 3)]
    iio.imwrite(folder / "tex.png", (_texture() * 255 + 0.5).astype(np.uint8))
    (folder / "box.mtl").write_text("newmtl boxmat\nKd 1 1 1\nmap_Kd tex.png\n")
    lines = ["mtllib box.mtl", "usemtl boxmat"]
    lines += [f"v {x:.9f} {y:.9f} {z:.9f}" for x, y, z in v]
    lines += [f"vt {a} {b}" for a, b in vt]
    lines += [f"f {i + 1}/{i + 1} {j + 1}/{j + 1} {k + 1}/{k + 1}" for i, j, k in f]
    (folder / "box.obj").write_text("\n".join(lines) + "\n")
    return folder / "box.obj"


@pytest.mark.parametrize("fmt", ["idr", "nerf", "colmap", "nerfstudio"])
def test_mesh_dataset_is_consistent(tmp_path, fmt):
    mesh = write_box(tmp_path)
    views, size = 6, 24
    out = make_dataset.main(["--mesh", str(mesh), "--views", str(views), "--size", str(size), "--format", fmt,
                             "--normals", "flat", "--out", str(tmp_path / "ds")])  # fmt: skip
    for name in ("splits.json", "gt_points.npy", "gt_normals.npy", "gt_mesh.ply", "scale_mat.json"):
        assert (out / name).is_file(), name
    S = np.array(json.loads((out / "scale_mat.json").read_text()))
    s = 1.1 * float(np.linalg.norm(HALF))  # normalised -> world: bbox centre, 1.1 x bounding radius
    np.testing.assert_allclose(S, [[s, 0, 0, CENTRE[0]], [0, s, 0, CENTRE[1]], [0, 0, s, CENTRE[2]], [0, 0, 0, 1]])
    if fmt == "idr":
        ds = load_idr(out)
    else:
        ds = {"nerf": load_nerf, "colmap": load_colmap, "nerfstudio": load_nerfstudio}[fmt](out, scale_mat=S)
    if fmt == "colmap":  # ground-truth samples as the sparse model, in world units
        points = read_colmap_model(out / "sparse" / "0").points
        np.testing.assert_array_equal(points.xyz, np.load(out / "gt_points.npy")[: builtin.SPARSE_POINTS])
    assert len(ds) == views and ds.images.shape == (views, size, size, 3)
    splits = json.loads((out / "splits.json").read_text())
    assert sorted(splits["train"] + splits["test"]) == list(range(views))

    # ground truth in world units lies on the box; it projects into the masks through the cameras
    pts, nrm = np.load(out / "gt_points.npy"), np.load(out / "gt_normals.npy")
    np.testing.assert_allclose(np.abs((pts - CENTRE) / HALF).max(1), 1.0, atol=1e-9)
    axis, sign, _, _ = _box_uv(pts)
    np.testing.assert_allclose(nrm[np.arange(len(nrm)), axis], sign, atol=1e-9)  # outward normals
    pn = ds.to_normalized(torch.from_numpy(pts))
    assert min(fraction_inside(ds, pn, dilate=1)) > 0.999
    assert np.mean(fraction_inside(ds, pn, dilate=0)) > 0.8

    # depth: camera z (world units) at covered pixel centres, 0 elsewhere; back-projected onto the box
    if fmt != "nerf":
        files = [out / "depth" / f"{name}.npy" for name in ds.names]  # image/NNN.png, images/<stem>.png
    else:
        files = [out / name.split("_", 1)[0] / f"{name.split('_', 1)[1]}_depth.npy" for name in ds.names]
    depth = torch.from_numpy(np.stack([np.load(f) for f in files])).double()
    assert depth.shape == (views, size, size)
    assert torch.equal(depth > 0, ds.masks) and ds.masks.float().mean() > 0.05
    cams = ds.cameras.to(dtype=torch.float64)
    jj, ii = torch.meshgrid(torch.arange(size, dtype=torch.float64) + 0.5, torch.arange(size, dtype=torch.float64) + 0.5,
                            indexing="ij")  # fmt: skip
    pix = torch.stack([ii, jj, torch.ones_like(ii)], -1)
    x_cam = (pix @ torch.linalg.inv(cams.K).transpose(1, 2)[:, None]) * (depth / s)[..., None]
    x_norm = (x_cam - cams.t[:, None, None]) @ cams.R[:, None]
    world = ds.to_world(x_norm[ds.masks]).numpy()
    np.testing.assert_allclose(np.abs((world - CENTRE) / HALF).max(1), 1.0, atol=2e-4)

    # colours of pixels well inside a side: texture at the surface point x Lambert with the flat normal
    axis, sign, u, v = _box_uv(world)
    # pixels whose 3x3 neighbours see the same side (all supersamples on that side, none on background)
    side = np.full(ds.masks.shape, -1)
    side[ds.masks.numpy()] = 2 * axis + (sign > 0)
    pad = np.pad(side, ((0, 0), (1, 1), (1, 1)), constant_values=-1)
    same = np.ones(side.shape, bool)
    for dy in range(3):
        for dx in range(3):
            same &= pad[:, dy : dy + size, dx : dx + size] == side
    q = np.sort(np.abs((world - CENTRE) / HALF), 1)
    inner = same[ds.masks.numpy()] & (q[:, 1] < 0.7)  # and uvs between the outer texel centres
    n = np.zeros((len(world), 3))
    n[np.arange(len(n)), axis] = sign
    L = -np.array(builtin.SUN) / np.linalg.norm(builtin.SUN)
    expected = _albedo(u, v) * (builtin.AMBIENT + builtin.DIFFUSE * np.clip(n @ L, 0, None))[:, None]
    got = ds.images[ds.masks].numpy()
    assert inner.sum() > 50
    np.testing.assert_allclose(got[inner], expected[inner], atol=0.02)
    assert float(ds.images[~ds.masks].max()) < 1.0  # anti-aliased edges only; background black
    assert float(ds.images[0][~ds.masks[0]].median()) == 0.0


def test_mesh_albedo_sources_and_errors(tmp_path):
    import trimesh

    from taichi_sdf.mesh.shading import DirectionalLight

    # render_mesh's default light is the built-in datasets' sun + ambient
    assert DirectionalLight() == DirectionalLight(builtin.SUN, builtin.DIFFUSE, builtin.AMBIENT)

    box = trimesh.creation.box(extents=(1.0, 2.0, 3.0))
    box.visual = trimesh.visual.ColorVisuals(box, vertex_colors=np.tile([255, 0, 0, 255], (8, 1)))
    box.export(tmp_path / "red.ply")
    asset = builtin.load_mesh_asset(tmp_path / "red.ply")
    assert asset.albedo == "vertex colours" and np.allclose(asset.colors, [1.0, 0.0, 0.0])
    trimesh.creation.box().export(tmp_path / "plain.obj")
    assert builtin.load_mesh_asset(tmp_path / "plain.obj").albedo == "grey"
    # an OBJ with uvs but no material: the image comes from --texture or a sibling <stem>_texture.png
    obj = write_box(tmp_path)
    text = obj.read_text().replace("mtllib box.mtl\nusemtl boxmat\n", "")
    (tmp_path / "bare.obj").write_text(text)
    assert builtin.load_mesh_asset(tmp_path / "bare.obj").albedo == "grey"
    assert builtin.load_mesh_asset(tmp_path / "bare.obj", texture=tmp_path / "tex.png").albedo == "texture"
    (tmp_path / "bare_texture.png").write_bytes((tmp_path / "tex.png").read_bytes())
    asset = builtin.load_mesh_asset(tmp_path / "bare.obj")
    assert asset.albedo == "texture" and asset.texture.shape == (TEX_H, TEX_W, 3)
    np.testing.assert_allclose(asset.texture, _texture(), atol=1 / 255)

    with pytest.raises(ValueError, match="missing.obj: mesh file not found"):
        builtin.load_mesh_asset(tmp_path / "missing.obj")
    (tmp_path / "garbage.glb").write_bytes(b"\x00\x01 not a mesh")
    with pytest.raises(ValueError, match="garbage.glb: cannot read mesh"):
        builtin.load_mesh_asset(tmp_path / "garbage.glb")
    (tmp_path / "points.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\n")
    with pytest.raises(ValueError, match="points.obj: the mesh has no faces"):
        builtin.load_mesh_asset(tmp_path / "points.obj")
    (tmp_path / "nan.obj").write_text("v 0 0 0\nv 1 0 nan\nv 0 1 0\nf 1 2 3\n")
    with pytest.raises(ValueError, match="nan.obj: 1 vertices have non-finite coordinates"):
        builtin.load_mesh_asset(tmp_path / "nan.obj")
    with pytest.raises(ValueError, match="nope.png: texture file not found"):
        builtin.load_mesh_asset(tmp_path / "bare.obj", texture=tmp_path / "nope.png")
    with pytest.raises(SystemExit):
        make_dataset.main(["--mesh", str(obj), "--scene", "csg", "--out", str(tmp_path / "x")])
