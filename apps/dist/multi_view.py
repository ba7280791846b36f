"""Multi-view reconstruction (`run_multi_pmodata.py`): a shape code from RGB views through DIST's
photometric warp loss between view pairs (render depth in view i, back-project, sample view j's
colour, L1 on pixels both views see with consistent depth), DIST's silhouette hinges and the latent
L2, from a random code N(0, 0.1^2). `multi.similarity=true` is the "real data" mode
(`run_multi_realdata.py`): the cameras live in a world related to the shape's frame by an unknown
similarity, and a Sim(3) is fitted jointly from a rough initialisation."""

from __future__ import annotations

import math
import time

import torch

from taichi_sdf.cameras.camera import Camera
from taichi_sdf.cameras.pose import axis_angle_to_matrix, rotation_error_deg
from taichi_sdf.cameras.sim3 import Sim3, decompose_similarity, similarity_matrix
from taichi_sdf.train import losses
from taichi_sdf.train.photometric import photometric_warp_loss

from .common import depth_row, initial_code, normal_row, write_comparison
from .config import DISTConfig
from .data import Observations
from .evaluate import shape_metrics
from .render import render_sdf


def random_similarity(gen: torch.Generator, angle_deg: float = 35.0) -> torch.Tensor:
    """A canonical -> world similarity `[4, 4]`: scale in [1.5, 2.5], a rotation of `angle_deg` about
    a random axis, a translation in [-1, 1]^3 (the "world" of the simulated real-data mode)."""
    axis = torch.randn(3, generator=gen, dtype=torch.float64)
    R = axis_angle_to_matrix(axis / axis.norm() * math.radians(angle_deg))
    s = 1.5 + torch.rand((), generator=gen, dtype=torch.float64)
    t = 2 * torch.rand(3, generator=gen, dtype=torch.float64) - 1
    return similarity_matrix(s.log(), R, t)


def perturb_similarity(M: torch.Tensor, noise: float, gen: torch.Generator) -> torch.Tensor:
    """`M` with its rotation turned by `noise` rad about a random axis, its translation moved by `noise`
    (times the scale) and its log-scale by `noise / 2`: a rough initial estimate."""
    s, R, t = decompose_similarity(M)
    axis = torch.randn(3, generator=gen, dtype=torch.float64)
    dR = axis_angle_to_matrix(axis / axis.norm() * noise)
    dt = torch.randn(3, generator=gen, dtype=torch.float64)
    return similarity_matrix(s.log() + noise / 2, dR @ R, t + noise * s * dt / dt.norm())


def world_cameras(cams: Camera, M: torch.Tensor) -> Camera:
    """The canonical cameras `cams` moved into the world of `M` (canonical -> world): same images."""
    s, R, t = decompose_similarity(M)
    T = cams.T_cam_world.double().clone()
    Rc, tc = T[:, :3, :3], T[:, :3, 3]
    centre_c = -(Rc.transpose(1, 2) @ tc[..., None])[..., 0]
    centre_w = s * centre_c @ R.T + t
    Rw = Rc @ R.T
    T[:, :3, :3] = Rw
    T[:, :3, 3] = -(Rw @ centre_w[..., None])[..., 0]
    return Camera(cams.K, T.to(cams.K.dtype), cams.width, cams.height)


