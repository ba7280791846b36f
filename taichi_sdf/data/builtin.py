"""The built-in datasets: multi-view renders (images, masks, cameras, depth, ground truth) of the
analytic scenes and of any mesh, written in the IDR, NeRF, COLMAP or nerfstudio layout. `python -m apps.make_dataset` is
its command line; the IDR app renders its default data with it (cached).

Built-in scenes (SDFs of `taichi_sdf.implicit.scenes`) are rendered by the fused sphere tracer with a
spatially varying albedo under a fixed sun + ambient light (Lambertian: view-independent, like
../shared/data/spot), from cameras on a Fibonacci sphere of radius 2.75 with a 40 degree field of
view. World units differ from the normalised frame by `scale_mat` (a scale and an offset), so
loaders and mesh export are exercised. Meshes go through the same cameras and light (rasterized,
textures or vertex colours, supersampled); see `apps/make_dataset.py` for the details a user sees.
"""


from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import taichi_sdf
from taichi_sdf.cameras import camera as cameras
from taichi_sdf.data.multiview import MultiViewDataset, save_colmap, save_idr, save_nerf, save_nerfstudio
from taichi_sdf.geometry.meshing import extract_mesh, save_mesh
from taichi_sdf.implicit.scenes import make_scene
from taichi_sdf.implicit.sphere_trace import sphere_trace
from taichi_sdf.mesh.raster import hard_rasterize
from taichi_sdf.mesh.render import render_mesh
from taichi_sdf.mesh.shading import SUN, DirectionalLight, vertex_normals
from taichi_sdf.train.metrics import sample_surface

DATASET_VERSION = 1  # bump when the rendering below changes (invalidates cached built-in datasets)
# normalised -> world: x_world = 1.5 x + (0.1, -0.2, 0.3)
DEFAULT_SCALE_MAT = torch.tensor(
    [[1.5, 0, 0, 0.1], [0, 1.5, 0, -0.2], [0, 0, 1.5, 0.3], [0, 0, 0, 1.0]], dtype=torch.float64
)
# SUN = (-0.3, -1.0, -0.5) (from taichi_sdf.mesh.shading): direction of travel, normalised frame, as
# in the spot data
AMBIENT, DIFFUSE = 0.35, 0.65  # rgb = albedo * (AMBIENT + DIFFUSE * max(n . -SUN, 0))
MESH_GREY = 0.7  # albedo of meshes without texture or vertex colours
MESH_MARGIN = 1.1  # the mesh's bounding sphere (about its bbox centre) gets radius 1 / MESH_MARGIN
PIXELS_PER_CHUNK = 2**21  # supersampled pixels rendered per batch of views (bounds memory)


def albedo(points: torch.Tensor) -> torch.Tensor:
    """A smooth colour pattern `[N, 3]` in [0.15, 0.85] so that RGB losses see texture."""
    phase = torch.tensor([0.0, 2.1, 4.2], dtype=points.dtype, device=points.device)
    return 0.5 + 0.35 * torch.sin(5.0 * points[:, :1] + 3.0 * points[:, 1:2] - 2.0 * points[:, 2:3] + phase)


def shade(points: torch.Tensor, normals: torch.Tensor) -> torch.Tensor:
    L = -torch.tensor(SUN, dtype=points.dtype, device=points.device)
    L = L / L.norm()
    return (albedo(points) * (AMBIENT + DIFFUSE * (normals * L).sum(-1, keepdim=True).clamp_min(0))).clamp(0, 1)


def render_scene_dataset(scene: str = "csg", views: int = 48, size: int = 64, distance: float = 2.75,
                         fov_x_deg: float = 40.0, scale_mat: torch.Tensor = DEFAULT_SCALE_MAT,
                         test_every: int = 8, test_offset: int = 3) -> MultiViewDataset:  # fmt: skip
    info = taichi_sdf.init()
    field = make_scene(scene, device=info.device)
    cams = cameras.fibonacci_cameras(views, distance, size, size, fov_x_deg)
    o, d = cams.to(info.device, torch.float32).image_rays()
    with torch.no_grad():
        # the views stacked as one tall image of rays (packets of two image rows march together), flat outputs
        r = sphere_trace(field, o.reshape(-1, size, 3).contiguous(), d.reshape(-1, size, 3).contiguous()).reshape(-1)
    rgb = torch.where(r.hit[:, None], shade(r.points, r.normals), torch.zeros_like(r.points))
    test = list(range(test_offset, views, test_every))
    return MultiViewDataset(
        images=rgb.reshape(views, size, size, 3).float().cpu(),
        masks=r.hit.reshape(views, size, size).cpu(),
        cameras=cams,
        scale_mat=scale_mat.double(),
        names=[f"{i:03d}" for i in range(views)],
        splits={"train": [i for i in range(views) if i not in test], "test": test},
        source=f"builtin:{scene}",
    )


