"""python -m apps.idr [--config configs/idr/cpu.yaml] [key=value ...] [--resume] [--eval-only]

Trains IDR on the configured dataset (the built-in CSG dataset when `data.data` is not set), then
writes renders of held-out views, a turntable, mesh.ply (world units) and metrics.json to `out`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from taichi_sdf.train.config import parse_config

from .config import IDRConfig
from .trainer import IDRTrainer

DEFAULT_PRESET = "configs/idr/cpu.yaml"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m apps.idr", description=__doc__.split("\n\n")[1].replace("\n", " "))
    ap.add_argument("--resume", action="store_true", help="continue from out/checkpoints/latest.pt")
    ap.add_argument("--eval-only", action="store_true", help="no training: export from the latest checkpoint")
    ap.add_argument("--iterations", type=int, default=None, help="train at most this many iterations now")
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--config" not in argv:
        argv = ["--config", DEFAULT_PRESET] + argv
    cfg, args = parse_config(IDRConfig, argv, ap)
    t0 = time.time()
    trainer = IDRTrainer(cfg, resume=args.resume or args.eval_only)
    if not args.eval_only:
        trainer.train(args.iterations)
    train_s = time.time() - t0
    metrics = trainer.export()
    metrics["wall_seconds_train"] = train_s
    metrics["wall_seconds_total"] = time.time() - t0
    (trainer.out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float))
    print(json.dumps(metrics, indent=2, default=float))
    return metrics


if __name__ == "__main__":
    main()