def fit_multi_view(decoder, obs: Observations, cfg: DISTConfig, code0: torch.Tensor, sim: Sim3 | None, world: Camera | None,
                   gen: torch.Generator) -> tuple[torch.Tensor, list[dict]]:  # fmt: skip
    """Optimise the code (and `sim`) on random view pairs; returns (code, loss rows)."""
    mc = cfg.multi
    code = code0.detach().clone().requires_grad_(True)
    params = [code] + (list(sim.parameters()) if sim is not None else [])
    opt = torch.optim.Adam(params, lr=mc.lr)
    V = len(obs)
    history = []
    for epoch in range(mc.epochs):
        for _ in range(mc.pairs_per_epoch):
            i, j = torch.randperm(V, generator=gen)[:2].tolist()
            cams = sim.cameras_in_canonical(world) if sim is not None else obs.cameras
            ci, cj = cams[i], cams[j]
            fn = decoder.field(code)
            img_i = render_sdf(fn, ci, cfg.render, normals=False)
            with torch.no_grad():
                img_j = render_sdf(fn, cj, cfg.render, normals=False)
            terms = {}
            terms["warp"] = mc.warp_weight * photometric_warp_loss(
                img_i.depth, ci, obs.rgb[i], cj, obs.rgb[j], img_j.depth, mask_i=img_i.mask, mask_j=img_j.mask,
                depth_threshold=mc.depth_threshold)  # fmt: skip
            m_gt, m_out = losses.dist_mask_losses(img_i.min_sdf, img_i.mask, obs.mask[i], cfg.render.eps)
            terms["mask_gt"], terms["mask_out"] = mc.mask_gt_weight * m_gt, mc.mask_out_weight * m_out
            terms["latent"] = mc.latent_weight * losses.dist_latent_l2(code)
            loss = sum(terms.values())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            history.append({"epoch": epoch, "loss": float(loss.detach()), **{k: float(v.detach()) for k, v in terms.items()}})
    return code.detach(), history


def run_shape(model, shape, obs: Observations, cfg: DISTConfig, fitted: torch.Tensor, index: int, images_dir) -> dict:
    mc = cfg.multi
    seed = cfg.seed * 1000 + index
    gen = torch.Generator().manual_seed(seed)
    code0 = initial_code("random", mc.init_std, model.latent_size, None, model.mean_code, seed)
    sim = world = None
    row: dict = {"shape": shape.name}
    if mc.similarity:
        M_true = random_similarity(gen)
        M_init = perturb_similarity(M_true, mc.similarity_noise, gen)
        world = world_cameras(obs.cameras, M_true)
        sim = Sim3(M_init, dtype=obs.cameras.K.dtype)
        row["similarity_before"] = _sim_errors(M_init, M_true)
    t0 = time.time()
    code, history = fit_multi_view(model.decoder, obs, cfg, code0, sim, world, gen)
    row["seconds"] = time.time() - t0
    row["steps"] = len(history)
    row["final_loss"] = history[-1] if history else None
    if sim is not None:
        with torch.no_grad():
            row["similarity_after"] = _sim_errors(sim.matrix().double(), M_true)
    for key, c in (("dist", code), ("initial", code0), ("deepsdf_3d", fitted), ("mean_code", model.mean_code)):
        m = shape_metrics(model.decoder, c, shape.surface, cfg.eval, seed=index)
        m.pop("mesh", None)
        row[key] = m
    row["status"] = row["dist"]["status"]
    depths, normals = [(obs.depth_clean[0], obs.mask[0])], [(obs.normal[0], obs.mask[0])]
    with torch.no_grad():
        for c in (code0, code, fitted):
            img = render_sdf(model.decoder.field(c), obs.cameras[0], cfg.render, normals=False)
            depths.append((img.depth, img.mask))
            normals.append((img.normal, img.mask))
    write_comparison(images_dir / f"{shape.name}.png", [_rgb_row(obs), depth_row(depths), normal_row(normals)])
    return row


def _rgb_row(obs: Observations):
    import numpy as np

    rgb = obs.rgb[0].cpu().numpy()
    return np.concatenate([rgb] + [np.zeros_like(rgb)] * 3, 1)


def _sim_errors(M: torch.Tensor, M_true: torch.Tensor) -> dict[str, float]:
    s, R, t = decompose_similarity(M)
    s0, R0, t0 = decompose_similarity(M_true)
    return {"rotation_deg": float(rotation_error_deg(R, R0)), "translation": float((t - t0).norm()),
            "scale_ratio": float(s / s0)}  # fmt: skip
