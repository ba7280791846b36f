"""Render a built-in scene with the fused sphere tracer, mesh it and score the mesh.

    python -m apps.demo [--config configs/demo/default.yaml] [key=value ...] [--headless]
    e.g. python -m apps.demo scene=blobs views=24 size=512 out=outputs/blobs

Writes `views/NNN_{normal,depth,lambert}.png`, `turntable.gif`, `mesh.ply`, `metrics.json` and
`config.yaml` to `--out`. Needs no data: the scenes are analytic SDFs from `taichi_sdf.implicit.scenes`.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

import taichi_sdf
from taichi_sdf import viz as shading
from taichi_sdf.cameras import camera as cameras
from taichi_sdf.core.errors import app_main
from taichi_sdf.data.image_io import to_uint8, write_image
from taichi_sdf.geometry.meshing import extract_mesh, save_mesh
from taichi_sdf.implicit.scenes import SCENES, make_scene
from taichi_sdf.implicit.sphere_trace import sphere_trace
from taichi_sdf.train.checkpoint import atomic_write_bytes
from taichi_sdf.train.config import check, config_to_dict, parse_config
from taichi_sdf.train.trainer import Trainer, exit_on_user_error


@dataclass
class DemoConfig:
    scene: str = "csg"  # a scene of taichi_sdf.implicit.scenes
    views: int = 8  # turntable frames
    size: int = 256  # image width = height
    elevation_deg: float = 25.0
    camera_distance: float = 2.75
    mesh_resolution: int = 128
    arch: Literal["auto", "cpu", "cuda", "vulkan", "metal", "opengl"] = "auto"  # Taichi backend
    out: str = "outputs/demo"

    def __post_init__(self) -> None:
        check(self.scene in SCENES, "scene", f"one of {sorted(SCENES)}", self.scene)
        for key, least in (("views", 1), ("size", 1), ("mesh_resolution", 2)):
            check(getattr(self, key) >= least, key, f">= {least}", getattr(self, key))
        check(self.camera_distance > 0, "camera_distance", "> 0", self.camera_distance)
        check(self.out.strip() != "", "out", "an output folder (an empty one would write into the current folder)", self.out)


class Example(Trainer):
    """Renders `cfg.scene` from a turntable of cameras (Warp-style example: construct, step, render) on
    the trainer base: one iteration renders one view, with a progress bar, log.csv and the run lock.
    Its outputs are re-rendered deterministically, so a rerun into the same folder replaces them."""

    name = "demo"
    unit = "view"
    checkpoints = False
    outputs = ()  # nothing to refuse or clear: every file is rewritten
    log_every = 1

    def __init__(self, cfg: DemoConfig) -> None:
        self.info = taichi_sdf.init(cfg.arch)
        taichi_sdf.core.runtime.set_torch_threads(0)
        super().__init__(cfg, cfg.out)
        self.field = make_scene(cfg.scene)
        self.cams = cameras.orbit_cameras(
            cfg.views, cfg.camera_distance, cfg.elevation_deg, cfg.size, cfg.size
        ).to(self.info.device, torch.float32)
        self.frames: list[np.ndarray] = []
        self.rays_traced = 0
        self.trace_seconds = 0.0
        self.samples_per_step = cfg.size * cfg.size

    @property
    def total_iterations(self) -> int:
        return len(self.cams)

    def render(self, i: int) -> dict[str, torch.Tensor]:
        cam = self.cams[i]
        o, d = cam.image_rays()
        H = W = self.cfg.size
        t0 = time.perf_counter()
        with torch.no_grad():
            r = sphere_trace(self.field, o.reshape(H, W, 3), d.reshape(H, W, 3))  # an image of rays: [H, W] outputs
        taichi_sdf.sync()
        self.trace_seconds += time.perf_counter() - t0
        self.rays_traced += H * W
        z = r.t * (d[0] * cam.T_cam_world[0, 2, :3]).sum(-1)
        return {
            "normal": shading.normal_map(r.normals, r.hit),
            "depth": shading.depth_map(z, r.hit),
            "lambert": shading.phong(r.normals, d[0], r.hit, albedo=(0.85, 0.55, 0.3)),
        }

    def train_step(self) -> dict[str, float]:
        i = self.iteration
        t0 = time.perf_counter()
        images = self.render(i)
        for kind, img in images.items():
            write_image(self.out / "views" / f"{i:03d}_{kind}.png", img)
        self.frames.append(to_uint8(images["lambert"]))
        return {"seconds": time.perf_counter() - t0}

    def postfix(self, row: dict) -> dict:
        return {"rays": self.throughput()}

    def run(self, progress: bool = True) -> dict:
        out = Path(self.cfg.out)
        with self.locked():
            (out / "views").mkdir(parents=True, exist_ok=True)
            self.frames = []
            self.train(progress=progress)
            if self.interrupted is not None:
                raise SystemExit(128 + self.interrupted)
            import imageio.v3 as iio

            iio.imwrite(out / "turntable.gif", np.stack(self.frames), duration=120, loop=0)
            with self.phase(f"meshing at {self.cfg.mesh_resolution}^3"):
                mesh = extract_mesh(lambda x: self.field.values(x.to(self.field.params.dtype).contiguous()),
                                    resolution=self.cfg.mesh_resolution, device=self.info.device)  # fmt: skip
                save_mesh(mesh, out / "mesh.ply")
            # Score the mesh against the scene itself: the mesh's vertices should lie on the zero set.
            v = torch.as_tensor(np.asarray(mesh.vertices), dtype=torch.float32, device=self.info.device)
            residual = self.field.values(v.contiguous()).abs()
            metrics = {
                "scene": self.cfg.scene,
                "arch": self.info.arch,
                "rays_per_second": self.rays_traced / max(self.trace_seconds, 1e-9),
                "mesh_vertices": int(len(mesh.vertices)),
                "mesh_faces": int(len(mesh.faces)),
                "mesh_watertight": bool(mesh.is_watertight),
                "mesh_sdf_residual_mean": float(residual.mean()),
                "mesh_sdf_residual_max": float(residual.max()),
                "config": config_to_dict(self.cfg),
            }
            atomic_write_bytes(out / "metrics.json", json.dumps(metrics, indent=2).encode())
        return metrics


@app_main("python -m apps.demo")
def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--headless", action="store_true", help="no window (the demo never opens one)")
    cfg, _ = parse_config(DemoConfig, argv, p)
    with exit_on_user_error("demo"):
        metrics = Example(cfg).run()
    print(f"demo: outputs in {cfg.out}/ (views/, turntable.gif, mesh.ply, metrics.json, log.csv): {cfg.views} views of '{cfg.scene}' at {cfg.size}x{cfg.size}, "
          f"{metrics['rays_per_second'] / 1e6:.2f} Mrays/s on {metrics['arch']}, mesh with "
          f"{metrics['mesh_faces']} faces (mean |SDF| at vertices {metrics['mesh_sdf_residual_mean']:.1e})")  # fmt: skip
    return metrics


if __name__ == "__main__":
    main()
