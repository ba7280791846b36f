"""DIST's texture rendering (`core/sdfrenderer/renderer_rgb.py` + `demo/demo_lighting.py` of
B1ueber2y/DIST-Renderer): a colour decoder with one colour code per shape, beside the DeepSDF shape.

1. Train the colour decoder and one colour code per TRAINING shape of the DeepSDF experiment (an
   auto-decoder, like DeepSDF) on coloured surface points: the shapes' SurfaceSamples in the
   normalised frame, coloured by `data.albedo` (the procedural colours the observations are made with).
2. Per held-out shape: sphere trace its code fitted to 3D samples (fixed: only the colour is fitted,
   so each view is traced once), colour the hits with the decoder, shade them with the Lambert light
   the observations were rendered with (`render_mesh`'s default `DirectionalLight()`), and fit the
   colour code from the mean training colour code by Adam on L1 against the observed RGB on the
   overlap of the rendered and observed masks. PSNR on the views not used for fitting, before (mean
   code) and after; "oracle" colours the same hits with the exact albedo (what a perfect colour
   decoder would reach on this geometry).
3. A lighting demo: the textured implicit surface under Lambert | Phong with a directional light
   circling it (`demo_lighting.py`: 180 positions at elevation 25 deg around a fixed camera), as PNG
   frames + a GIF (+ an MP4 when imageio has an ffmpeg plugin), and GT | initial | fitted images of
   the evaluation views.

Outputs in `out/`: color_decoder.pt, shapes/<name>.json (a rerun resumes), images/, metrics.json.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from apps.deepsdf.data import load_split_instances
from apps.deepsdf.reconstruct import split_file
from taichi_sdf.cameras.camera import Camera, intrinsics
from taichi_sdf.data.deepsdf import load_normalization, load_surface_samples, normalize
from taichi_sdf.data.image_io import write_image
from taichi_sdf.mesh.shading import DirectionalLight, Material, lambert, phong
from taichi_sdf.models.deepsdf import LatentCodes
from taichi_sdf.models.texture import ColorDecoder, build_color_decoder
from taichi_sdf.train.checkpoint import atomic_write_bytes, load_checkpoint, save_checkpoint
from taichi_sdf.train.config import config_to_dict

from .common import code_cache
from .config import TextureConfig
from .data import Observations, albedo, load_observations
from .render import render_sdf
from .shapes import HeldOutShape, ShapeModel, fitted_code

OBSERVATION_LIGHT = DirectionalLight()  # render_mesh's default light: the one the observations are shaded with


def texture_config(cfg) -> TextureConfig:
    """The `texture` section of a DISTConfig."""
    return cfg.texture


# ------------------------------------------------------------------------------ colour model


@dataclass
class ColorModel:
    """The trained colour decoder (parameters frozen) and the training shapes' colour codes."""

    decoder: ColorDecoder
    codes: torch.Tensor  # [S, L] one colour code per training shape
    shape_codes: torch.Tensor  # [S, Ls] the DeepSDF codes of the same shapes (fed when the decoder takes them)

    @property
    def mean_code(self) -> torch.Tensor:
        """`[L]` the mean training colour code (the initial code of a held-out shape)."""
        return self.codes.mean(0)

    def colors(self, code: torch.Tensor, points: torch.Tensor, shape_code: torch.Tensor) -> torch.Tensor:
        """Albedo `[N, 3]` at `points [N, 3]` for one colour `code [L]` of the shape `shape_code [Ls]`."""
        return self.decoder(code, points, shape_code if self.decoder.shape_latent_size else None)


def shaded_colors(cm: ColorModel, code, points, normals, shape_code, light: DirectionalLight = OBSERVATION_LIGHT):
    """Lambert-shaded RGB `[N, 3]` of surface `points [N, 3]` with unit `normals [N, 3]`: the colour
    decoder's albedo under `light` (default: the observations' light)."""
    return lambert(cm.colors(code, points, shape_code)[None], normals[None], light)[0]


