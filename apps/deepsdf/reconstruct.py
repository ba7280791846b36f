"""DeepSDF shape reconstruction (`reconstruct.py` of facebookresearch/DeepSDF): for each shape of a split,
fit a latent code to its SDF samples with the trained decoder frozen, then mesh the zero level set.

    python -m apps.deepsdf reconstruct [--experiment DIR | --config PRESET] [--checkpoint latest|EPOCH]
                                       [--split test|train|PATH] [--partial] [--tag NAME] [--overwrite] [key=value ...]

Per shape: code z ~ N(0, 0.01^2), Adam lr 5e-3 for 800 iterations (lr / 10 at 400), 8000 samples per
iteration (half pos / half neg), loss = mean |clamp(f(z, x)) - clamp(sdf)| + 1e-4 * mean(z^2), clamp 0.1.
The decoder stays in eval mode (no dropout) and is never updated.

`--partial`: fit from the samples of one side of the shape only, those whose position x (normalised
frame) has x . d >= offset, d = `reconstruct.partial_direction` (normalised), offset =
`reconstruct.partial_offset` (default z >= 0; the cpu preset keeps x >= 0, one side of each chair,
as a side view would). The mesh still covers the whole shape:
the other half is completed by the learned shape prior.

Outputs, as the original's layout (a suffix `_partial` on the epoch folder for `--partial`):
    <experiment>/Reconstructions/<epoch>/Meshes/<dataset>/<class>/<instance>.ply   (mesh units:
        marching cubes over [-1, 1]^3, mapped back with the NormalizationParameters)
    <experiment>/Reconstructions/<epoch>/Codes/<dataset>/<class>/<instance>.pth    (the code [1, L])
    <experiment>/Reconstructions/<epoch>/reconstruct_log.json  (settings; per shape: loss, seconds, status)
Shapes whose mesh and code exist are skipped (resumable), unless `--overwrite`; a folder made with other
settings is refused (`--overwrite`, or `--tag NAME` for a folder `<epoch>[_partial]_NAME`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from taichi_sdf.core.errors import app_main
from taichi_sdf.core.runtime import set_torch_threads
from taichi_sdf.data.deepsdf import Instance, load_normalization, load_sdf_samples
from taichi_sdf.geometry.meshing import extract_mesh, save_mesh
from taichi_sdf.models.deepsdf import DeepSDFDecoder
from taichi_sdf.train import losses
from taichi_sdf.train.checkpoint import atomic_write_bytes, load_checkpoint, save_checkpoint
from taichi_sdf.train.config import add_config_args, config_to_dict, load_config

from .config import DeepSDFConfig, ReconstructConfig, check_config
from .data import find_split, load_split_instances, sample_pos_neg
from .train import DEFAULT_PRESET, build_decoder, resolve_device


def reconstruct_latent(
    decoder: DeepSDFDecoder,
    pos: torch.Tensor,  # [P, 4]
    neg: torch.Tensor,  # [N, 4]
    rc: ReconstructConfig,
    clamp: float = 0.1,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, float]:
    """Fit one code `[latent_size]` to the samples `pos [P, 4]`, `neg [N, 4]` (x, y, z, sdf) with the
    decoder frozen; returns (code, last loss). The decoder's parameters get no gradient and no update."""
    if pos.shape[0] + neg.shape[0] == 0:
        raise ValueError("no SDF samples to fit (pos and neg are both empty)")
    device = next(decoder.parameters()).device
    was_training = decoder.training
    decoder.eval()
    flags = [p.requires_grad for p in decoder.parameters()]
    for p in decoder.parameters():
        p.requires_grad_(False)
    z = (torch.randn(decoder.latent_size, generator=generator) * rc.init_std).to(device).requires_grad_(True)
    opt = torch.optim.Adam([z], lr=rc.lr)
    zero, one = torch.zeros(1, dtype=torch.int64), torch.ones(1, dtype=torch.int64)
    loss = torch.zeros(())
    try:
        for it in range(rc.iterations):
            opt.param_groups[0]["lr"] = rc.lr / rc.lr_decay ** (it // rc.lr_decay_every)
            s = sample_pos_neg(pos, zero, one * len(pos), neg, zero, one * len(neg), rc.samples, generator)[0].to(device)
            pred = decoder(z, s[:, :3])
            loss = losses.clamped_sdf_l1(pred, s[:, 3], clamp) + rc.code_reg * z.square().mean()  # the original: L1Loss (mean)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    finally:
        for p, f in zip(decoder.parameters(), flags):
            p.requires_grad_(f)
        decoder.train(was_training)
    return z.detach(), float(loss.detach())


def partial_samples(samples: torch.Tensor, direction, offset: float = 0.0) -> torch.Tensor:
    """The rows of `samples [N, 4]` whose position x has x . d >= offset (d = `direction` normalised)."""
    d = torch.as_tensor(direction, dtype=samples.dtype)
    d = d / d.norm()
    return samples[samples[:, :3] @ d >= offset]


def T_mesh_normalized(offset: np.ndarray, scale: float) -> np.ndarray:
    """The `[4, 4]` map normalised frame -> mesh units: x / scale - offset (DeepSDF's denormalisation)."""
    T = np.eye(4)
    T[:3, :3] /= scale
    T[:3, 3] = -np.asarray(offset, dtype=np.float64)
    return T


def load_decoder(experiment: Path, checkpoint: str, cfg: DeepSDFConfig, device: torch.device) -> tuple[DeepSDFDecoder, dict]:
    """The trained decoder of `experiment` (eval mode) and its checkpoint state; `checkpoint` is
    'latest' or an epoch number (checkpoints/<epoch>.pt)."""
    path = experiment / "checkpoints" / f"{checkpoint}.pt"
    if not path.is_file():
        have = sorted(p.stem for p in (experiment / "checkpoints").glob("*.pt"))
        raise FileNotFoundError(f"{path}: checkpoint not found (available: {', '.join(have) or 'none'}); train first")
    state = load_checkpoint(path, map_location=device)
    decoder = build_decoder(cfg.model).to(device)
    try:
        decoder.load_state_dict(state["decoder"])
    except (RuntimeError, KeyError) as e:
        raise ValueError(f"{path}: not a DeepSDF checkpoint matching the config's model ({str(e).splitlines()[0]})") from None
    return decoder.eval(), state


def experiment_config(parser: argparse.ArgumentParser, argv: list[str]) -> tuple[DeepSDFConfig, argparse.Namespace]:
    """Config of an existing experiment: `--experiment DIR` reads DIR/config.yaml (written by training);
    else `--config PRESET`; with neither, `<out>/config.yaml` of the cpu preset's (or the overridden)
    `out` when that experiment exists, else the cpu preset. `key=value` overrides come last."""
    parser.add_argument("--experiment", metavar="DIR", default=None, help="experiment folder (its config.yaml is used)")
    add_config_args(parser)
    args = parser.parse_intermixed_args(argv)  # options may sit between key=value overrides
    try:
        if args.experiment is not None:
            path = Path(args.experiment) / "config.yaml"
            if not path.is_file():
                raise FileNotFoundError(f"--experiment: {path} not found (train the experiment first)")
            cfg = load_config(DeepSDFConfig, path, list(args.overrides) + [f"out={args.experiment}"])
        else:
            cfg = load_config(DeepSDFConfig, args.config or DEFAULT_PRESET, args.overrides)
            trained = Path(cfg.out) / "config.yaml"
            if args.config is None and trained.is_file():  # the experiment's own resolved config
                cfg = load_config(DeepSDFConfig, trained, args.overrides)
        check_config(cfg)
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))
    return cfg, args


