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

Under torchrun (`torchrun --nproc_per_node N -m apps.deepsdf train ...`) every rank draws the same
global batch (the shared, checkpointed run generator gives one shape order per epoch and the same
samples on every rank) and trains on its contiguous share of the batch's shapes (`shard_indices`), with
`DeepSDFSystem` (decoder + codes) wrapped in DistributedDataParallel. Each rank's loss is its share of
the global batch's loss (divided by the global S) times the world size, so DDP's gradient average is
the single-process gradient of the whole batch; the code bound is applied to the global batch's rows
before the forward on every rank. So N ranks compute the single-process run (up to float rounding),
the checkpoint state is global, and a run resumes with any number of ranks. Rank 0 writes everything.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import torch

from taichi_sdf.core.errors import app_main
from taichi_sdf.core.runtime import set_torch_threads
from taichi_sdf.models.deepsdf import LatentCodes, build_decoder
from taichi_sdf.train import distributed as tdist
from taichi_sdf.train import losses
from taichi_sdf.train.checkpoint import atomic_write_bytes, save_checkpoint
from taichi_sdf.train.config import load_config, parse_config
from taichi_sdf.train.trainer import Trainer, UserError, exit_on_user_error, is_main_process

from .config import DeepSDFConfig, check_config, specs_to_overrides
from .data import SDFSamples, find_split
from .system import DeepSDFSystem

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
    the per-sample codes `codes [N, L]` (None = no code regularisation): `losses.clamped_sdf_l1` +
    `losses.latent_l2` (see there; S = `num_samples`, default N). `DeepSDFSystem.forward` computes the same."""
    data = losses.clamped_sdf_l1(pred, sdf, clamp, num_samples)
    reg = torch.zeros((), device=pred.device)
    if codes is not None and code_reg_lambda > 0:
        reg = losses.latent_l2(codes, code_reg_lambda, epoch, code_reg_warmup, num_samples)
    return {"loss": data + reg, "data": data, "code_reg": reg}


class DeepSDFTrainer(Trainer):
    """Construct, `train_epoch()` repeatedly (or `train()`); checkpoints resume exactly, mid-epoch included.
    An iteration of the base loop is one batch; the loss is `self.system(batch)` (a `DeepSDFSystem`)."""

    name = "deepsdf train"
    unit = "batch"
    keep_last = None  # the numbered checkpoints are the snapshot epochs: all kept
    outputs = ("checkpoints", "train_log.json", "log.csv", "log.png", "tensorboard", "Reconstructions", "Evaluations")

    def __init__(self, cfg: DeepSDFConfig, resume: bool = False, mode: str | None = None) -> None:
        check_config(cfg)
        mode = mode or ("resume" if resume else "new")
        self.join_distributed(cfg.device, cfg.dist_timeout_s)  # under torchrun: the process group, GPU, threads
        set_torch_threads(cfg.torch_threads)
        self.device = self.dist.device if self.dist.distributed else resolve_device(cfg.device)
        # Seeds torch's global generator (dropout draws from it; saved in checkpoints) and makes
        # self.gen for shuffling and sample draws.
        super().__init__(cfg, cfg.out, cfg.seed, mode)
        self.split_file = find_split(cfg.data.root, cfg.data.train_split, "train")
        self.data = SDFSamples(cfg.data.root, self.split_file)
        decoder = build_decoder(cfg.model).to(self.device)
        latents = LatentCodes(len(self.data), cfg.model.latent_size, cfg.model.code_bound, cfg.model.code_init_std).to(self.device)
        t = cfg.train
        self.system = DeepSDFSystem(decoder, latents, t.clamp, t.code_reg, t.code_reg_lambda, t.code_reg_warmup)
        self.decoder, self.latents = decoder, latents
        # The DDP module holds the codes too: codes outside it would be updated by their own rank only.
        self.model = self.wrap_ddp(self.system)
        if self.dist.distributed:
            if self.dist.rank > 0:  # dropout: each rank its own draws (rank 0 keeps the single-process stream)
                torch.manual_seed(cfg.seed + self.dist.rank)
        self.optimizer = torch.optim.Adam([
            {"params": self.decoder.parameters(), "lr": t.decoder_lr.lr(0)},
            {"params": self.latents.parameters(), "lr": t.latent_lr.lr(0)},
        ])  # fmt: skip
        # Batches of fewer shapes are dropped (drop_last=True in the original); with fewer shapes than
        # scenes_per_batch the whole split is one batch rather than no batch at all.
        self.scenes_per_batch = min(t.scenes_per_batch, len(self.data))
        if self.scenes_per_batch < self.dist.world_size:
            raise UserError(f"train.scenes_per_batch: {self.scenes_per_batch} shapes per batch cannot be shared by "
                            f"{self.dist.world_size} ranks (each needs one); use more shapes per batch or fewer processes")  # fmt: skip
        self._stop_signal: int | None = None  # a SIGINT/SIGTERM this rank received, not yet agreed on
        self._rank_rngs: list | None = None  # every rank's torch RNG state (dropout), gathered at save
        self.epoch = 0  # epochs completed (the original counts from 1)
        self.batch = 0  # batches completed in the running epoch
        self.perm: torch.Tensor | None = None  # the running epoch's shape order
        self.log: list[dict] = []  # one row per finished epoch
        self._epoch_loss: list[float] = []
        self._rows: list[dict] = []
        self.samples_per_step = self.scenes_per_batch * t.samples_per_scene
        self.start(mode)

    @property
    def batches_per_epoch(self) -> int:
        return len(self.data) // self.scenes_per_batch

    @property
    def total_iterations(self) -> int:
        return self.cfg.train.epochs * self.batches_per_epoch

    def set_lrs(self, epoch: int) -> None:
        t = self.cfg.train
        self.optimizer.param_groups[0]["lr"] = t.decoder_lr.lr(epoch)
        self.optimizer.param_groups[1]["lr"] = t.latent_lr.lr(epoch)

    def optimizer_step(self, scenes: torch.Tensor, epoch: int) -> dict[str, float]:
        """One optimiser step on the shapes `scenes [B]` of the global batch (epoch numbered from 1, for the
        warm-up); under DDP this rank computes its share of the shapes (see the module docstring)."""
        t = self.cfg.train
        S = t.samples_per_scene
        world = self.dist.world_size
        self.latents.renorm_(scenes)  # the code bound, on every row the global batch looks up, on every rank
        samples = self.data.sample(scenes, S, self.gen)  # [B, S, 4]: the same draws on every rank
        n = samples.shape[0] * S  # the global batch's S: the loss divides by it on every rank
        mine = tdist.shard_indices(len(scenes), self.dist.rank, world)
        samples = samples[mine.start : mine.stop].to(self.device).reshape(-1, 4)
        idx = scenes[mine.start : mine.stop].to(self.device).repeat_interleave(S)
        self.optimizer.zero_grad(set_to_none=True)
        totals = {"loss": 0.0, "data": 0.0, "code_reg": 0.0}
        chunks = list(zip(samples.chunk(t.batch_split), idx.chunk(t.batch_split)))
        for k_chunk, (xyz_sdf, ids) in enumerate(chunks):
            sync = k_chunk == len(chunks) - 1 or not self.dist.distributed  # DDP all-reduces on the last chunk only
            with contextlib.nullcontext() if sync else self.model.no_sync(), tdist.peer_failures("the gradient all-reduce"):
                terms = self.model({"shape": ids, "xyz": xyz_sdf[:, :3], "sdf": xyz_sdf[:, 3], "epoch": epoch, "num_samples": n})
                # x world: DDP averages the ranks' gradients, the batch's gradient is their sum.
                (terms["loss"] * world if world > 1 else terms["loss"]).backward()
            for k in totals:
                totals[k] += float(terms[k].detach())
        totals = self.reduce_row(totals, sums=("loss", "data", "code_reg"))  # the batch's terms; agrees on a signal
        if not torch.isfinite(torch.tensor(totals["loss"])):
            raise FloatingPointError(f"epoch {epoch}: loss is {totals['loss']}; last checkpoint kept in {self.ckpt_dir}")
        if t.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.decoder.parameters(), t.grad_clip)
        self.optimizer.step()
        return totals

    def train_step(self) -> dict[str, float]:
        """The next batch of epoch `self.epoch + 1`; finishing the epoch appends its row to `self.log`."""
        self.decoder.train()
        epoch = self.epoch + 1
        self.set_lrs(epoch)
        if self.perm is None:
            self.perm = torch.randperm(len(self.data), generator=self.gen)
            self.batch, self._epoch_loss, self._rows = 0, [], []
        B = self.scenes_per_batch
        row = self.optimizer_step(self.perm[self.batch * B : (self.batch + 1) * B], epoch)
        self._rows.append(row)
        self._epoch_loss.append(row["loss"])
        self.batch += 1
        if self.batch == self.batches_per_epoch:
            self._finish_epoch(epoch)
        return row

    def _finish_epoch(self, epoch: int) -> None:
        rows = self._rows
        row = {"epoch": epoch, "loss": sum(self._epoch_loss) / len(self._epoch_loss),
               "decoder_lr": self.optimizer.param_groups[0]["lr"], "latent_lr": self.optimizer.param_groups[1]["lr"],
               "code_norm": float(self.latents.weight.detach().norm(dim=1).mean())}  # fmt: skip
        if rows:  # the batches of this process (a resumed epoch has only its own)
            row.update(data=sum(r["data"] for r in rows) / len(rows), code_reg=sum(r["code_reg"] for r in rows) / len(rows))
        self.log.append(row)
        self.epoch, self.batch, self.perm, self._rows = epoch, 0, None, []

    def train_epoch(self) -> dict[str, float]:
        """Run (the rest of) epoch `self.epoch + 1`; returns its mean batch loss terms."""
        epoch = self.epoch + 1
        while self.epoch < epoch:
            self.step()
        return self.log[-1]

    def log_row(self, row: dict) -> dict | None:
        if self.batch != 0 or not self.log:
            return None
        return {"iteration": self.iteration, **self.log[-1]}

    def postfix(self, row: dict) -> dict:
        last = self.log[-1] if self.log else row
        return {"epoch": self.epoch, "loss": f"{last['loss']:.5f}", "code": f"{last.get('code_norm', 0):.3f}",
                "samples": self.throughput()}  # fmt: skip

    # -- checkpoints -------------------------------------------------------------------------------------

    def is_snapshot(self, epoch: int) -> bool:
        t = self.cfg.train
        return epoch % t.snapshot_every == 0 or epoch in t.snapshots or epoch == t.epochs

    def checkpoint_due(self) -> bool:
        return self.batch == 0 and (self.is_snapshot(self.epoch) or self.epoch % self.cfg.train.checkpoint_every == 0)

    def checkpoint_name(self) -> str | None:
        return f"{self.epoch}.pt" if self.batch == 0 and self.epoch > 0 and self.is_snapshot(self.epoch) else None

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
            "log": self.log,
            "world_size": self.dist.world_size,
            "torch_rng_ranks": self._rank_rngs,  # dropout streams of ranks 1.. (None in a single process)
        }

    def save(self, snapshot: bool = False) -> Path:
        if self.dist.distributed:  # collective: every rank calls save at the same batch
            self._rank_rngs = tdist.all_gather_object(torch.get_rng_state())
        latest = super().save()
        if snapshot and self.checkpoint_name() is None and is_main_process():
            save_checkpoint(self.ckpt_dir / f"{self.epoch}.pt", self.full_state())
        if is_main_process():
            atomic_write_bytes(self.out / "train_log.json", json.dumps(self.log, indent=1).encode())
        return latest

    def load_state(self, s: dict) -> None:
        names = [list(it) for it in self.data.instances]
        if s.get("instances") != names:
            raise UserError(f"{self.ckpt_dir}: the checkpoint was trained on other shapes than {self.split_file} lists")
        try:
            self.decoder.load_state_dict(s["decoder"])
        except RuntimeError as e:
            raise UserError(f"{self.ckpt_dir}: the decoder does not match the config's model: {str(e).splitlines()[0]}") from None
        with torch.no_grad():
            self.latents.weight.copy_(s["latents"])
        self.optimizer.load_state_dict(s["optimizer"])
        self.epoch, self.batch, self.perm = int(s["epoch"]), int(s["batch"]), s["perm"]
        self._epoch_loss, self.log = list(s["epoch_loss"]), list(s["log"])
        self.iteration = self.epoch * self.batches_per_epoch + self.batch
        self._rank_rngs = s.get("torch_rng_ranks")

    def resume(self, path=None) -> bool:
        """The base's resume (every rank gets rank 0's checkpoint), then each rank's own dropout stream.
        The rest of the state is global, so any number of ranks resumes; only with dropout and another
        world size than the checkpoint's do ranks > 0 start new streams (seeded by seed, rank, iteration)."""
        resumed = super().resume(path)
        r = self.dist.rank
        if resumed and r > 0:
            rngs = self._rank_rngs
            if rngs is not None and len(rngs) == self.dist.world_size:
                torch.set_rng_state(rngs[r])
            else:
                torch.manual_seed(self.cfg.seed + r + 1_000_003 * self.iteration)
        return resumed

    # -- loop -------------------------------------------------------------------------------------------

    def train(self, epochs: int | None = None, progress: bool = True, callback=None) -> dict:
        """Train up to `cfg.train.epochs` (or `epochs` more now); Ctrl-C / SIGTERM save checkpoints/latest.pt
        after the running batch and return (`self.interrupted` set). Returns the last epoch's row."""
        end_epoch = self.cfg.train.epochs if epochs is None else min(self.cfg.train.epochs, self.epoch + epochs)
        super().train(max(0, end_epoch * self.batches_per_epoch - self.iteration), progress, callback)
        return dict(self.log[-1]) if self.log else {}