def ground_truth(scene: str, scale_mat: torch.Tensor, n_points: int = 100_000, resolution: int = 256):
    """(mesh, points [n, 3], normals [n, 3]) of a built-in scene's surface, in world units."""
    info = taichi_sdf.init()
    field = make_scene(scene, device=info.device)
    mesh = extract_mesh(lambda x: field.values(x.contiguous()), resolution=resolution, device=info.device,
                        T_world_field=scale_mat.numpy())  # fmt: skip
    pts, nrm = sample_surface(mesh, n_points, seed=0)
    return mesh, np.asarray(pts), np.asarray(nrm)


SPARSE_POINTS = 5000  # ground-truth surface samples written as the sparse model of COLMAP / nerfstudio exports
FORMATS = ("idr", "nerf", "colmap", "nerfstudio")


def write_dataset(ds: MultiViewDataset, out: str | Path, fmt: str = "idr", scene: str | None = None,
                  gt: tuple | None = None, depth: torch.Tensor | None = None) -> Path:  # fmt: skip
    """Write `ds` as an IDR, NeRF, COLMAP (text model in sparse/0/) or nerfstudio folder plus
    splits.json and, for a built-in `scene` or given `gt = (mesh, points, normals)` in world units, the
    ground truth and scale_mat.json; `depth` `[N, H, W]` maps are written next to the images (see the
    module docstring). COLMAP and nerfstudio folders get the first SPARSE_POINTS ground-truth samples
    as their sparse points (tracks: the views whose mask holds the point)."""
    out = Path(out)
    if fmt not in FORMATS:
        raise ValueError(f"format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    if scene is not None or gt is not None:
        gt = ground_truth(scene, ds.scale_mat) if gt is None else gt
    sparse = None if gt is None else np.asarray(gt[1])[:SPARSE_POINTS]
    if fmt == "idr":
        save_idr(ds, out)
    elif fmt == "nerf":
        save_nerf(ds, out)
    elif fmt == "colmap":
        save_colmap(ds, out, points=sparse)
    else:
        save_nerfstudio(ds, out, points=sparse)
    (out / "splits.json").write_text(json.dumps(ds.splits))
    if depth is not None:
        if fmt == "idr":
            (out / "depth").mkdir(exist_ok=True)
            files = [out / "depth" / f"{i:03d}.npy" for i in range(len(ds))]  # as save_idr names images
        elif fmt == "nerf":
            files = [None] * len(ds)
            for split, idx in ds.splits.items():  # as save_nerf names images
                for k, i in enumerate(idx):
                    files[i] = out / split / f"r_{k}_depth.npy"
        else:
            (out / "depth").mkdir(exist_ok=True)
            stems = ds.names if fmt == "colmap" else [f"frame_{i + 1:05d}" for i in range(len(ds))]  # as the writers name images
            files = [out / "depth" / f"{stem}.npy" for stem in stems]
        for i, f in enumerate(files):
            if f is not None:
                np.save(f, depth[i].numpy().astype(np.float32))
    if gt is not None:
        mesh, pts, nrm = gt
        np.save(out / "gt_points.npy", pts)
        np.save(out / "gt_normals.npy", nrm)
        save_mesh(mesh, out / "gt_mesh.ply")
        (out / "scale_mat.json").write_text(json.dumps(ds.scale_mat.tolist()))
    return out


@dataclass
class MeshAsset:
    """A mesh file's geometry and albedo source, in the file's (world) units.

    vertices `[V, 3]` float64, faces `[F, 3]` int64, normals `[V, 3]` smooth normals of the mesh
    welded by position; uv `[V, 2]` (per vertex, u right / v up) with texture `[Ht, Wt, 3]` float32
    in [0, 1] (row 0 = top), or colors `[V, 3]`; `albedo` says which ("texture", "vertex colours",
    "grey").
    """

    vertices: np.ndarray
    faces: np.ndarray
    normals: np.ndarray
    uv: np.ndarray | None = None
    texture: np.ndarray | None = None
    colors: np.ndarray | None = None
    albedo: str = "grey"


def _image_array(img, path) -> np.ndarray:
    try:
        if isinstance(img, (str, Path)):
            import imageio.v3 as iio

            arr = np.asarray(iio.imread(img))
        else:  # a PIL image from trimesh's material
            arr = np.asarray(img.convert("RGBA") if getattr(img, "mode", "") in ("P", "LA", "PA") else img)
    except Exception as exc:
        raise ValueError(f"{path}: cannot read texture image ({type(exc).__name__}: {exc})") from None
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 2, 3, 4) or min(arr.shape[:2]) < 1:
        raise ValueError(f"{path}: expected a texture image [H, W, C], got shape {list(arr.shape)}")
    scale = 255.0 if arr.dtype == np.uint8 else 65535.0 if arr.dtype == np.uint16 else 1.0
    arr = arr.astype(np.float32) / scale
    rgb = arr[..., :3] if arr.shape[-1] >= 3 else np.repeat(arr[..., :1], 3, -1)
    return np.ascontiguousarray(np.clip(rgb, 0.0, 1.0))