def reconstruction_dir(experiment: Path, epoch: int, partial: bool, tag: str = "") -> Path:
    """`<experiment>/Reconstructions/<epoch>[_partial][_<tag>]`."""
    if tag and not tag.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"--tag: use letters, digits, '-' and '_' only, got {tag!r}")
    return experiment / "Reconstructions" / (str(epoch) + ("_partial" if partial else "") + (f"_{tag}" if tag else ""))


def split_file(cfg: DeepSDFConfig, split: str) -> Path:
    if split in ("train", "test"):
        return find_split(cfg.data.root, cfg.data.train_split if split == "train" else cfg.data.test_split, split)
    path = Path(split)
    if not path.is_file():
        raise FileNotFoundError(f"--split: split file {path} not found")
    return path


def reconstruct_split(cfg: DeepSDFConfig, checkpoint: str = "latest", split: str = "test", partial: bool = False,
                      overwrite: bool = False, progress: bool = True, tag: str = "") -> dict:  # fmt: skip
    """Reconstruct every shape of `split`; returns the log dict also written to reconstruct_log.json."""
    from tqdm import tqdm

    set_torch_threads(cfg.torch_threads)
    device = resolve_device(cfg.device)
    experiment = Path(cfg.out)
    decoder, state = load_decoder(experiment, checkpoint, cfg, device)
    epoch = int(state["epoch"])
    sfile = split_file(cfg, split)
    instances = load_split_instances(cfg.data.root, sfile)
    out = reconstruction_dir(experiment, epoch, partial, tag)
    rc = cfg.reconstruct
    log_path = out / "reconstruct_log.json"
    log = json.loads(log_path.read_text()) if log_path.is_file() and not overwrite else {}
    settings = json.loads(json.dumps({"split": str(sfile), "partial": partial, "config": config_to_dict(rc)}))
    if log and {k: log.get(k) for k in settings} != settings:  # resuming must not mix settings in one folder
        raise ValueError(f"{log_path}: these reconstructions were made with other settings; "
                         "pass --overwrite to redo them, or --tag NAME for a separate folder")  # fmt: skip
    log.update(epoch=epoch, **settings)
    shapes = log.setdefault("shapes", {})
    bar = tqdm(instances, disable=not progress, dynamic_ncols=True, desc=f"deepsdf reconstruct{' (partial)' if partial else ''}", unit="shape")
    for k, it in enumerate(bar):
        key = "/".join(it)
        mesh_path, code_path = mesh_file(out, it), out / "Codes" / it.dataset / it.class_name / f"{it.instance}.pth"
        if not overwrite and code_path.is_file() and (mesh_path.is_file() or shapes.get(key, {}).get("status") == "no surface"):
            continue
        t0 = time.time()
        pos, neg = (torch.from_numpy(a) for a in load_sdf_samples(it.sdf_samples(cfg.data.root)))
        if partial:
            pos = partial_samples(pos, rc.partial_direction, rc.partial_offset)
            neg = partial_samples(neg, rc.partial_direction, rc.partial_offset)
        # One generator per shape, seeded by its position: results do not depend on which shapes a
        # resumed run skips.
        gen = torch.Generator().manual_seed(cfg.seed * 100003 + k)
        z, loss = reconstruct_latent(decoder, pos, neg, rc, cfg.train.clamp, gen)
        t_fit = time.time() - t0
        offset, scale = load_normalization(it.normalization(cfg.data.root))
        row = {"loss": loss, "samples_used": int(len(pos) + len(neg)), "fit_seconds": t_fit}
        try:
            mesh = extract_mesh(decoder.field(z), resolution=rc.resolution, chunk_size=rc.chunk_size, device=device,
                                T_world_field=T_mesh_normalized(offset, scale))  # fmt: skip
            save_mesh(mesh, mesh_path)
            row.update(status="ok", faces=int(len(mesh.faces)))
        except ValueError as e:  # the decoder's zero level set misses the grid: record, go on
            row.update(status="no surface", error=str(e))
            mesh_path.unlink(missing_ok=True)
        save_checkpoint(code_path, z[None].cpu())
        row["seconds"] = time.time() - t0
        shapes[key] = row
        atomic_write_bytes(log_path, json.dumps(log, indent=1).encode())
        bar.write(f"{key}: loss {loss:.5f}, {row['seconds']:.1f} s (fit {t_fit:.1f} s), {row['status']}")
    atomic_write_bytes(log_path, json.dumps(log, indent=1).encode())
    return log


