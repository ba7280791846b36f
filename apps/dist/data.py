"""Observations for the DIST demos, made offline from held-out meshes with the project's rasterizer
(hard mode): per shape, V views of RGB (procedural vertex colours, Lambert under the built-in sun),
silhouette, camera z-depth and world normals, with the cameras, in the decoder's normalised frame.
Sparse / noisy depth as in the paper's single-view experiments is made from the clean depth.

Layout: `<out>/views/<key>/<instance>.npz` (`key`: size, view count and a digest of the settings, so
runs with other view settings, e.g. noisy depth, keep their own files) with K [V, 3, 3], T_cam_world [V, 4, 4], rgb [V, H, W, 3],
mask [V, H, W], depth [V, H, W] (0 where there is none: background, or dropped by `depth_keep`),
depth_clean, normal [V, H, W, 3] (world, 0 on background); `settings.json` there records the settings.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from taichi_sdf.cameras.camera import Camera, intrinsics, look_at_poses
from taichi_sdf.mesh.render import render_mesh
from taichi_sdf.train.checkpoint import atomic_write_bytes
from taichi_sdf.train.config import config_to_dict

from .config import ViewsConfig
from .shapes import HeldOutShape


@dataclass
class Observations:
    """V views of one shape (torch tensors on the app's device)."""

    cameras: Camera
    rgb: torch.Tensor  # [V, H, W, 3]
    mask: torch.Tensor  # [V, H, W] bool
    depth: torch.Tensor  # [V, H, W] camera z, 0 where unknown
    depth_clean: torch.Tensor  # [V, H, W]
    normal: torch.Tensor  # [V, H, W, 3] world

    def __len__(self) -> int:
        return len(self.cameras)

    def view(self, i: int) -> Observations:
        return Observations(self.cameras[i], self.rgb[i : i + 1], self.mask[i : i + 1], self.depth[i : i + 1],
                            self.depth_clean[i : i + 1], self.normal[i : i + 1])  # fmt: skip


def albedo(points: np.ndarray, key: str = "") -> np.ndarray:
    """`[N, 3]` procedural colours in [0.15, 0.85] of positions `[N, 3]`: smooth stripes (texture for
    photometric warping) whose phases and frequency depend on the shape's name `key`, so that shapes
    differ in colour and a colour code has something to encode."""
    rng = np.random.default_rng(zlib.crc32(key.encode()))
    phase = rng.uniform(0, 2 * np.pi, 3)
    freq = rng.uniform(3.0, 7.0)
    mix = np.array([[1.0, 0.6, -0.4], [0.3, 1.0, 0.8], [-0.7, 0.2, 1.0]])
    return 0.5 + 0.35 * np.sin(freq * points @ mix.T + phase)


def view_cameras(vc: ViewsConfig, index: int) -> Camera:
    """`vc.views` cameras around the origin for shape number `index`: azimuths evenly spread (a random
    start), elevations uniform in `vc.elevation_deg`, looking at the origin, +y up."""
    g = torch.Generator().manual_seed(vc.seed * 7919 + index)
    n = vc.views
    az = (torch.arange(n, dtype=torch.float64) + torch.rand(1, generator=g, dtype=torch.float64)) * (2 * math.pi / n)
    lo, hi = (math.radians(e) for e in vc.elevation_deg)
    el = lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64)
    eye = vc.radius * torch.stack([el.cos() * az.sin(), el.sin(), el.cos() * az.cos()], -1)
    T = look_at_poses(eye, torch.zeros(3, dtype=torch.float64))
    return Camera(intrinsics(vc.size, vc.size, vc.fov_deg, n), T, vc.size, vc.size)


def render_observations(shape: HeldOutShape, vc: ViewsConfig, index: int) -> dict[str, np.ndarray]:
    cams = view_cameras(vc, index).to(dtype=torch.float32)
    v = torch.as_tensor(shape.vertices, dtype=torch.float32)
    f = torch.as_tensor(shape.faces, dtype=torch.int32)
    colors = torch.as_tensor(albedo(shape.vertices, shape.name), dtype=torch.float32)
    with torch.no_grad():
        out = render_mesh(v[None].expand(len(cams), -1, -1).contiguous(), f, cams, colors=colors[None].expand(len(cams), -1, -1).contiguous(),
                          shading="lambert", mode="hard", background=0.0)  # fmt: skip
    mask = out.alpha > 0.5
    depth = torch.where(mask, out.depth, torch.zeros_like(out.depth))
    g = torch.Generator().manual_seed(vc.seed * 104729 + index)
    noisy = depth * (1 + vc.depth_noise * torch.randn(depth.shape, generator=g)) if vc.depth_noise > 0 else depth
    if vc.depth_keep < 1:
        noisy = torch.where(torch.rand(depth.shape, generator=g) < vc.depth_keep, noisy, torch.zeros_like(noisy))
    return {"K": cams.K.numpy(), "T_cam_world": cams.T_cam_world.numpy(), "rgb": out.rgb.clamp(0, 1).numpy(),
            "mask": mask.numpy(), "depth": noisy.numpy(), "depth_clean": depth.numpy(),
            "normal": (out.normals * mask[..., None]).numpy()}  # fmt: skip


ALBEDO_VERSION = 2  # 2: per-shape colours (1: one colour function for every shape)


def settings_of(vc: ViewsConfig) -> dict:
    return {**json.loads(json.dumps(config_to_dict(vc))), "albedo_version": ALBEDO_VERSION}


def views_folder(out: Path, vc: ViewsConfig) -> Path:
    digest = hashlib.sha1(json.dumps(settings_of(vc), sort_keys=True).encode()).hexdigest()[:8]
    return Path(out) / "views" / f"{vc.size}px_{vc.views}v_{digest}"


def make_observations(shapes: list[HeldOutShape], vc: ViewsConfig, out: Path, progress: bool = True) -> list[Path]:
    """Render every shape's views into `out/views/` (skipping files made with the same settings)."""
    from tqdm import tqdm

    settings = settings_of(vc)
    folder = views_folder(out, vc)
    folder.mkdir(parents=True, exist_ok=True)
    settings_path = folder / "settings.json"
    same = settings_path.is_file() and json.loads(settings_path.read_text()) == settings
    paths = []
    for i, shape in enumerate(tqdm(shapes, desc="dist views", unit="shape", disable=not progress, dynamic_ncols=True)):
        path = folder / f"{shape.name}.npz"
        paths.append(path)
        if same and path.is_file():
            continue
        buf = io.BytesIO()
        np.savez_compressed(buf, **render_observations(shape, vc, i))
        atomic_write_bytes(path, buf.getvalue())
    atomic_write_bytes(settings_path, json.dumps(settings, indent=1).encode())
    return paths


def load_observations(path: Path, device: torch.device | str = "cpu") -> Observations:
    try:
        z = np.load(path)
        K, T = (torch.from_numpy(z[k]).to(device) for k in ("K", "T_cam_world"))
        t = {k: torch.from_numpy(z[k]).to(device) for k in ("rgb", "mask", "depth", "depth_clean", "normal")}
    except (OSError, KeyError, ValueError) as e:
        raise ValueError(f"{path}: not a DIST observation file ({e}); delete it to have it rebuilt") from None
    H, W = t["mask"].shape[1:]
    return Observations(Camera(K, T, int(W), int(H)), t["rgb"], t["mask"].bool(), t["depth"], t["depth_clean"], t["normal"])
