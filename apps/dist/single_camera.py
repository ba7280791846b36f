"""`run_single_camera`: DIST's camera optimisation (`run_single_camera.py`). The shape is fixed (its
code fitted to 3D samples); the camera pose (quaternion + translation by default, as DIST's 7-vector;
or 6D / axis-angle) starts from the true pose rotated by a given angle about a random axis and moved
by Gaussian noise, and is fitted to the view's depth + normal + silhouette. Reported over a sweep of
initial rotation errors: rotation error (degrees), translation and camera-centre errors before and
after, and the success rate (final rotation error < `camera.success_deg`)."""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from taichi_sdf.cameras.camera import Camera
from taichi_sdf.cameras.pose import (
    CameraPose,
    axis_angle_to_matrix,
    camera_center_error,
    rotation_error_deg,
    translation_error,
)
from taichi_sdf.train import losses

from .common import depth_row, normal_row, view_losses, write_comparison
from .config import DISTConfig
from .data import Observations
from .render import render_sdf


def perturbed_pose(T: torch.Tensor, angle_deg: float, t_noise: float, gen: torch.Generator) -> torch.Tensor:
    """`T_cam_world [4, 4]` rotated by `angle_deg` about a random axis (about the camera centre's
    frame: R' = dR R) and with N(0, t_noise^2) added to the translation."""
    axis = torch.randn(3, generator=gen, dtype=torch.float64)
    axis = axis / axis.norm()
    dR = axis_angle_to_matrix(axis * math.radians(angle_deg)).to(T)
    out = T.clone()
    out[:3, :3] = dR @ T[:3, :3]
    out[:3, 3] = T[:3, 3] + t_noise * torch.randn(3, generator=gen, dtype=torch.float64).to(T)
    return out


def errors(T: torch.Tensor, T_gt: torch.Tensor) -> dict[str, float]:
    return {"rotation_deg": float(rotation_error_deg(T[:3, :3], T_gt[:3, :3])),
            "translation": float(translation_error(T[:3, 3], T_gt[:3, 3])),
            "center": float(camera_center_error(T, T_gt))}  # fmt: skip


def fit_camera(
    decoder, code: torch.Tensor, obs: Observations, T0: torch.Tensor, cfg: DISTConfig
) -> tuple[torch.Tensor, list[dict]]:
    """Fit view 0's pose from `T0 [4, 4]` with the shape `code` fixed; returns (T [4, 4], loss rows)."""
    cc = cfg.camera
    w = losses.DISTLossWeights(
        depth=cc.depth_weight, normal=cc.normal_weight, mask_gt=cc.mask_gt_weight, mask_out=cc.mask_out_weight
    )
    pose = CameraPose(T0[None].double(), cc.rotation)
    opt = torch.optim.Adam(pose.parameters(), lr=cc.lr)
    K = obs.cameras.K[0]
    H, W = obs.cameras.height, obs.cameras.width
    fn = decoder.field(code.detach())
    history = []
    for it in range(cc.iterations):
        T = pose()[0].to(K.dtype)
        # Camera.image_rays (Taichi autodiff) and the depth axis carry the gradient to the pose
        img = render_sdf(fn, Camera(K[None], T[None], W, H), cfg.render)
        terms = view_losses(img, obs, w, cfg.render.eps, ("depth", "normal", "silhouette"), R=T[:3, :3])
        loss = sum(terms.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history.append({"iteration": it + 1, "loss": float(loss.detach()), **{k: float(v.detach()) for k, v in terms.items()}})
    with torch.no_grad():
        T = pose()[0].to(K.dtype)
    return T, history


def run_shape(model, shape, obs: Observations, cfg: DISTConfig, fitted: torch.Tensor, index: int, images_dir) -> dict:
    cc = cfg.camera
    T_gt = obs.cameras.T_cam_world[0]
    trials = []
    t0 = time.time()
    for angle in cc.initial_errors_deg:
        for k in range(cc.trials):
            gen = torch.Generator().manual_seed(cfg.seed * 100003 + index * 1009 + k * 101 + int(angle * 10))
            T0 = perturbed_pose(T_gt, angle, cc.translation_noise, gen)
            ts = time.time()
            T, history = fit_camera(model.decoder, fitted, obs, T0, cfg)
            before, after = errors(T0, T_gt), errors(T, T_gt)
            trials.append({"initial_deg": angle, "trial": k, "before": before, "after": after,
                           "success": after["rotation_deg"] < cc.success_deg, "seconds": time.time() - ts,
                           "final_loss": history[-1]["loss"] if history else None})  # fmt: skip
            if k == 0:
                _picture(model.decoder, fitted, obs, T0, T, cfg, images_dir / f"{shape.name}_{int(angle)}deg.png")
    return {"shape": shape.name, "status": "ok", "seconds": time.time() - t0, "trials": trials}


def _picture(decoder, code, obs, T0, T, cfg, path) -> None:
    K, H, W = obs.cameras.K[0], obs.cameras.height, obs.cameras.width
    depths, normals = [(obs.depth_clean[0], obs.mask[0])], [(obs.normal[0], obs.mask[0])]
    with torch.no_grad():
        for Ti in (T0, T):
            img = render_sdf(decoder.field(code), Camera(K[None], Ti[None], W, H), cfg.render, normals=False)
            depths.append((img.depth, img.mask))
            normals.append((img.normal, img.mask))
    write_comparison(path, [depth_row(depths), normal_row(normals)])


def summarize_camera(rows: list[dict]) -> dict:
    """Per initial error: success rate and median / mean errors before and after."""
    trials = [t for r in rows for t in r.get("trials", [])]
    out = {}
    for angle in sorted({t["initial_deg"] for t in trials}):
        ts = [t for t in trials if t["initial_deg"] == angle]
        stat = {"trials": len(ts), "success_rate": float(np.mean([t["success"] for t in ts])),
                "seconds": float(np.mean([t["seconds"] for t in ts]))}  # fmt: skip
        for when in ("before", "after"):
            for key in ("rotation_deg", "translation", "center"):
                vals = np.array([t[when][key] for t in ts])
                stat[f"{when}_{key}_median"] = float(np.median(vals))
                stat[f"{when}_{key}_mean"] = float(vals.mean())
        out[f"{angle:g}"] = stat
    return out


def format_camera(summary: dict, where) -> str:
    lines = [f"dist single-camera: {where}",
             f"{'init deg':>9}{'trials':>7}{'success':>9}{'rot before':>12}{'rot after':>11}{'ctr before':>12}{'ctr after':>11}   (medians)"]  # fmt: skip
    for angle, s in summary.items():
        lines.append(f"{angle:>9}{s['trials']:>7}{s['success_rate']:>9.2f}{s['before_rotation_deg_median']:>12.2f}"
                     f"{s['after_rotation_deg_median']:>11.2f}{s['before_center_median']:>12.3f}{s['after_center_median']:>11.3f}")  # fmt: skip
    return "\n".join(lines)
