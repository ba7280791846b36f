"""The ShapeNet layout: a tiny generation (3 classes x 2 objects x 2 views, 32 px) checked against
DVR's camera chain, OccNet's file formats and the SDFs it came from; the reader's items; determinism,
resume and errors."""

import json
import shutil

import numpy as np
import pytest
import torch
import yaml

from taichi_sdf.data.exr import read_depth_exr
from taichi_sdf.data.shapenet import SYNSETS, ShapeNetDataset, builtin_layout_root, generate_shapenet_layout
from taichi_sdf.geometry.families import class_sdf
from taichi_sdf.geometry.mesh_sdf import MeshSDF

TINY = dict(n_per_class=2, views=2, input_views=2, image_size=32, resolution=40, n_pointcloud=400, n_points=1000, progress=False)
VOXEL = 1 / 39


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return generate_shapenet_layout(tmp_path_factory.mktemp("shapenet") / "ShapeNet", **TINY)


def _objects(root):
    return [(c, root / SYNSETS[c] / f"{c}_{i:04d}") for c in SYNSETS for i in range(2)]


def test_layout_files_splits_and_metadata(root):
    for _, obj in _objects(root):
        for rel in ("model.ply", "cameras.npz", "pointcloud.npz", "points.npz", "img_choy2016/cameras.npz",
                    "image/0000.png", "image/0001.png", "mask/0001.png", "depth/0001.exr", "img_choy2016/001.jpg"):  # fmt: skip
            assert (obj / rel).is_file(), obj / rel
    for c, synset in SYNSETS.items():
        lists = {s: (root / synset / f"{s}.lst").read_text().split() for s in ("train", "val", "test")}
        assert sorted(sum(lists.values(), [])) == [f"{c}_0000", f"{c}_0001"]  # a partition
        assert len(lists["train"]) == 1  # round(0.7 * 2)
    meta = yaml.safe_load((root / "metadata.yaml").read_text())
    assert meta["03001627"] == {"id": "03001627", "name": "chair"} and set(meta) == set(SYNSETS.values())
    assert json.loads((root / "generator.json").read_text())["image_size"] == 32


def _dvr_chain(npz, i):
    return npz[f"camera_mat_{i}"] @ npz[f"world_mat_{i}"] @ npz[f"scale_mat_{i}"]


def test_cameras_masks_and_depth_follow_dvr(root):
    """Surface points project (p_cam = camera_mat @ world_mat @ scale_mat @ p) into the masks, and
    depth pixels lifted back through the inverse chain land on the mesh."""
    import imageio.v3 as iio
    import trimesh

    for _, obj in _objects(root):
        npz = np.load(obj / "cameras.npz")
        pts = np.load(obj / "pointcloud.npz")["points"].astype(np.float64)
        mesh = trimesh.load(obj / "model.ply", process=False)
        dist = MeshSDF(mesh.vertices, mesh.faces)
        for i in range(2):
            mask = np.asarray(iio.imread(obj / "mask" / f"{i:04d}.png")) > 127
            q = np.concatenate([pts, np.ones((len(pts), 1))], 1) @ _dvr_chain(npz, i).T
            ndc = q[:, :2] / q[:, 2:3]
            assert np.abs(ndc).max() < 1  # the object is in view
            px = np.rint((ndc + 1) * 31 / 2).astype(int)  # pixel index 0 -> -1, 31 -> +1
            # legs and edge-on table tops are thinner than a pixel at 32 px (masks sample pixel
            # centres): compare with the mask grown by one pixel. The depth check below is the exact one.
            grown = np.pad(mask, 1)
            grown = np.max([grown[1 + dy : 33 + dy, 1 + dx : 33 + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)], 0)
            assert grown[px[:, 1], px[:, 0]].mean() > 0.9  # 0.94-1.0 measured
            depth = read_depth_exr(obj / "depth" / f"{i:04d}.exr")
            assert np.array_equal(np.isfinite(depth), mask)  # inf exactly on the background
            v, u = np.nonzero(mask)
            d = depth[v, u].astype(np.float64)
            ndc_px = np.stack([2 * u / 31 - 1, 2 * v / 31 - 1], 1)
            lifted = (
                np.concatenate([ndc_px * d[:, None], d[:, None], np.ones((len(d), 1))], 1) @ np.linalg.inv(_dvr_chain(npz, i)).T
            )
            err = dist.unsigned_distance(torch.from_numpy(lifted[:, :3]).float())
            assert float(err.max()) < 1e-4  # ~3e-7 measured; a half-pixel slip in the chain gives ~1e-2