def training_points(model: ShapeModel, max_points: int, seed: int) -> tuple[list[str], list[np.ndarray]]:
    """The training shapes' names and surface samples `[P_i, 3]` in the normalised frame (at most
    `max_points` each, drawn without replacement), in the order of `model.train_codes`."""
    root = Path(model.cfg.data.root)
    instances = load_split_instances(root, split_file(model.cfg, "train"))
    if len(instances) != model.train_codes.shape[0]:
        raise ValueError(f"{model.experiment}: the train split lists {len(instances)} shapes but the checkpoint "
                         f"has {model.train_codes.shape[0]} codes; the data changed since training")  # fmt: skip
    rng = np.random.default_rng(seed)
    points = []
    for it in instances:
        path = it.surface_samples(root)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: the training shape's SurfaceSamples are needed to train the colour decoder")
        offset, scale = load_normalization(it.normalization(root))
        p = normalize(load_surface_samples(path), offset, scale)
        if len(p) > max_points:
            p = p[rng.choice(len(p), max_points, replace=False)]
        points.append(p.astype(np.float32))
    return [it.instance for it in instances], points


def train_color_model(model: ShapeModel, tc: TextureConfig, seed: int = 0, progress: bool = False) -> tuple[ColorModel, dict]:
    """Train the colour decoder and the training shapes' colour codes (auto-decoder): L1 between the
    decoded and the procedural colours of random surface points + `code_reg` * mean(code^2)."""
    from tqdm import tqdm

    names, pts = training_points(model, tc.max_surface_points, seed)
    counts = torch.tensor([len(p) for p in pts])
    starts = torch.cumsum(counts, 0) - counts
    points = torch.from_numpy(np.concatenate(pts))  # [P, 3]
    colors = torch.from_numpy(
        np.concatenate([albedo(p.astype(np.float64), n) for n, p in zip(names, pts)]).astype(np.float32)
    )  # [P, 3]
    S = len(names)
    torch.manual_seed(seed)  # the decoder's initial weights
    decoder = build_color_decoder(tc.decoder, model.latent_size)
    codes = LatentCodes(S, tc.decoder.latent_size, code_bound=None, init_std=tc.code_init_std)
    shape_codes = model.train_codes.detach().float().cpu()
    opt = torch.optim.Adam([{"params": decoder.parameters(), "lr": tc.lr}, {"params": codes.parameters(), "lr": tc.code_lr}])
    gen = torch.Generator().manual_seed(seed)
    per_batch = min(tc.shapes_per_batch, S)
    t0, history = time.perf_counter(), []
    for it in tqdm(range(tc.iterations), desc="dist colour decoder", disable=not progress, dynamic_ncols=True):
        shapes = torch.randperm(S, generator=gen)[:per_batch]  # [B]
        pick = starts[shapes, None] + (torch.rand(per_batch, tc.points_per_shape, generator=gen) * counts[shapes, None]).long()
        idx = shapes[:, None].expand_as(pick).reshape(-1)
        code = codes(idx)
        shape_code = shape_codes[idx] if decoder.shape_latent_size else None
        pred = decoder(code, points[pick.reshape(-1)], shape_code)
        l1 = (pred - colors[pick.reshape(-1)]).abs().mean()
        loss = l1 + tc.code_reg * code.square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (it + 1) % 100 == 0 or it + 1 == tc.iterations:
            history.append({"iteration": it + 1, "l1": float(l1.detach())})
    decoder.eval()
    for p in decoder.parameters():
        p.requires_grad_(False)
    cm = ColorModel(decoder, codes.weight.detach().clone(), shape_codes)
    with torch.no_grad():  # each training shape's colour error with its own code, over all its kept points
        errs = [float((cm.colors(cm.codes[i], points[starts[i] : starts[i] + counts[i]], shape_codes[i])
                       - colors[starts[i] : starts[i] + counts[i]]).abs().mean()) for i in range(S)]  # fmt: skip
    stats = {"shapes": S, "points": int(counts.sum()), "iterations": tc.iterations, "seconds": time.perf_counter() - t0,
             "train_l1": float(np.mean(errs)) if errs else None, "history": history}  # fmt: skip
    return cm, stats


def _settings(tc: TextureConfig, model: ShapeModel, seed: int) -> dict:
    return json.loads(json.dumps({"texture": config_to_dict(tc), "experiment": str(model.experiment),
                                  "epoch": model.epoch, "seed": seed}, default=str))  # fmt: skip


