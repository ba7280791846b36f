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
    code0 = initial_code(mc.init, mc.init_std, model.latent_size, None, model.mean_code, seed)
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


def run_dataset(cfg: DISTConfig, model, out) -> dict:
    """Fit one code (and, with `multi.similarity`, a Sim(3) from the identity) to the training views of a
    dataset folder the project reads (`multi.data`: IDR/DTU, NeRF, DVR; its normalised frame, the object
    in the unit sphere, is taken as the shape frame); write the mesh in the dataset's units, a picture and
    metrics (Chamfer-L1 / F-score against the folder's `gt_points.npy` when it has one; mask IoU of the
    held-out views)."""
    import json
    from pathlib import Path

    import numpy as np

    from taichi_sdf.data.multiview.source import MultiViewDataConfig, default_ground_truth, load_multiview
    from taichi_sdf.geometry.fast_mesh import fast_extract
    from taichi_sdf.train.checkpoint import atomic_write_bytes
    from taichi_sdf.train.metrics import chamfer_distance, fscore, mask_iou, sample_surface

    mc = cfg.multi
    d = MultiViewDataConfig(data=mc.data)
    ds = load_multiview(d)
    if ds.cameras.width % 4 or ds.cameras.height % 4:
        raise ValueError(
            f"multi.data: {mc.data}: images of {ds.cameras.width}x{ds.cameras.height} px; DIST's pyramid needs multiples of 4"
        )
    train = ds.splits["train"]
    train = [train[int(i)] for i in np.linspace(0, len(train) - 1, min(mc.max_views, len(train)))]
    cams = ds.cameras.to(dtype=torch.float32)
    zeros = torch.zeros_like(ds.masks[train], dtype=torch.float32)
    obs = Observations(
        cams[train], ds.images[train].float(), ds.masks[train], zeros, zeros, torch.zeros(*ds.masks[train].shape, 3)
    )
    seed = cfg.seed
    gen = torch.Generator().manual_seed(seed)
    code0 = initial_code(mc.init, mc.init_std, model.latent_size, None, model.mean_code, seed)
    sim = Sim3(torch.eye(4), dtype=torch.float32) if mc.similarity else None
    t0 = time.time()
    code, history = fit_multi_view(model.decoder, obs, cfg, code0, sim, obs.cameras if sim is not None else None, gen)
    row: dict = {"data": str(mc.data), "views": train, "seconds": time.time() - t0, "steps": len(history),
                 "final_loss": history[-1] if history else None}  # fmt: skip
    out = Path(out)
    try:
        mesh, _ = fast_extract(
            model.decoder.field(code), resolution=cfg.eval.resolution, coarse_resolution=cfg.eval.resolution // 2
        )
    except ValueError as e:
        row["status"] = f"no surface ({e})"
        atomic_write_bytes(out / "metrics.json", json.dumps(row, indent=1).encode())
        return row
    if sim is not None:  # canonical -> the dataset's normalised frame
        with torch.no_grad():
            mesh.vertices = sim.from_canonical(torch.as_tensor(mesh.vertices, dtype=torch.float32)).double().numpy()
    gt_path, _ = default_ground_truth(d)
    if gt_path and Path(gt_path).is_file():
        gt = np.load(gt_path)[:, :3]
        S = ds.scale_mat.double().numpy()
        gt_n = (gt - S[:3, 3]) @ np.linalg.inv(S[:3, :3]).T
        pts, _ = sample_surface(mesh, cfg.eval.points, seed=seed)
        row["chamfer_l1"] = chamfer_distance(pts, gt_n)["chamfer_l1"]
        row["fscore"] = fscore(pts, gt_n, (cfg.eval.fscore_threshold,))[cfg.eval.fscore_threshold][2]
    test = ds.splits.get("test", [])
    ious = []
    with torch.no_grad():
        for i in test:
            c = cams[i]
            if sim is not None:
                c = sim.cameras_in_canonical(c)
            img = render_sdf(model.decoder.field(code), c, cfg.render, normals=False)
            ious.append(mask_iou(img.mask, ds.masks[i]))
    row["test_mask_iou"] = float(np.mean(ious)) if ious else None
    row["status"] = "ok"
    world = mesh.copy()
    world.apply_transform(ds.scale_mat.double().numpy())
    world.export(out / "mesh.ply")
    atomic_write_bytes(out / "metrics.json", json.dumps(row, indent=1).encode())
    return row
