"""DVR's / Occupancy Networks' ShapeNet layout: a reader (`ShapeNetDataset`) and a generator of the
same layout from the built-in procedural classes (`generate_shapenet_layout`).

    root/metadata.yaml                        synset -> {id, name}
    root/<synset>/{train,val,test}.lst        model ids, one a line
    root/<synset>/<id>/model.ply              the mesh, unit-cube frame (OccNet's normalisation)
    root/<synset>/<id>/image/0000.png ...     supervision renders (DVR's `img_folder`)
    root/<synset>/<id>/mask/0000.png ...      their object masks
    root/<synset>/<id>/depth/0000.exr ...     their camera z, inf on the background
    root/<synset>/<id>/cameras.npz            world_mat_i, camera_mat_i, scale_mat_i (DVR convention)
    root/<synset>/<id>/img_choy2016/000.jpg   input images (+ their own cameras.npz)
    root/<synset>/<id>/pointcloud.npz         points, normals [N, 3] on the surface; loc, scale
    root/<synset>/<id>/points.npz             points [M, 3] (float16), occupancies (np.packbits), loc, scale

Keys and meanings follow DVR `im2mesh/data/{core,fields}.py`, `configs/default.yaml` and OccNet
`scripts/sample_mesh.py`: a mesh in the file's frame maps to the unit cube by (x - loc) / scale
(here loc = 0, scale = 1: the procedural meshes are made in the unit cube); points.npz holds
uniform samples in the cube padded by 0.1 (OccNet's `points_padding`) followed by near-surface
samples (surface + N(0, 0.01^2), OccNet's `points_sigma`), `n_uniform` says how many are uniform
(OccNet's IoU uses uniform points).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import torch
import yaml

from taichi_sdf.cameras.camera import Camera, intrinsics, look_at_poses
from taichi_sdf.data.exr import read_depth_exr, write_exr
from taichi_sdf.data.image_io import read_image, write_image
from taichi_sdf.data.multiview.dvr import read_dvr_cameras, write_dvr_cameras

__all__ = ["SYNSETS", "SYNSET_NAMES", "ShapeNetDataset", "generate_shapenet_layout", "shapenet_cameras", "render_views"]

# ShapeNet synset ids of the procedural classes (as DVR's data folders name them).
SYNSETS = {"chair": "03001627", "table": "04379243", "airplane": "02691156"}
SYNSET_NAMES = {"03001627": "chair", "04379243": "table", "02691156": "airplane,aeroplane,plane"}
LAYOUT_VERSION = 1  # bump when the generated files change (instances of another version are refused)
SPLITS = ("train", "val", "test")
IMAGE_EXTS = (".png", ".jpg", ".jpeg")
DISTANCE = 2.0  # camera distance from the unit cube's centre
FOV_X_DEG = 49.13  # a 35 mm lens (Blender's default): the cube's bounding sphere fits from DISTANCE
POINTS_PADDING, POINTS_SIGMA = 0.1, 0.01  # OccNet sample_mesh.py defaults


# ----------------------------------------------------------------------------------------- reader


def _read_lst(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _sorted_files(folder: Path, exts: tuple[str, ...], what: str) -> list[Path]:
    if not folder.is_dir():
        raise ValueError(f"{folder}: {what} folder not found")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in exts and not p.name.startswith("."))
    if not files:
        raise ValueError(f"{folder}: no {what} files ({'/'.join(exts)}) found")
    return files


def _npz(path: Path, keys: tuple[str, ...]) -> dict:
    if not path.is_file():
        raise ValueError(f"{path}: file not found")
    try:
        npz = np.load(path)
    except Exception as exc:
        raise ValueError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from None
    missing = [k for k in keys if k not in npz.files]
    if missing:
        raise ValueError(f"{path}: missing {missing}")
    return {k: npz[k] for k in npz.files}


class ShapeNetDataset(torch.utils.data.Dataset):
    """Objects of DVR's ShapeNet layout (see the module docstring), one item per object, as DVR's
    `Shapes3dDataset` with its `inputs` (image), `img` (ImagesField with camera, mask, depth), `idx`
    and `category` fields.

    Args:
        root: the dataset folder.
        split: "train", "val" or "test": the `<synset>/<split>.lst` lists; a class without the
            list uses all its model folders (as DVR).
        classes: class names ("chair") or synset ids; None: every synset folder.
        input_folder: input images (DVR's `img_folder_input`); None: items carry no input.
        input_size: resize inputs to this square size (DVR: 224); None keeps the file's size.
        random_view: draw the supervision and input views at random (torch's global generator, which
            DataLoader workers seed); default: True for "train", else view 0 (DVR's ImagesField).
        with_depth: add the depth map (DVR loads it when lambda_depth != 0).

    Items (dicts; default_collate stacks them):
        inputs `[3, S, S]` float32 in [0, 1], channels first (a conv encoder's input) and
            input_view (int); image `[H, W, 3]` float32 in [0, 1]; mask `[H, W]` bool;
            depth `[H, W]` float32 camera z in the object frame, inf on the background;
            K `[3, 3]` and T_cam_world `[4, 4]` float32: the view's camera in our convention
            (object frame, pixel centres at +0.5); camera_mat, world_mat, scale_mat `[4, 4]`
            float32: DVR's matrices from the file; view (int); idx (int, the object's index,
            DVR's code index); category (int, position of its class); model (str, "<synset>/<id>").
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        classes: list[str] | tuple[str, ...] | None = None,
        input_folder: str | None = "img_choy2016",
        input_size: int | None = None,
        random_view: bool | None = None,
        with_depth: bool = False,
        image_folder: str = "image",
        mask_folder: str = "mask",
        depth_folder: str = "depth",
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise ValueError(f"{self.root}: dataset folder not found")
        if split not in SPLITS:
            raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")
        if input_size is not None and (isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 1):
            raise ValueError(f"input_size: expected a positive int or None, got {input_size!r}")
        self.split, self.input_folder, self.input_size = split, input_folder, input_size
        self.random_view = split == "train" if random_view is None else bool(random_view)
        self.with_depth = with_depth
        self.image_folder, self.mask_folder, self.depth_folder = image_folder, mask_folder, depth_folder
        if classes is None:
            synsets = sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        else:
            synsets = sorted(SYNSETS.get(c, c) for c in classes)
        if not synsets:
            raise ValueError(f"{self.root}: no class folders found")
        meta_path = self.root / "metadata.yaml"
        meta = yaml.safe_load(meta_path.read_text()) if meta_path.is_file() else {}
        self.metadata = {s: dict((meta or {}).get(s, {"id": s, "name": "n/a"})) for s in synsets}
        self.synsets = synsets
        self.models: list[tuple[str, str, int]] = []  # (synset, model id, category index)
        for c_idx, s in enumerate(synsets):
            folder = self.root / s
            if not folder.is_dir():
                raise ValueError(f"{folder}: class folder not found (classes={list(classes or [])})")
            lst = folder / f"{split}.lst"
            ids = (
                _read_lst(lst)
                if lst.is_file()
                else sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
            )
            for m in ids:
                if not (folder / m).is_dir():
                    raise ValueError(f"{lst}: model folder {folder / m} not found")
                self.models.append((s, m, c_idx))

    @property
    def class_names(self) -> list[str]:
        """One name per category index: the first name in metadata.yaml, else the synset id."""
        names = [str(self.metadata[s].get("name", "n/a")).split(",")[0] for s in self.synsets]
        return [n if n != "n/a" else s for n, s in zip(names, self.synsets)]

    def __len__(self) -> int:
        return len(self.models)

    def model_folder(self, index: int) -> Path:
        s, m, _ = self.models[index]
        return self.root / s / m

    def mesh_path(self, index: int) -> Path:
        """The object's mesh (`model.ply` from the generator; OccNet's `model.off` if present)."""
        folder = self.model_folder(index)
        for name in ("model.ply", "model.off", "model.obj"):
            if (folder / name).is_file():
                return folder / name
        raise ValueError(f"{folder}: no model.ply / model.off / model.obj")

    def class_mean_meshes(self, resolution: int = 64) -> dict[int, object]:
        """Category index -> the class-mean shape (a trimesh) of this split's objects of that category
        (`taichi_sdf.geometry.class_mean`): the single-view baseline that ignores the input image.
        Built on first use (a few seconds per class at 64^3) and kept on this dataset object."""
        cache = self.__dict__.setdefault("_class_means", {})
        if resolution not in cache:
            import trimesh

            from taichi_sdf.geometry.class_mean import class_mean_mesh

            by_class: dict[int, list] = {}
            for i, (_, _, c) in enumerate(self.models):
                by_class.setdefault(c, []).append(trimesh.load(self.mesh_path(i), force="mesh", process=False))
            cache[resolution] = {c: class_mean_mesh(ms, resolution) for c, ms in sorted(by_class.items())}
        return cache[resolution]

    def _files(self, folder: Path, sub: str, exts: tuple[str, ...], what: str) -> list[Path]:
        return _sorted_files(folder / sub, exts, what)  # listed per item: cheap, and never stale

    def n_views(self, index: int) -> int:
        return len(self._files(self.model_folder(index), self.image_folder, IMAGE_EXTS, "image"))

    def camera(self, index: int, view: int, folder: str | None = None) -> Camera:
        """The camera (object frame) of a supervision view, or of an input view with folder=input_folder."""
        base = self.model_folder(index) / (folder or "")
        images = self._files(self.model_folder(index), folder or self.image_folder, IMAGE_EXTS, "image")
        H, W = read_image(images[view]).shape[:2]
        cams, _ = read_dvr_cameras(base / "cameras.npz", W, H, len(images))
        return cams[view]

    def pointcloud(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(points, normals) `[N, 3]` float32 on the surface, unit-cube frame (DVR's Chamfer reference)."""
        d = _npz(self.model_folder(index) / "pointcloud.npz", ("points", "normals"))
        loc, scale = d.get("loc", np.zeros(3)), float(d.get("scale", 1.0))
        pts = (d["points"].astype(np.float32) - loc) / scale
        return torch.from_numpy(pts.astype(np.float32)), torch.from_numpy(d["normals"].astype(np.float32))

    def occupancy_points(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(points `[M, 3]` float32, occupancies `[M]` bool) from points.npz (packed bits unpacked)."""
        path = self.model_folder(index) / "points.npz"
        d = _npz(path, ("points", "occupancies"))
        pts = d["points"].astype(np.float32)
        occ = d["occupancies"]
        if occ.dtype == np.uint8 and len(occ) < len(pts):  # np.packbits, as OccNet's points_unpackbits
            occ = np.unpackbits(occ)[: len(pts)]
        if len(occ) != len(pts):
            raise ValueError(f"{path}: {len(occ)} occupancies for {len(pts)} points")
        return torch.from_numpy(pts), torch.from_numpy(occ.astype(bool))

    def stacked_views(self, keys: tuple[str, ...], device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """Every (object, view) as stacked tensors `[N, V, ...]` on `device` for the item `keys` (e.g.
        "inputs", "image", "mask", "depth", "K", "T_cam_world"); supervision view v is paired with input
        view v mod (the object's input views). V is the first object's view count; every object must
        match. A split without objects is refused (a trainer has nothing to train on)."""
        if len(self) == 0:
            raise ValueError(f"data: no {self.split} objects in {self.root}")
        n_views = self.n_views(0)
        out: dict[str, list] = {k: [] for k in keys}
        for i in range(len(self)):
            if self.n_views(i) != n_views:
                raise ValueError(f"{self.model_folder(i)}: {self.n_views(i)} views, the first object has {n_views}")
            n_inputs = sum(1 for p in (self.model_folder(i) / self.input_folder).iterdir() if p.suffix in IMAGE_EXTS)
            items = [self.get(i, view=v, input_view=v % max(1, n_inputs)) for v in range(n_views)]
            for k in keys:
                out[k].append(torch.stack([it[k] for it in items]))
        return {k: torch.stack(v).to(device) for k, v in out.items()}

    def _pick(self, n: int) -> int:
        return int(torch.randint(n, ())) if self.random_view else 0

    def get(self, index: int, view: int | None = None, input_view: int | None = None) -> dict:
        """The item of object `index` with chosen views (None: as `random_view` says)."""
        folder = self.model_folder(index)
        s, m, c_idx = self.models[index]
        item: dict = {}
        if self.input_folder is not None:
            inputs = self._files(folder, self.input_folder, IMAGE_EXTS, "input image")
            k = self._pick(len(inputs)) if input_view is None else int(input_view)
            img = torch.from_numpy(read_image(inputs[k])[..., :3].copy()).permute(2, 0, 1)  # [3, h, w]
            if img.shape[0] == 1:
                img = img.expand(3, -1, -1)
            if self.input_size is not None and tuple(img.shape[1:]) != (self.input_size, self.input_size):
                img = torch.nn.functional.interpolate(img[None], size=(self.input_size,) * 2, mode="bilinear",
                                                      antialias=True, align_corners=False)[0].clamp(0, 1)  # fmt: skip
            item["inputs"], item["input_view"] = img.contiguous(), k
        images = self._files(folder, self.image_folder, IMAGE_EXTS, "image")
        masks = self._files(folder, self.mask_folder, IMAGE_EXTS, "mask")
        if len(masks) != len(images):
            raise ValueError(
                f"{folder}: {len(images)} images in {self.image_folder}/ but {len(masks)} masks in {self.mask_folder}/"
            )
        v = self._pick(len(images)) if view is None else int(view)
        img = read_image(images[v])
        H, W = img.shape[:2]
        mask = read_image(masks[v])
        if mask.shape[:2] != (H, W):
            raise ValueError(f"{masks[v]}: mask size {mask.shape[1]}x{mask.shape[0]} differs from its image's {W}x{H}")
        item["image"] = torch.from_numpy(np.ascontiguousarray(img[..., :3] if img.shape[-1] >= 3 else np.repeat(img, 3, -1)))
        item["mask"] = torch.from_numpy(mask[..., 0] > 0.5)
        cam_path = folder / "cameras.npz"
        cams, scale_mat = read_dvr_cameras(cam_path, W, H, len(images))
        if self.with_depth:
            depths = self._files(folder, self.depth_folder, (".exr",), "depth")
            if len(depths) != len(images):
                raise ValueError(f"{folder}: {len(images)} images but {len(depths)} depth maps in {self.depth_folder}/")
            d = read_depth_exr(depths[v])
            if d.shape != (H, W):
                raise ValueError(f"{depths[v]}: depth size {d.shape[1]}x{d.shape[0]} differs from its image's {W}x{H}")
            s_obj = float(torch.linalg.det(scale_mat[:3, :3])) ** (1 / 3)  # world z -> object-frame z
            item["depth"] = torch.from_numpy(d / np.float32(s_obj))
        raw = np.load(cam_path)
        item["camera_mat"] = torch.from_numpy(raw[f"camera_mat_{v}"].astype(np.float32))
        item["world_mat"] = torch.from_numpy(raw[f"world_mat_{v}"].astype(np.float32))
        item["scale_mat"] = scale_mat.float()
        item["K"], item["T_cam_world"] = cams.K[v].float(), cams.T_cam_world[v].float()
        item.update(view=v, idx=index, category=c_idx, model=f"{s}/{m}")
        return item

    def __getitem__(self, index: int) -> dict:
        return self.get(index)


# -------------------------------------------------------------------------------------- generator


def shapenet_cameras(rng: np.random.Generator, n: int, size: int, kind: str) -> Camera:
    """n cameras at `DISTANCE` looking at the origin (+y up), `FOV_X_DEG`. kind "supervision": random
    azimuth, elevation in [-20, 60] degrees; "input": Choy-like, azimuths spread evenly with jitter,
    elevation in [25, 30] degrees."""
    if kind == "supervision":
        az = rng.uniform(0, 2 * math.pi, n)
        el = np.radians(rng.uniform(-20, 60, n))
    elif kind == "input":
        az = (np.arange(n) + rng.uniform(0, 1, n)) * (2 * math.pi / n)
        el = np.radians(rng.uniform(25, 30, n))
    else:
        raise ValueError(f"kind: expected 'supervision' or 'input', got {kind!r}")
    eye = DISTANCE * np.stack([np.cos(el) * np.sin(az), np.sin(el), np.cos(el) * np.cos(az)], -1)
    T = look_at_poses(torch.from_numpy(eye), torch.zeros(3, dtype=torch.float64))
    return Camera(intrinsics(size, size, FOV_X_DEG, n), T, size, size)


def render_views(vertices: np.ndarray, faces: np.ndarray, cameras: Camera, ssaa: int = 2, background: float = 1.0):
    """(rgb `[B, H, W, 3]` float32, mask `[B, H, W]` bool, depth `[B, H, W]` float32 camera z, inf on the
    background) of a mesh, shaded like the built-in datasets (smooth colour pattern, sun + ambient)."""
    import taichi_sdf
    from taichi_sdf.data.builtin import AMBIENT, DIFFUSE, albedo
    from taichi_sdf.mesh.raster import hard_rasterize
    from taichi_sdf.mesh.render import render_mesh
    from taichi_sdf.mesh.shading import SUN, DirectionalLight

    dev = taichi_sdf.init().device
    v = torch.from_numpy(np.asarray(vertices, np.float32)).to(dev).contiguous()
    f = torch.from_numpy(np.asarray(faces, np.int64)).to(torch.int32).to(dev).contiguous()
    cams = cameras.to(dev, torch.float32)
    H, W = cameras.height, cameras.width
    with torch.no_grad():
        rgb = render_mesh(v, f, cams.resized(W * ssaa, H * ssaa), colors=albedo(v).contiguous(), normals="smooth",
                          shading="lambert", mode="hard", background=background,
                          light=DirectionalLight(SUN, DIFFUSE, AMBIENT)).rgb  # fmt: skip
        rgb = rgb.reshape(len(cams), H, ssaa, W, ssaa, 3).mean((2, 4)).clamp(0, 1)
        out = hard_rasterize(v, f, cams)  # pixel centres: mask and depth
    mask = out.face_id >= 0
    depth = torch.where(mask, out.depth, torch.full_like(out.depth, float("inf")))
    return rgb.float().cpu(), mask.cpu(), depth.float().cpu()


def _settings(**kw) -> dict:
    return {"layout_version": LAYOUT_VERSION, **kw}


def _model_id(class_name: str, index: int) -> str:
    return f"{class_name}_{index:04d}"


def _sample_surface(mesh, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(points `[n, 3]`, face index `[n]`): area-weighted uniform samples on a mesh."""
    tri = mesh.vertices[mesh.faces]  # [F, 3, 3]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    face = rng.choice(len(tri), n, p=area / area.sum())
    r1, r2 = np.sqrt(rng.random((n, 1))), rng.random((n, 1))
    t = tri[face]
    return (1 - r1) * t[:, 0] + r1 * (1 - r2) * t[:, 1] + r1 * r2 * t[:, 2], face


def _write_instance(folder: Path, class_name: str, index: int, s: dict) -> None:
    """Write one object into `folder` (a fresh temporary folder)."""
    from taichi_sdf.geometry.families import make_class_shape
    from taichi_sdf.geometry.mesh_sdf import MeshSDF
    from taichi_sdf.geometry.meshing import save_mesh

    seed = s["seed"]
    mesh = make_class_shape(class_name, index, seed=seed, resolution=s["resolution"])
    save_mesh(mesh, folder / "model.ply")
    rng = np.random.default_rng([seed, int(SYNSETS[class_name]), index])
    sets = (("", "image", s["views"], s["image_size"], "supervision", ".png"),
            ("img_choy2016", "img_choy2016", s["input_views"], s["input_size"], "input", ".jpg"))  # fmt: skip
    for sub, images, n, size, kind, ext in sets:
        cams = shapenet_cameras(rng, n, size, kind)
        rgb, mask, depth = render_views(mesh.vertices, mesh.faces, cams, s["ssaa"])
        digits = 4 if kind == "supervision" else 3  # DVR's 0000.png, Choy's 000.jpg
        for i in range(n):
            write_image(folder / images / f"{i:0{digits}d}{ext}", rgb[i])
            if kind == "supervision":
                write_image(folder / "mask" / f"{i:04d}.png", mask[i])
                write_exr(folder / "depth" / f"{i:04d}.exr", depth[i].numpy())
        write_dvr_cameras(folder / sub / "cameras.npz", cams)
    # OccNet's pointcloud.npz (surface samples with face normals) and points.npz (occupancies).
    pts, face = _sample_surface(mesh, s["n_pointcloud"], rng)
    loc, scale = np.zeros(3, np.float32), np.float32(1.0)
    np.savez(folder / "pointcloud.npz", points=pts.astype(np.float32), normals=mesh.face_normals[face].astype(np.float32),
             loc=loc, scale=scale)  # fmt: skip
    n_uniform = int(round(s["n_points"] * s["points_uniform_ratio"]))
    uniform = (1 + POINTS_PADDING) * (rng.random((n_uniform, 3)) - 0.5)
    near = _sample_surface(mesh, s["n_points"] - n_uniform, rng)[0]
    near = near + POINTS_SIGMA * rng.standard_normal(near.shape)
    points = np.concatenate([uniform, near]).astype(np.float16)  # OccNet stores float16
    mesh_sdf = MeshSDF(mesh.vertices, mesh.faces)
    wn = mesh_sdf.winding_number(torch.from_numpy(points.astype(np.float32)).to(mesh_sdf.vertices.device))
    occ = (wn.abs() > 0.5).cpu().numpy()
    np.savez(
        folder / "points.npz", points=points, occupancies=np.packbits(occ), n_uniform=np.int64(n_uniform), loc=loc, scale=scale
    )


def builtin_layout_root(classes, instances: int, views: int, size: int, points: int, seed: int,
                        cache: str | os.PathLike = "outputs/cache") -> Path:
    """The cache folder of a built-in layout with these generator settings. Every setting that changes
    what is written, the split lists included (`instances` sets the per-class shuffle), is in the name,
    so runs with different settings never rewrite each other's `{train,val,test}.lst`."""
    return Path(cache) / f"shapenet_{'_'.join(classes)}_{instances}x_{views}v_{size}px_{points}p_s{seed}"


def generate_shapenet_layout(
    root: str | os.PathLike,
    classes: tuple[str, ...] = ("chair", "table", "airplane"),
    n_per_class: int = 8,
    views: int = 24,
    input_views: int = 24,
    image_size: int = 64,
    input_size: int | None = None,
    seed: int = 0,
    splits: tuple[float, float, float] = (0.7, 0.1, 0.2),
    resolution: int = 128,
    n_pointcloud: int = 100_000,
    n_points: int = 100_000,
    points_uniform_ratio: float = 0.5,
    ssaa: int = 2,
    progress: bool = True,
) -> Path:
    """Write DVR's ShapeNet layout (module docstring) for `n_per_class` procedural objects per class.

    Deterministic in `seed` (object i of a class is the same whatever else is generated) and
    resumable: each object is written to a temporary folder and renamed when complete, finished ones
    are skipped; `root/generator.json` records the settings and a second call with settings that
    shape the objects differently is refused (n_per_class and classes may grow). Split lists follow a
    seeded shuffle per class with the `splits` fractions (train, val, test). Images: `views`
    supervision renders of `image_size` px and `input_views` input renders (img_choy2016, jpg) of
    `input_size` px (default: image_size); OccNet's defaults are 100k surface points and 100k
    occupancy points (here half uniform, half near the surface). Returns the root.
    """
    from tqdm.auto import tqdm

    from taichi_sdf.geometry.families import CLASSES

    for name, value, lo in (("n_per_class", n_per_class, 1), ("views", views, 1), ("input_views", input_views, 1),
                            ("image_size", image_size, 2), ("resolution", resolution, 32), ("n_pointcloud", n_pointcloud, 1),
                            ("n_points", n_points, 1), ("ssaa", ssaa, 1), ("seed", seed, 0)):  # fmt: skip
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
            raise ValueError(f"{name}: expected an int >= {lo}, got {value!r}")
    input_size = image_size if input_size is None else input_size
    if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 2:
        raise ValueError(f"input_size: expected an int >= 2 or None, got {input_size!r}")
    bad = [c for c in classes if c not in SYNSETS or c not in CLASSES]
    if bad or not classes:
        raise ValueError(f"classes: expected names among {tuple(SYNSETS)}, got {tuple(classes)!r}")
    fr = tuple(float(x) for x in splits)
    if len(fr) != 3 or min(fr) < 0 or abs(sum(fr) - 1) > 1e-6:
        raise ValueError(f"splits: expected three fractions (train, val, test) >= 0 summing to 1, got {splits!r}")
    if not 0 <= points_uniform_ratio <= 1:
        raise ValueError(f"points_uniform_ratio: expected a value in [0, 1], got {points_uniform_ratio!r}")

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    s = _settings(seed=int(seed), views=views, input_views=input_views, image_size=image_size, input_size=input_size,
                  resolution=resolution, n_pointcloud=n_pointcloud, n_points=n_points,
                  points_uniform_ratio=float(points_uniform_ratio), ssaa=ssaa, distance=DISTANCE, fov_x_deg=FOV_X_DEG)  # fmt: skip
    gen_file = root / "generator.json"
    if gen_file.is_file():
        old = json.loads(gen_file.read_text())
        differ = sorted(k for k in set(old) | set(s) if old.get(k) != s.get(k))
        if differ:
            raise ValueError(
                f"{gen_file}: the folder was generated with other settings ({', '.join(f'{k}: {old.get(k)!r} -> {s.get(k)!r}' for k in differ)}); use another root"
            )
    else:
        gen_file.write_text(json.dumps(s, indent=1))

    todo = [(c, i) for c in classes for i in range(n_per_class) if not (root / SYNSETS[c] / _model_id(c, i)).is_dir()]
    bar = tqdm(todo, desc="shapenet layout", unit="object", disable=not progress or not todo)
    for c, i in bar:
        final = root / SYNSETS[c] / _model_id(c, i)
        tmp = final.with_name(f".{final.name}.tmp")
        if tmp.exists():
            shutil.rmtree(tmp)  # left by an interrupted run
        tmp.mkdir(parents=True)
        _write_instance(tmp, c, i, s)
        os.replace(tmp, final)

    for c in classes:
        folder = root / SYNSETS[c]
        order = np.random.default_rng([int(seed), int(SYNSETS[c]), 1]).permutation(n_per_class)
        n_train = round(fr[0] * n_per_class)
        n_val = min(round(fr[1] * n_per_class), n_per_class - n_train)
        parts = {"train": order[:n_train], "val": order[n_train : n_train + n_val], "test": order[n_train + n_val :]}
        for split, idx in parts.items():
            (folder / f"{split}.lst").write_text("".join(f"{_model_id(c, int(i))}\n" for i in sorted(idx)))
    meta_path = root / "metadata.yaml"
    meta = yaml.safe_load(meta_path.read_text()) if meta_path.is_file() else {}
    meta = meta or {}
    for c in classes:
        meta[SYNSETS[c]] = {"id": SYNSETS[c], "name": SYNSET_NAMES[SYNSETS[c]]}
    meta_path.write_text(yaml.safe_dump(meta, sort_keys=True))
    return root