def train_config(argv: list[str]) -> tuple[DeepSDFConfig, argparse.Namespace]:
    ap = argparse.ArgumentParser(prog="python -m apps.deepsdf train", description="Train a DeepSDF auto-decoder.")
    ap.add_argument("--specs", metavar="SPECS_JSON", help="an original DeepSDF specs.json, applied after the preset "
                    "(default then configs/deepsdf/specs.yaml) and before the overrides")  # fmt: skip
    ap.add_argument("--resume", action="store_true", help="continue from <out>/checkpoints/latest.pt (a new run if none)")
    ap.add_argument("--overwrite", action="store_true", help="replace the run in <out> (checkpoints, logs, reconstructions)")
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


@app_main("python -m apps.deepsdf train")
def main(argv=None) -> dict:
    cfg, args = train_config(sys.argv[1:] if argv is None else argv)
    if args.resume and args.overwrite:
        raise SystemExit("deepsdf train: error: --resume and --overwrite exclude each other")
    t0 = time.time()
    with exit_on_user_error("deepsdf train"):
        trainer = DeepSDFTrainer(cfg, mode="resume" if args.resume else "overwrite" if args.overwrite else "new")
        n_params = sum(p.numel() for p in trainer.decoder.parameters())
        ranks = f", {trainer.dist.world_size} ranks ({trainer.dist.backend})" if trainer.dist.distributed else ""
        if is_main_process():
            print(f"deepsdf train: {len(trainer.data)} shapes from {trainer.split_file}, decoder {n_params} parameters, "
                  f"device {trainer.device}, torch threads {torch.get_num_threads()}{ranks}, "
                  f"starting at epoch {trainer.epoch + 1}/{cfg.train.epochs}")  # fmt: skip
        row = trainer.train(args.epochs)
    if trainer.interrupted is not None:
        raise SystemExit(128 + trainer.interrupted)
    row["wall_seconds"] = time.time() - t0
    if is_main_process():
        print(json.dumps(row, default=float))
    trainer.message(f"outputs in {trainer.out}/ (checkpoints/, train_log.json, log.csv, log.png)")
    return row


if __name__ == "__main__":
    main()
