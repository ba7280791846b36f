"""The command line every train-then-export app shares: `[--config PRESET] [key=value ...]
[--resume | --overwrite] [--eval-only] [--iterations N]`, user errors as one line, `metrics.json`
with the wall times."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable

from .checkpoint import atomic_write_bytes
from .config import parse_config
from .distributed import finish_distributed
from .trainer import Trainer, exit_on_user_error, is_main_process


def train_and_export(
    argv: list[str] | None,
    *,
    prog: str,
    name: str,
    description: str,
    config_cls: type,
    make_trainer: Callable[..., Trainer],
    default_preset: str,
    outputs: str,
) -> dict:
    """Parse `argv` (default `sys.argv[1:]`) into `config_cls` under `default_preset`, build the trainer
    with `make_trainer(cfg, mode=...)`, train (unless --eval-only), then `trainer.export()`; writes
    `metrics.json` (the export's metrics plus `wall_seconds_train` / `wall_seconds_total`), prints it
    and a line naming the output folder and its `outputs`. `UserError`s exit with one line `name: error: ...`;
    a run stopped by a signal exits with 128 + the signal after saving."""
    ap = argparse.ArgumentParser(prog=prog, description=description)
    ap.add_argument("--resume", action="store_true", help="continue from out/checkpoints/latest.pt (a new run if none)")
    ap.add_argument("--overwrite", action="store_true", help="replace the run in out (its checkpoints, log and metrics)")
    ap.add_argument("--eval-only", action="store_true", help="no training: export from the latest checkpoint (required)")
    ap.add_argument("--iterations", type=int, default=None, help="train at most this many iterations now")
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--config" not in argv:
        argv = ["--config", default_preset] + argv
    cfg, args = parse_config(config_cls, argv, ap)
    if args.resume and args.overwrite:
        ap.error("--resume and --overwrite exclude each other")
    if args.iterations is not None and args.iterations < 0:  # would train nothing and export an untrained model
        ap.error(f"--iterations: expected >= 0, got {args.iterations}")
    mode = "eval" if args.eval_only else "resume" if args.resume else "overwrite" if args.overwrite else "new"
    t0 = time.time()
    with exit_on_user_error(name):
        trainer = make_trainer(cfg, mode=mode)
        with trainer.locked():
            if not args.eval_only:
                trainer.train(args.iterations)
                if trainer.interrupted is not None:
                    raise SystemExit(128 + trainer.interrupted)
            train_s = time.time() - t0
            metrics = trainer.export()
            metrics["wall_seconds_train"] = train_s
            metrics["wall_seconds_total"] = time.time() - t0
            if is_main_process():
                atomic_write_bytes(trainer.out / "metrics.json", json.dumps(metrics, indent=2, default=float).encode())
    if is_main_process():  # under torchrun: once
        print(json.dumps(metrics, indent=2, default=float))
    trainer.message(f"outputs in {trainer.out}/ ({outputs})")
    finish_distributed()  # under torchrun: every rank leaves the process group together
    return metrics