def _is_placeholder(img) -> bool:
    """trimesh gives uv-mapped meshes without a material image a 2x2 one-colour placeholder."""
    if img is None or not hasattr(img, "size"):
        return False
    arr = np.asarray(img)
    return max(img.size) <= 2 and bool((arr == arr.reshape(-1, *arr.shape[2:])[0]).all())


def _sibling_texture(path: Path) -> Path | None:
    for stem in (f"{path.stem}_texture", path.stem):
        for ext in (".png", ".jpg", ".jpeg"):
            cand = path.with_name(stem + ext)
            if cand.is_file():
                return cand
    return None


def load_mesh_asset(path: str | Path, texture: str | Path | None = None) -> MeshAsset:
    """Read a mesh with trimesh (scenes are concatenated); raises ValueError naming the file when it
    is missing or unreadable, has no faces, or has non-finite vertices."""
    import trimesh

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: mesh file not found")
    try:
        mesh = trimesh.load(path, force="mesh", process=False)
    except Exception as exc:  # trimesh raises many types for bad files
        raise ValueError(f"{path}: cannot read mesh ({type(exc).__name__}: {exc})") from None
    if not isinstance(mesh, trimesh.Trimesh):
        raise ValueError(f"{path}: expected a triangle mesh, got {type(mesh).__name__}")
    v = np.asarray(mesh.vertices, dtype=np.float64)
    f = np.asarray(mesh.faces, dtype=np.int64).reshape(-1, 3)
    if len(f) == 0:
        raise ValueError(f"{path}: the mesh has no faces (a point cloud?); a surface is needed")
    if not np.isfinite(v).all():
        raise ValueError(f"{path}: {int((~np.isfinite(v)).any(1).sum())} vertices have non-finite coordinates")
    # smooth normals of the mesh welded by position: loaders split vertices along uv seams
    _, first, inverse = np.unique(v, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    n_w = vertex_normals(torch.from_numpy(v[first]), torch.from_numpy(inverse[f])).numpy()
    asset = MeshAsset(v, f, n_w[inverse])
    visual = mesh.visual
    uv = getattr(visual, "uv", None)
    if uv is not None and len(uv) == len(v) and visual.kind == "texture":
        mat = getattr(visual, "material", None)
        img = getattr(mat, "image", None) if mat is not None else None
        img = img if img is not None else getattr(mat, "baseColorTexture", None)
        if _is_placeholder(img):
            img = None
        source = f"{path} (material)"
        if texture is not None:
            img, source = Path(texture), str(texture)
            if not img.is_file():
                raise ValueError(f"{img}: texture file not found")
        elif img is None:
            img = _sibling_texture(path)
            source = str(img)
            if img is not None:
                print(f"{path}: no texture image in its material; using {img}")
        if img is not None:
            asset.uv = np.asarray(uv, dtype=np.float64)
            asset.texture = _image_array(img, source)
            asset.albedo = "texture"
            return asset
    if texture is not None:
        raise ValueError(f"{path}: --texture given but the mesh has no uv coordinates")
    if visual.kind in ("vertex", "face"):
        asset.colors = np.asarray(visual.vertex_colors, dtype=np.float64)[:, :3] / 255.0
        asset.albedo = "vertex colours"
    return asset


def mesh_scale_mat(vertices: np.ndarray, margin: float = MESH_MARGIN) -> torch.Tensor:
    """`[4, 4]` normalised -> mesh frame: scale margin x (bounding radius about the bbox centre)."""
    centre = (vertices.min(0) + vertices.max(0)) / 2
    radius = float(np.linalg.norm(vertices - centre, axis=1).max())
    if not radius > 0:
        raise ValueError("mesh: all vertices coincide; nothing to render")
    S = torch.eye(4, dtype=torch.float64)
    S[:3, :3] *= margin * radius
    S[:3, 3] = torch.from_numpy(centre)
    return S


def render_mesh_dataset(asset: MeshAsset, views: int = 48, size: int = 64, distance: float = 2.75,
                        fov_x_deg: float = 40.0, ssaa: int = 2, normals: str = "smooth", test_every: int = 8,
                        test_offset: int = 3, source: str = "mesh") -> tuple[MultiViewDataset, torch.Tensor]:  # fmt: skip
    """(dataset, depth `[N, H, W]` camera z in world units) of a mesh (see the module docstring)."""
    info = taichi_sdf.init()
    dev = info.device
    S = mesh_scale_mat(asset.vertices[np.unique(asset.faces)])  # vertices the faces use
    s = float(S[0, 0])
    vn = torch.from_numpy((asset.vertices - S[:3, 3].numpy()) / s).float().to(dev).contiguous()
    faces = torch.from_numpy(asset.faces).to(torch.int32).to(dev).contiguous()
    if normals not in ("smooth", "flat"):
        raise ValueError(f"normals: expected 'smooth' or 'flat', got {normals!r}")
    smooth = torch.from_numpy(asset.normals).float().to(dev).contiguous()
    kw = dict(normals=smooth if normals == "smooth" else "flat", shading="lambert", mode="hard", background=0.0,
              light=DirectionalLight(SUN, DIFFUSE, AMBIENT))  # fmt: skip
    if asset.texture is not None:
        uv = torch.from_numpy(asset.uv).float().to(dev).contiguous()
        kw["texture"] = (torch.from_numpy(asset.texture).to(dev), uv, faces)
        # an atlas (uvs in [0, 1]) must not bleed across its borders; uvs beyond it mean tiling
        tiled = bool((asset.uv < -1e-6).any() or (asset.uv > 1 + 1e-6).any())
        kw["address"] = "repeat" if tiled else "clamp"
    else:
        cols = asset.colors if asset.colors is not None else np.full((len(asset.vertices), 3), MESH_GREY)
        kw["colors"] = torch.from_numpy(cols).float().to(dev).contiguous()
    cams = cameras.fibonacci_cameras(views, distance, size, size, fov_x_deg)
    hi = size * ssaa
    cams_f = cams.to(dev, torch.float32)
    cams_hi = cams_f.resized(hi, hi)
    chunk = max(1, PIXELS_PER_CHUNK // (hi * hi))
    rgb, masks, depth = [], [], []
    with torch.no_grad():
        for i in range(0, views, chunk):
            sel = torch.arange(i, min(i + chunk, views), device=dev)
            img = render_mesh(vn, faces, cams_hi[sel], **kw).rgb  # [b, hi, hi, 3]
            img = img.reshape(len(sel), size, ssaa, size, ssaa, 3).mean((2, 4))  # box filter
            rgb.append(img.clamp(0, 1).cpu())
            out = hard_rasterize(vn, faces, cams_f[sel])  # pixel centres: mask and depth
            masks.append((out.face_id >= 0).cpu())
            depth.append((out.depth * s).cpu())
    test = list(range(test_offset, views, test_every))
    ds = MultiViewDataset(
        images=torch.cat(rgb).float(), masks=torch.cat(masks), cameras=cams, scale_mat=S,
        names=[f"{i:03d}" for i in range(views)],
        splits={"train": [i for i in range(views) if i not in test], "test": test}, source=source,
    )  # fmt: skip
    return ds, torch.cat(depth).float()


def mesh_ground_truth(asset: MeshAsset, n_points: int = 100_000):
    """(mesh, points [n, 3], normals [n, 3]) of the mesh surface in world (file) units."""
    import trimesh

    mesh = trimesh.Trimesh(asset.vertices, asset.faces, process=False)
    mesh.merge_vertices()  # weld the copies loaders make along uv seams (geometry unchanged)
    pts, nrm = sample_surface(mesh, n_points, seed=0)
    return mesh, pts, nrm
