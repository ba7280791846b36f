"""The viewer's renderer: one camera in, shaded images out. Training apps call it for progress frames:

    from apps.view import Renderer, OrbitController
    images = Renderer("outputs/idr").render(OrbitController().camera(256, 256))
    write_image("frame.png", images["color"])

or, with networks in memory, `Renderer(IDRSource(trainer.implicit, trainer.rendering))`.
"""

from __future__ import annotations

import time

import numpy as np
import torch

import taichi_sdf
from taichi_sdf import viz as shading
from taichi_sdf.cameras.camera import Camera
from taichi_sdf.cameras.rays import z_per_t

from .sources import Overlay, Source, load_source

MODES = ("normals", "depth", "lambert", "color")
BACKGROUND = (0.11, 0.11, 0.13)
ALBEDO = (0.85, 0.55, 0.3)  # the `color` shading of sources with no colour of their own
OUTLINE_RGB = np.array([1.0, 0.85, 0.1], dtype=np.float32)
POINTS_RGB = np.array([0.1, 1.0, 0.35], dtype=np.float32)


class Renderer:
    """Renders a `Source` (or a SOURCE string, see `apps.viewer.sources.load_source`) from one camera.

    `render(camera, modes)` returns float32 `[H, W, 3]` images in [0, 1] for each requested shading:
    `normals` (world normals as 0.5 + 0.5 n), `depth` (camera z, near = white, over the frame's
    depth range), `lambert` (diffuse under a headlight), `color` (the model's colour: IDR's
    rendering network, a mesh's vertex colours, the built-in dataset's colours for scenes, else Phong
    with an albedo), plus `hit [H, W]` bool and `z [H, W]` camera depth (0 on background). `stats`
    holds the last frame's seconds, rays and field evaluations.
    """

    def __init__(self, source, background=BACKGROUND, **load_kw) -> None:
        taichi_sdf.init()
        self.source: Source = load_source(source, **load_kw)
        self.background = tuple(float(c) for c in background)
        self.stats = {"seconds": 0.0, "rays": 0, "evals": 0}
        self._overlay: Overlay | None = None

    def default_mode(self) -> str:
        return "color" if self.source.has_color else "lambert"

    def render(self, camera: Camera, modes=MODES, overlay: bool = False) -> dict[str, torch.Tensor]:
        if isinstance(modes, str):
            modes = (modes,)
        bad = [m for m in modes if m not in MODES]
        if bad:
            raise ValueError(f"modes: expected some of {MODES}, got {bad}")
        if len(camera) != 1:
            raise ValueError(f"camera: expected one camera, got a batch of {len(camera)}")
        dev = taichi_sdf.device()
        t0 = time.perf_counter()
        cam = camera.to(dev, torch.float32)
        H, W = cam.height, cam.width
        o, d = cam.image_rays()
        o, d = o.reshape(-1, 3).contiguous(), d.reshape(-1, 3).contiguous()
        hits = self.source.trace(cam, o, d)
        hit = hits.hit.reshape(-1).bool()
        normals = torch.where(hit[:, None], hits.normals, torch.zeros_like(hits.normals))
        z = torch.where(hit, hits.t * z_per_t(cam.T_cam_world, d[None])[0], torch.zeros_like(hits.t))
        out: dict[str, torch.Tensor] = {}
        bg = self.background
        # Headlight from above-left of the camera, so the side facing the viewer is always lit.
        light = (cam.R[0].T @ torch.tensor([0.35, 0.6, 1.0], device=dev)).tolist()
        for mode in modes:
            if mode == "normals":
                img = shading.normal_map(normals, hit, bg)
            elif mode == "depth":
                img = shading.depth_map(z, hit, background=bg)  # near..far of this frame's hits
            elif mode == "lambert":
                img = shading.lambert(normals, hit, light, (0.8, 0.8, 0.8), 0.2, bg)
            else:
                img = self._color(hits.points, normals, d, hit, light)
            out[mode] = img.reshape(H, W, 3).float()
        out["hit"] = hit.reshape(H, W)
        out["z"] = z.reshape(H, W)
        if overlay:
            gt = self.overlay()
            for mode in modes:
                out[mode] = torch.from_numpy(draw_overlay(out[mode].cpu().numpy(), gt, cam, out["hit"].cpu().numpy(),
                                                          out["z"].cpu().numpy()))  # fmt: skip
        taichi_sdf.sync()
        self.stats = {"seconds": time.perf_counter() - t0, "rays": H * W, "evals": int(hits.evals)}
        return out

    def _color(self, points, normals, d, hit, light) -> torch.Tensor:
        bg = torch.tensor(self.background, device=points.device).expand_as(points)
        rgb = self.source.color(points[hit], normals[hit], d[hit]) if bool(hit.any()) else None
        if rgb is None:
            return shading.phong(normals, d, hit, light, ALBEDO, background=self.background)
        img = bg.clone()
        img[hit] = rgb.to(img.dtype)
        return img

    def overlay(self) -> Overlay:
        """The source's ground truth (cached until `reload`)."""
        if self._overlay is None:
            self._overlay = self.source.ground_truth()
        return self._overlay

    def reload(self) -> None:
        self.source.reload()
        self._overlay = None


def outline(hit: np.ndarray) -> np.ndarray:
    """`[H, W]` bool: pixels on the silhouette's border (hit pixels with a background 4-neighbour;
    the image border is not a silhouette, so bands of an image join without seams)."""
    pad = np.pad(hit, 1, mode="edge")
    inner = pad[:-2, 1:-1] & pad[2:, 1:-1] & pad[1:-1, :-2] & pad[1:-1, 2:]
    return hit & ~inner


def draw_overlay(img: np.ndarray, gt: Overlay, cam: Camera, hit: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Draw the ground-truth overlay onto `img [H, W, 3]` (a copy): the silhouette outline, or the GT
    points that are not hidden behind the rendered surface as dots (at most one per 40 pixels)."""
    img = img.copy()
    if gt.kind == "outline":
        img[outline(hit)] = OUTLINE_RGB
    elif gt.kind == "points" and gt.points is not None and len(gt.points):
        H, W = hit.shape
        c = cam.to("cpu", torch.float32)
        uv, zp = c.project(torch.from_numpy(np.asarray(gt.points, dtype=np.float32)))
        uv, zp = uv[0].numpy(), zp[0].numpy()
        col, row = np.floor(uv[:, 0]).astype(np.int64), np.floor(uv[:, 1]).astype(np.int64)
        ok = (zp > 1e-6) & (col >= 0) & (col < W) & (row >= 0) & (row < H)
        col, row, zp = col[ok], row[ok], zp[ok]
        surf = z[row, col]
        tol = 0.02 * float(np.median(zp)) if len(zp) else 0.0
        visible = ~hit[row, col] | (zp <= surf + tol)
        col, row = col[visible], row[visible]
        budget = max(200, H * W // 40)  # keep the surface visible between the dots
        if len(col) > budget:
            keep = np.random.default_rng(0).choice(len(col), budget, replace=False)
            col, row = col[keep], row[keep]
        big = H * W >= 256 * 256  # 2x2-pixel dots on large images, single pixels on small ones
        for dr, dc in ((0, 0), (0, 1), (1, 0), (1, 1)) if big else ((0, 0),):
            img[np.clip(row + dr, 0, H - 1), np.clip(col + dc, 0, W - 1)] = POINTS_RGB
    return img