def mesh_file(out: Path, it: Instance) -> Path:
    return out / "Meshes" / it.dataset / it.class_name / f"{it.instance}.ply"


@app_main("python -m apps.deepsdf reconstruct")
def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m apps.deepsdf reconstruct", description="Fit latent codes to a split's shapes and mesh them.")
    ap.add_argument("--checkpoint", default="latest", help="'latest' or a snapshot epoch (checkpoints/<epoch>.pt)")
    ap.add_argument("--split", default="test", help="test, train, or a split JSON file")
    ap.add_argument("--partial", action="store_true", help="fit from the samples of one side only (see reconstruct.partial_*)")
    ap.add_argument("--overwrite", action="store_true", help="redo shapes that already have a mesh and a code")
    ap.add_argument("--tag", default="", help="suffix of the output folder, to keep runs with other settings apart")
    cfg, args = experiment_config(ap, list(sys.argv[1:] if argv is None else argv))
    log = reconstruct_split(cfg, args.checkpoint, args.split, args.partial, args.overwrite, tag=args.tag)
    secs = [r["seconds"] for r in log["shapes"].values()]
    print(f"deepsdf reconstruct: {len(secs)} shapes, {np.mean(secs) if secs else 0:.1f} s per shape -> "
          f"{reconstruction_dir(Path(cfg.out), log['epoch'], args.partial, args.tag)}")  # fmt: skip
    return log


if __name__ == "__main__":
    main()