def load_or_train_color_model(
    model: ShapeModel, tc: TextureConfig, out: Path, seed: int, progress: bool
) -> tuple[ColorModel, dict]:
    """The colour model of `out/color_decoder.pt` when it was trained with these settings, else a new
    one (saved there). A file made with other settings is refused."""
    path = out / "color_decoder.pt"
    settings = _settings(tc, model, seed)
    if path.is_file():
        state = load_checkpoint(path)
        if state["settings"] != settings:
            raise ValueError(f"{path}: trained with other settings; delete the folder or write the run elsewhere")
        decoder = build_color_decoder(tc.decoder, model.latent_size)
        decoder.load_state_dict(state["decoder"])
        decoder.eval().requires_grad_(False)
        return ColorModel(decoder, state["codes"], state["shape_codes"]), json.loads(state["stats"])
    cm, stats = train_color_model(model, tc, seed, progress)
    save_checkpoint(path, {"settings": settings, "decoder": cm.decoder.state_dict(), "codes": cm.codes,
                           "shape_codes": cm.shape_codes, "stats": json.dumps(stats)})  # fmt: skip
    return cm, stats


# ------------------------------------------------------------------------------ held-out shapes


class TracedView(NamedTuple):
    """The fixed geometry of one view: the hits of the sphere-traced shape."""

    mask: torch.Tensor  # [H, W] bool, rays that hit
    points: torch.Tensor  # [M, 3] world hit points (M = mask.sum())
    normals: torch.Tensor  # [M, 3] unit normals
    view_dirs: torch.Tensor  # [M, 3] unit directions from the hits towards the camera


def trace_view(shape_decoder, shape_code: torch.Tensor, camera: Camera, rc) -> TracedView:
    """Sphere trace the shape `shape_code` seen by one `camera` (DIST's marcher, no gradient)."""
    with torch.no_grad():
        img = render_sdf(shape_decoder.field(shape_code), camera, rc, normals=False)
        _, d = camera.image_rays()
    m = img.mask
    return TracedView(m, img.points[m].detach(), img.normal[m].detach(), -d[0][m].to(img.points.dtype))


