"""DeepSDF training (`train_deep_sdf.py` of facebookresearch/DeepSDF): an auto-decoder whose decoder
weights and per-shape latent codes are optimised together on SDF samples.

    python -m apps.deepsdf train [--config configs/deepsdf/cpu.yaml] [--specs specs.json] [key=value ...] [--resume]

Per batch: `scenes_per_batch` shapes x `samples_per_scene` samples (half pos, half neg); loss =
sum |clamp(f(z_i, x)) - clamp(sdf)| / S + lambda * min(1, epoch / 100) * sum_samples ||z_i|| / S
(S = samples in the batch, clamp to +-0.1); Adam with a decoder and a latent parameter group, each on
its own step schedule. The experiment folder `out` gets config.yaml (resolved), checkpoints/latest.pt
(refreshed every `checkpoint_every` epochs, at the end and on Ctrl-C) and checkpoints/<epoch>.pt at
the snapshot epochs, each one atomic file holding the decoder, the codes, the optimiser and the RNG
states (the original splits these into ModelParameters/, LatentCodes/, OptimizerParameters/), plus
train_log.json (loss per epoch).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from taichi_sdf.core.runtime import set_torch_threads
from taichi_sdf.models.deepsdf import LatentCodes, build_decoder
from taichi_sdf.train.checkpoint import atomic_write_bytes, latest_checkpoint, load_checkpoint, save_checkpoint
from taichi_sdf.train.config import config_to_dict, load_config, parse_config, save_config

from .config import DeepSDFConfig, check_config, specs_to_overrides
from .data import SDFSamples, find_split

DEFAULT_PRESET = "configs/deepsdf/cpu.yaml"
SPECS_PRESET = "configs/deepsdf/specs.yaml"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: 'cuda' requested but torch sees no GPU")
    return torch.device(name)


def deepsdf_loss(
    pred: torch.Tensor,  # [N]
    sdf: torch.Tensor,  # [N]
    codes: torch.Tensor | None,  # [N, L]
    epoch: int,
    clamp: float = 0.1,
    code_reg_lambda: float = 1e-4,
    code_reg_warmup: int = 100,
    num_samples: int | None = None,
) -> dict[str, torch.Tensor]:
    """The training loss of `train_deep_sdf.py` for predictions `pred [N]`, ground truth `sdf [N]` and
    the per-sample codes `codes [N, L]` (None = no code regularisation).

    data = sum |clamp(pred) - clamp(sdf)| / S; reg = lambda * min(1, epoch / warmup) * sum_n ||codes_n|| / S,
    S = `num_samples` (the whole batch's sample count, so chunks of a split batch add up; default N).
    Note the code norm is summed over samples, not shapes: each shape weighs by its sample count.
    """
    S = pred.shape[0] if num_samples is None else num_samples
    data = (pred.clamp(-clamp, clamp) - sdf.clamp(-clamp, clamp)).abs().sum() / S
    reg = torch.zeros((), device=pred.device)
    if codes is not None and code_reg_lambda > 0:
        reg = code_reg_lambda * min(1.0, epoch / code_reg_warmup) * codes.norm(dim=1).sum() / S
    return {"loss": data + reg, "data": data, "code_reg": reg}


class DeepSDFTrainer:
    """Construct, `train_epoch()` repeatedly (or `train()`); checkpoints resume exactly, mid-epoch included."""

    def __init__(self, cfg: DeepSDFConfig, resume: bool = False) -> None:
        check_config(cfg)
        self.cfg = cfg
        set_torch_threads(cfg.torch_threads)
        self.device = resolve_device(cfg.device)
        torch.manual_seed(cfg.seed)  # dropout draws from the global generator (saved in checkpoints)
        self.gen = torch.Generator().manual_seed(cfg.seed)  # shuffling and sample draws: resumable
        self.split_file = find_split(cfg.data.root, cfg.data.train_split, "train")
        self.data = SDFSamples(cfg.data.root, self.split_file)
        self.decoder = build_decoder(cfg.model).to(self.device)
        self.latents = LatentCodes(len(self.data), cfg.model.latent_size, cfg.model.code_bound, cfg.model.code_init_std).to(self.device)
        t = cfg.train
        self.optimizer = torch.optim.Adam([
            {"params": self.decoder.parameters(), "lr": t.decoder_lr.lr(0)},
            {"params": self.latents.parameters(), "lr": t.latent_lr.lr(0)},
        ])  # fmt: skip
        # Batches of fewer shapes are dropped (drop_last=True in the original); with fewer shapes than
        # scenes_per_batch the whole split is one batch rather than no batch at all.
        self.scenes_per_batch = min(t.scenes_per_batch, len(self.data))
        self.epoch = 0  # epochs completed (the original counts from 1)
        self.batch = 0  # batches completed in the running epoch
        self.perm: torch.Tensor | None = None  # the running epoch's shape order
        self.log: list[dict] = []  # one row per finished epoch
        self._epoch_loss: list[float] = []
        self.out = Path(cfg.out)
        self.ckpt_dir = self.out / "checkpoints"
        if resume:
            self.resume()

    @property
    def batches_per_epoch(self) -> int:
        return len(self.data) // self.scenes_per_batch

    def set_lrs(self, epoch: int) -> None:
        t = self.cfg.train
        self.optimizer.param_groups[0]["lr"] = t.decoder_lr.lr(epoch)
        self.optimizer.param_groups[1]["lr"] = t.latent_lr.lr(epoch)

    def step(self, scenes: torch.Tensor, epoch: int) -> dict[str, float]:
        """One optimiser step on the shapes `scenes [B]` (epoch numbered from 1, for the warm-up)."""
        t = self.cfg.train
        S = t.samples_per_scene
        samples = self.data.sample(scenes, S, self.gen).to(self.device).reshape(-1, 4)
        idx = scenes.to(self.device).repeat_interleave(S)
        n = samples.shape[0]
        self.optimizer.zero_grad(set_to_none=True)
        totals = {"loss": 0.0, "data": 0.0, "code_reg": 0.0}
        for xyz_sdf, ids in zip(samples.chunk(t.batch_split), idx.chunk(t.batch_split)):
            codes = self.latents(ids)
            pred = self.decoder(codes, xyz_sdf[:, :3])
            terms = deepsdf_loss(pred, xyz_sdf[:, 3], codes if t.code_reg else None, epoch, t.clamp,
                                 t.code_reg_lambda, t.code_reg_warmup, n)  # fmt: skip
            terms["loss"].backward()
            for k in totals:
                totals[k] += float(terms[k].detach())
        if not torch.isfinite(torch.tensor(totals["loss"])):
            raise FloatingPointError(f"epoch {epoch}: loss is {totals['loss']}; last checkpoint kept in {self.ckpt_dir}")
        if t.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.decoder.parameters(), t.grad_clip)
        self.optimizer.step()
        return totals

    def train_epoch(self) -> dict[str, float]:
        """Run (the rest of) epoch `self.epoch + 1`; returns its mean batch loss terms."""
        self.decoder.train()
        epoch = self.epoch + 1
        self.set_lrs(epoch)
        if self.perm is None:
            self.perm = torch.randperm(len(self.data), generator=self.gen)
            self.batch, self._epoch_loss = 0, []
        B = self.scenes_per_batch
        rows = []
        while self.batch < self.batches_per_epoch:
            scenes = self.perm[self.batch * B : (self.batch + 1) * B]
            rows.append(self.step(scenes, epoch))
            self._epoch_loss.append(rows[-1]["loss"])
            self.batch += 1
        row = {"epoch": epoch, "loss": sum(self._epoch_loss) / len(self._epoch_loss),
               "decoder_lr": self.optimizer.param_groups[0]["lr"], "latent_lr": self.optimizer.param_groups[1]["lr"],
               "code_norm": float(self.latents.weight.detach().norm(dim=1).mean())}  # fmt: skip
        if rows:
            row.update(data=sum(r["data"] for r in rows) / len(rows), code_reg=sum(r["code_reg"] for r in rows) / len(rows))
        self.log.append(row)
        self.epoch, self.batch, self.perm = epoch, 0, None
        return row

    # -- checkpoints -------------------------------------------------------------------------------------

    def state(self) -> dict:
        return {
            "kind": "deepsdf",
            "epoch": self.epoch,
            "batch": self.batch,
            "perm": self.perm,
            "epoch_loss": list(self._epoch_loss),
            "decoder": self.decoder.state_dict(),
            "latents": self.latents.weight.detach().cpu(),
            "instances": [list(it) for it in self.data.instances],
            "optimizer": self.optimizer.state_dict(),
            "generator": self.gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "log": self.log,
            "config": config_to_dict(self.cfg),
        }

    def save(self, snapshot: bool = False) -> Path:
        state = self.state()
        latest = save_checkpoint(self.ckpt_dir / "latest.pt", state)
        if snapshot:
            save_checkpoint(self.ckpt_dir / f"{self.epoch}.pt", state)
        atomic_write_bytes(self.out / "train_log.json", json.dumps(self.log, indent=1).encode())
        return Path(latest)

    def resume(self, path: str | Path | None = None) -> bool:
        latest = self.ckpt_dir / "latest.pt"
        path = path or (latest if latest.is_file() else latest_checkpoint(self.ckpt_dir))
        if path is None:
            return False
        s = load_checkpoint(path, map_location=self.device)
        names = [list(it) for it in self.data.instances]
        if s.get("instances") != names:
            raise ValueError(f"{path}: the checkpoint was trained on other shapes than {self.split_file} lists")
        try:
            self.decoder.load_state_dict(s["decoder"])
        except RuntimeError as e:
            raise ValueError(f"{path}: the decoder does not match the config's model: {str(e).splitlines()[0]}") from None
        with torch.no_grad():
            self.latents.weight.copy_(s["latents"])
        self.optimizer.load_state_dict(s["optimizer"])
        self.gen.set_state(s["generator"])
        torch.set_rng_state(s["torch_rng"])
        self.epoch, self.batch, self.perm = int(s["epoch"]), int(s["batch"]), s["perm"]
        self._epoch_loss, self.log = list(s["epoch_loss"]), list(s["log"])
        return True

    def is_snapshot(self, epoch: int) -> bool:
        t = self.cfg.train
        return epoch % t.snapshot_every == 0 or epoch in t.snapshots or epoch == t.epochs

    # -- loop -------------------------------------------------------------------------------------------

    def train(self, epochs: int | None = None, progress: bool = True) -> dict:
        """Train up to `cfg.train.epochs` (or `epochs` more now); Ctrl-C saves checkpoints/latest.pt."""
        from tqdm import tqdm

        self.out.mkdir(parents=True, exist_ok=True)
        save_config(self.cfg, self.out / "config.yaml")
        total = self.cfg.train.epochs
        end = total if epochs is None else min(total, self.epoch + epochs)
        bar = tqdm(total=total, initial=self.epoch, disable=not progress, dynamic_ncols=True, desc="deepsdf train", unit="epoch")
        row: dict = {}
        t0, start_epoch = time.time(), self.epoch
        try:
            while self.epoch < end:
                row = self.train_epoch()
                bar.update(1)
                rate = self.batches_per_epoch * self.scenes_per_batch * self.cfg.train.samples_per_scene * (self.epoch - start_epoch) / (time.time() - t0)
                bar.set_postfix(loss=f"{row['loss']:.5f}", code=f"{row['code_norm']:.3f}", samples_s=f"{rate:.3g}")
                if self.is_snapshot(self.epoch):
                    self.save(snapshot=True)
                elif self.epoch % self.cfg.train.checkpoint_every == 0:
                    self.save()
        except KeyboardInterrupt:
            bar.write(f"interrupted: saving {self.ckpt_dir / 'latest.pt'} at epoch {self.epoch} (+{self.batch} batches)")
            self.save()
            raise
        finally:
            bar.close()
        self.save()
        return row


def train_config(argv: list[str]) -> tuple[DeepSDFConfig, argparse.Namespace]:
    ap = argparse.ArgumentParser(prog="python -m apps.deepsdf train", description="Train a DeepSDF auto-decoder.")
    ap.add_argument("--specs", metavar="SPECS_JSON", help="an original DeepSDF specs.json, applied after the preset "
                    "(default then configs/deepsdf/specs.yaml) and before the overrides")  # fmt: skip
    ap.add_argument("--resume", action="store_true", help="continue from <out>/checkpoints/latest.pt")
    ap.add_argument("--epochs", type=int, default=None, help="train at most this many epochs now")
    argv = list(argv)
    if "--config" not in argv:  # a specs.json describes the original's setting: start from its preset
        argv = ["--config", SPECS_PRESET if "--specs" in argv else DEFAULT_PRESET] + argv
    cfg, args = parse_config(DeepSDFConfig, argv, ap)
    if args.specs:  # preset < specs.json < the command line's overrides
        try:
            cfg = load_config(DeepSDFConfig, args.config, specs_to_overrides(args.specs) + list(args.overrides))
        except (ValueError, FileNotFoundError) as e:
            ap.error(str(e))
    return cfg, args


def main(argv=None) -> dict:
    cfg, args = train_config(sys.argv[1:] if argv is None else argv)
    t0 = time.time()
    try:
        trainer = DeepSDFTrainer(cfg, resume=args.resume)
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from None
    n_params = sum(p.numel() for p in trainer.decoder.parameters())
    print(f"deepsdf train: {len(trainer.data)} shapes from {trainer.split_file}, decoder {n_params} parameters, "
          f"device {trainer.device}, starting at epoch {trainer.epoch + 1}/{cfg.train.epochs}")  # fmt: skip
    row = trainer.train(args.epochs)
    row["wall_seconds"] = time.time() - t0
    print(json.dumps(row, default=float))
    return row


if __name__ == "__main__":
    main()