def test_occupancies_and_pointcloud_agree_with_the_sdf(root):
    for c, obj in _objects(root):
        sdf = class_sdf(c, int(obj.name[-4:]))
        d = np.load(obj / "points.npz")
        assert d["points"].dtype == np.float16 and d["occupancies"].dtype == np.uint8 and d["n_uniform"] == 500
        pts = d["points"].astype(np.float64)
        occ = np.unpackbits(d["occupancies"])[: len(pts)].astype(bool)
        assert np.abs(pts[:500]).max() <= 0.55  # OccNet's padded cube
        s = sdf(torch.from_numpy(pts)).numpy()
        far = np.abs(s) > 2 * VOXEL
        assert far.sum() > 300 and (occ[far] == (s[far] < 0)).mean() > 0.99
        assert 0 < occ[500:].mean() < 1  # near-surface samples straddle it
        pc = np.load(obj / "pointcloud.npz")
        assert pc["points"].shape == pc["normals"].shape == (400, 3) and set(pc.files) >= {"loc", "scale"}
        assert np.abs(sdf(torch.from_numpy(pc["points"].astype(np.float64))).numpy()).max() < VOXEL
        np.testing.assert_allclose(np.linalg.norm(pc["normals"], axis=1), 1, atol=1e-5)


def test_dataset_items(root):
    ds = ShapeNetDataset(root, split="train", input_size=24, with_depth=True)
    assert len(ds) == 3 and ds.class_names == ["airplane", "chair", "table"]
    item = ds[1]
    assert item["inputs"].shape == (3, 24, 24) and item["inputs"].dtype == torch.float32
    assert item["image"].shape == (32, 32, 3) and item["mask"].dtype == torch.bool and item["depth"].shape == (32, 32)
    assert item["category"] == 1 and item["model"].startswith("03001627/chair_") and item["idx"] == 1
    assert torch.equal(torch.isinf(item["depth"]), ~item["mask"])
    # our camera and DVR's matrices describe the same view
    cam = ds.camera(1, item["view"])
    torch.testing.assert_close(cam.K.float()[0], item["K"])
    p = torch.tensor([[0.1, -0.2, 0.05, 1.0]])
    q = (item["camera_mat"] @ item["world_mat"] @ item["scale_mat"] @ p.T).T
    uv, _ = cam.project(p[:, :3].double())
    torch.testing.assert_close((q[0, :2] / q[0, 2] + 1) * 31 / 2 + 0.5, uv[0, 0].float(), atol=1e-4, rtol=0)
    views = {ds[0]["view"] for _ in range(30)}
    assert views == {0, 1}  # train draws random views
    test = ShapeNetDataset(root, split="test", classes=["chair", "04379243"])
    assert all(test[i]["view"] == 0 and test[i]["input_view"] == 0 for i in range(len(test)))  # DVR: view 0 off train
    assert test[0]["inputs"].shape == (3, 32, 32) and "depth" not in test[0]
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
    assert batch["image"].shape == (3, 32, 32, 3) and batch["T_cam_world"].shape == (3, 4, 4)
    stacked = ds.stacked_views(("image", "K"), "cpu")
    assert stacked["image"].shape == (3, 2, 32, 32, 3) and stacked["K"].shape == (3, 2, 3, 3)
    torch.testing.assert_close(stacked["image"][1, item["view"]], item["image"])
    pts, occ = ds.occupancy_points(0)
    assert pts.shape == (1000, 3) and occ.dtype == torch.bool
    assert ds.pointcloud(2)[0].shape == (400, 3) and ds.mesh_path(2).name == "model.ply"


def _files(folder):
    return {p.relative_to(folder): p for p in sorted(folder.rglob("*")) if p.is_file()}