def compose(rgb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`[H, W, 3]` image of the hit colours `rgb [M, 3]` on a black background (as the observations)."""
    img = torch.zeros(*mask.shape, 3, dtype=rgb.dtype, device=rgb.device)
    img[mask] = rgb
    return img


def overlap_l1(rgb: torch.Tensor, tv: TracedView, obs_rgb: torch.Tensor, obs_mask: torch.Tensor) -> torch.Tensor:
    """Mean L1 between the hit colours `rgb [M, 3]` and `obs_rgb [H, W, 3]` on the pixels both the
    render (`tv.mask`) and the observation (`obs_mask [H, W]`) cover (0 when none)."""
    both = obs_mask[tv.mask]  # [M] the hits the observation covers too
    if not both.any():
        return rgb.sum() * 0.0
    return (rgb[both] - obs_rgb[tv.mask][both]).abs().mean()


def psnr(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """PSNR in dB of images in [0, 1] (`mask [H, W]`: only those pixels)."""
    err = (pred.clamp(0, 1) - target) ** 2
    mse = float(err[mask].mean() if mask is not None else err.mean())
    return float("inf") if mse == 0 else -10.0 * math.log10(mse)


def fit_color_code(cm: ColorModel, shape_code, views: list[TracedView], obs: Observations, indices: list[int],
                   tc: TextureConfig, code0: torch.Tensor) -> tuple[torch.Tensor, list[dict]]:  # fmt: skip
    """Fit a colour code `[L]` from `code0` to the observed RGB of the views `indices` (the traced
    `views`, same order): Adam on the mean overlap L1 + `fit_code_reg` * mean(code^2)."""
    code = code0.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([code], lr=tc.fit_lr)
    history = []
    for it in range(tc.fit_iterations):
        l1 = sum(overlap_l1(shaded_colors(cm, code, tv.points, tv.normals, shape_code), tv, obs.rgb[v], obs.mask[v])
                 for tv, v in zip(views, indices)) / len(indices)  # fmt: skip
        loss = l1 + tc.fit_code_reg * code.square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history.append({"iteration": it + 1, "l1": float(l1.detach())})
    return code.detach(), history


def _scores(
    cm: ColorModel, code, shape_code, views: list[TracedView], obs: Observations, indices: list[int], key: str = ""
) -> dict:
    """Mean PSNR over the views `indices`: on the overlap of the masks (colour) and on the whole image."""
    on, whole, l1 = [], [], []
    with torch.no_grad():
        for tv, v in zip(views, indices):
            rgb = shaded_colors(cm, code, tv.points, tv.normals, shape_code) if code is not None else _oracle(tv, key)
            both = tv.mask & obs.mask[v]
            on.append(psnr(compose(rgb, tv.mask), obs.rgb[v], both))
            whole.append(psnr(compose(rgb, tv.mask), obs.rgb[v]))
            l1.append(float(overlap_l1(rgb, tv, obs.rgb[v], obs.mask[v])))
    return {"psnr": float(np.mean(on)), "psnr_image": float(np.mean(whole)), "l1": float(np.mean(l1))}


def _oracle(tv: TracedView, key: str) -> torch.Tensor:
    """The exact procedural albedo of shape `key` at the hits, shaded: a perfect colour decoder on this geometry."""
    a = torch.from_numpy(albedo(tv.points.double().numpy(), key)).to(tv.points.dtype)
    return lambert(a[None], tv.normals[None], OBSERVATION_LIGHT)[0]


# ------------------------------------------------------------------------------ pictures


def comparison_rows(cm: ColorModel, codes: list[torch.Tensor], shape_code, views: list[TracedView], obs: Observations,
                    indices: list[int]) -> np.ndarray:  # fmt: skip
    """One row per view: GT | each code's render."""
    rows = []
    with torch.no_grad():
        for tv, v in zip(views, indices):
            row = [obs.rgb[v]] + [compose(shaded_colors(cm, c, tv.points, tv.normals, shape_code), tv.mask) for c in codes]
            rows.append(torch.cat([r.clamp(0, 1) for r in row], 1).numpy())
    return np.concatenate(rows, 0)


def light_turntable(frames: int, elevation_deg: float) -> list[DirectionalLight]:
    """`frames` directional lights circling the origin at `elevation_deg`, each shining at the origin
    (DIST's point lights at distance 2 become directions); colour and ambient of the observations' light."""
    el = math.radians(elevation_deg)
    lights = []
    for k in range(frames):
        az = 2 * math.pi * k / frames
        pos = (math.cos(el) * math.sin(az), math.sin(el), math.cos(el) * math.cos(az))
        lights.append(dataclasses.replace(OBSERVATION_LIGHT, direction=tuple(-x for x in pos)))
    return lights


def lighting_demo(cm: ColorModel, code, shape_code, shape_decoder, camera: Camera, rc, tc: TextureConfig, folder: Path,
                  name: str) -> dict:  # fmt: skip
    """Lambert | Phong frames of the textured surface seen by `camera` under a circling light:
    `folder/<name>_lighting/frame_<k>.png`, `<name>_lighting.gif` (+ .mp4 with an ffmpeg plugin)."""
    import imageio.v3 as iio

    K = intrinsics(tc.demo_size, tc.demo_size, _fov_deg(camera), 1).to(camera.K)
    cam = Camera(K, camera.T_cam_world[:1], tc.demo_size, tc.demo_size)
    tv = trace_view(shape_decoder, shape_code, cam, rc)
    with torch.no_grad():
        a = cm.colors(code, tv.points, shape_code)[None]
        frames = []
        for light in light_turntable(tc.demo_frames, tc.demo_elevation_deg):
            diffuse = lambert(a, tv.normals[None], light)[0]
            shiny = phong(a, tv.normals[None], tv.view_dirs[None], light, Material())[0]
            img = torch.cat([compose(diffuse, tv.mask), compose(shiny, tv.mask)], 1).clamp(0, 1)
            frames.append((img.numpy() * 255 + 0.5).astype(np.uint8))
    sub = folder / f"{name}_lighting"
    for k, f in enumerate(frames):
        write_image(sub / f"frame_{k:03d}.png", f)
    out = {"frames": len(frames), "folder": str(sub), "gif": None, "mp4": None}
    if frames:
        gif = folder / f"{name}_lighting.gif"
        iio.imwrite(gif, np.stack(frames), extension=".gif", duration=80, loop=0)
        out["gif"] = str(gif)
        if importlib.util.find_spec("imageio_ffmpeg") or importlib.util.find_spec("av"):
            mp4 = folder / f"{name}_lighting.mp4"
            iio.imwrite(mp4, np.stack(frames), extension=".mp4", fps=12)
            out["mp4"] = str(mp4)
    return out


def _fov_deg(camera: Camera) -> float:
    return math.degrees(2 * math.atan(0.5 * camera.width / float(camera.K[0, 0, 0])))


# ------------------------------------------------------------------------------ the run


def run_shape(cm: ColorModel, model: ShapeModel, shape: HeldOutShape, obs: Observations, shape_code: torch.Tensor, cfg,
              tc: TextureConfig, images: Path) -> dict:  # fmt: skip
    """Fit one held-out shape's colour code and score it on its other views; pictures into `images`."""
    V = len(obs)
    if V < 2:
        raise ValueError(f"views.views: texture fitting needs >= 2 views (fit + evaluation), got {V}")
    fit = list(range(min(tc.fit_views, V - 1)))
    held = list(range(len(fit), V))
    shape_code = shape_code.detach().float()
    t0 = time.perf_counter()
    traced = [trace_view(model.decoder, shape_code, obs.cameras[v], cfg.render) for v in range(V)]
    trace_seconds = time.perf_counter() - t0
    code0 = cm.mean_code
    code, history = fit_color_code(cm, shape_code, [traced[v] for v in fit], obs, fit, tc, code0)
    seconds = time.perf_counter() - t0
    ev = [traced[v] for v in held]
    row = {"shape": shape.name, "fit_views": fit, "eval_views": held, "seconds": seconds, "trace_seconds": trace_seconds,
           "fit_l1": {"initial": history[0]["l1"] if history else None, "final": history[-1]["l1"] if history else None},
           "initial": _scores(cm, code0, shape_code, ev, obs, held), "fitted": _scores(cm, code, shape_code, ev, obs, held),
           "oracle_albedo": _scores(cm, None, shape_code, ev, obs, held, shape.name)}  # fmt: skip
    write_image(images / f"{shape.name}_views.png", comparison_rows(cm, [code0, code], shape_code, ev, obs, held))
    if tc.demo_frames:
        row["lighting"] = lighting_demo(cm, code, shape_code, model.decoder, obs.cameras[0], cfg.render, tc, images, shape.name)
    return row


def summarize_texture(rows: list[dict]) -> dict:
    out: dict = {"shapes": len(rows)}
    for key in ("initial", "fitted", "oracle_albedo"):
        out[key] = {m: float(np.mean([r[key][m] for r in rows])) for m in ("psnr", "psnr_image", "l1")} if rows else None
    out["seconds"] = float(np.mean([r["seconds"] for r in rows])) if rows else None
    return out


def run_texture(cfg, model: ShapeModel, shapes: list[HeldOutShape], paths: list[Path], out: Path, progress: bool) -> dict:
    """DIST's texture rendering on the held-out `shapes` (observations `paths`) of `model`, written
    into the run folder `out`; returns the summary (also in `out/metrics.json`)."""
    from tqdm import tqdm

    tc = texture_config(cfg)
    out = Path(out)
    (out / "shapes").mkdir(parents=True, exist_ok=True)
    images = out / "images"
    cm, train_stats = load_or_train_color_model(model, tc, out, cfg.seed, progress)
    cache = code_cache(cfg, model)
    rows = []
    for i, (shape, path) in enumerate(tqdm(list(zip(shapes, paths)), desc="dist texture", unit="shape",
                                           disable=not progress, dynamic_ncols=True)):  # fmt: skip
        done = out / "shapes" / f"{shape.name}.json"
        if done.is_file():
            rows.append(json.loads(done.read_text()))
            continue
        shape_code = fitted_code(model, shape, cache, seed=cfg.seed * 1000 + i)
        row = run_shape(cm, model, shape, load_observations(path), shape_code, cfg, tc, images)
        atomic_write_bytes(done, json.dumps(row, indent=1).encode())
        rows.append(row)
    summary = summarize_texture(rows)
    metrics = {"summary": summary, "color_decoder": train_stats, "shapes": rows}
    atomic_write_bytes(out / "metrics.json", json.dumps(metrics, indent=1).encode())
    return summary