def _same_content(a, b):
    if a.suffix == ".npz":
        x, y = np.load(a), np.load(b)
        return x.files == y.files and all(np.array_equal(x[k], y[k]) for k in x.files)
    return a.read_bytes() == b.read_bytes()


def test_deterministic_and_resumable(root, tmp_path):
    other = generate_shapenet_layout(tmp_path / "one", classes=("table",), **{**TINY, "n_per_class": 1})
    a, b = _files(root / "04379243" / "table_0000"), _files(other / "04379243" / "table_0000")
    assert a.keys() == b.keys() and all(_same_content(a[k], b[k]) for k in a)  # independent of n_per_class
    # resume: an interrupted object (stale .tmp) and a missing one are made again; others are skipped
    shutil.rmtree(other / "04379243" / "table_0000")
    (other / "04379243" / ".table_0000.tmp" / "image").mkdir(parents=True)
    before = (other / "generator.json").stat().st_mtime_ns
    generate_shapenet_layout(other, classes=("table",), **{**TINY, "n_per_class": 2})
    b = _files(other / "04379243" / "table_0000")
    assert all(_same_content(a[k], b[k]) for k in a) and not (other / "04379243" / ".table_0000.tmp").exists()
    assert (other / "generator.json").stat().st_mtime_ns == before
    assert sorted(sum(((other / "04379243" / f"{s}.lst").read_text().split() for s in ("train", "val", "test")), [])) == [
        "table_0000", "table_0001"]  # fmt: skip
    with pytest.raises(ValueError, match=r"generator\.json: .*image_size: 32 -> 48"):
        generate_shapenet_layout(other, classes=("table",), **{**TINY, "image_size": 48})


def test_builtin_cache_names_every_setting():
    # The split lists follow n_per_class, so two instance counts sharing a folder would rewrite each
    # other's train/test lists: every generator argument the apps set must change the folder.
    base = dict(classes=("chair", "table"), instances=40, views=12, size=64, points=30000, seed=0)
    names = {builtin_layout_root(**base).name}
    for key, other in (("classes", ("chair",)), ("instances", 100), ("views", 24), ("size", 32), ("points", 1000), ("seed", 1)):
        names.add(builtin_layout_root(**{**base, key: other}).name)
    assert len(names) == 7


def test_errors(root, tmp_path):
    with pytest.raises(ValueError, match="splits"):
        generate_shapenet_layout(tmp_path / "x", splits=(0.5, 0.1, 0.1), **TINY)
    with pytest.raises(ValueError, match="classes"):
        generate_shapenet_layout(tmp_path / "x", classes=("sofa",), **TINY)
    with pytest.raises(ValueError, match="split: expected one of"):
        ShapeNetDataset(root, split="dev")
    with pytest.raises(ValueError, match="class folder not found"):
        ShapeNetDataset(root, classes=["lamp"])
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    (copy / "03001627" / "test.lst").write_text("chair_0000\nchair_0009\n")
    with pytest.raises(ValueError, match=r"test\.lst: model folder .*chair_0009 not found"):
        ShapeNetDataset(copy, split="test", classes=["chair"])
    (copy / "03001627" / "val.lst").write_text("")
    with pytest.raises(ValueError, match=r"data: no val objects in .*copy"):
        ShapeNetDataset(copy, split="val", classes=["chair"]).stacked_views(("image",))
    (copy / "03001627" / "val.lst").unlink()  # no list: every model folder, as DVR
    assert len(ShapeNetDataset(copy, split="val", classes=["chair"])) == 2
    ds = ShapeNetDataset(copy, split="train", classes=["chair"])
    folder = ds.model_folder(0)
    (folder / "mask" / "0001.png").unlink()
    with pytest.raises(ValueError, match="2 images in image/ but 1 masks in mask/"):
        ds.get(0)
    (folder / "points.npz").unlink()
    with pytest.raises(ValueError, match=r"points\.npz: file not found"):
        ds.occupancy_points(0)
    np.savez(folder / "cameras.npz", world_mat_0=np.eye(4))
    shutil.copy(folder / "mask" / "0000.png", folder / "mask" / "0001.png")
    with pytest.raises(ValueError, match=r"cameras\.npz: 1 world_mat_i entries but 2 images"):
        ds.get(0)
