"""python -m apps.dvr [--config configs/dvr/cpu.yaml] [key=value ...] [--resume | --overwrite] [--eval-only]
   python -m apps.dvr single ...   (single-view reconstruction: python -m apps.dvr single --help)

Trains DVR (multi-view, per scene) on the configured dataset (the built-in CSG dataset when `data.data` is not set), then
writes renders of held-out views, a turntable, mesh.ply (world units) and metrics.json to `out`.
A folder holding a run is refused unless --resume (continue it) or --overwrite (replace it);
Ctrl-C or SIGTERM saves a checkpoint after the running iteration and exits (--resume continues).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from taichi_sdf.train.config import parse_config
from taichi_sdf.train.trainer import exit_on_user_error

from .config import DVRConfig
from .trainer import DVRTrainer

DEFAULT_PRESET = "configs/dvr/cpu.yaml"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m apps.dvr", description=__doc__.split("\n\n")[1].replace("\n", " "))
    ap.add_argument("--resume", action="store_true", help="continue from out/checkpoints/latest.pt (a new run if none)")
    ap.add_argument("--overwrite", action="store_true", help="replace the run in out (its checkpoints, log and metrics)")
    ap.add_argument("--eval-only", action="store_true", help="no training: export from the latest checkpoint (required)")
    ap.add_argument("--iterations", type=int, default=None, help="train at most this many iterations now")
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["single"]:  # DVR single-view reconstruction
        from .single import main as single_main

        return single_main(argv[1:])
    if "--config" not in argv:
        argv = ["--config", DEFAULT_PRESET] + argv
    cfg, args = parse_config(DVRConfig, argv, ap)
    if args.resume and args.overwrite:
        ap.error("--resume and --overwrite exclude each other")
    mode = "eval" if args.eval_only else "resume" if args.resume else "overwrite" if args.overwrite else "new"
    t0 = time.time()
    with exit_on_user_error("dvr"):
        trainer = DVRTrainer(cfg, mode=mode)
        with trainer.locked():
            if not args.eval_only:
                trainer.train(args.iterations)
                if trainer.interrupted is not None:
                    raise SystemExit(128 + trainer.interrupted)
            train_s = time.time() - t0
            metrics = trainer.export()
            metrics["wall_seconds_train"] = train_s
            metrics["wall_seconds_total"] = time.time() - t0
            (trainer.out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float))
    print(json.dumps(metrics, indent=2, default=float))
    trainer.message(
        f"outputs in {trainer.out}/ (mesh.ply, metrics.json, renders/, turntable.gif, log.csv, log.png, checkpoints/)"
    )
    return metrics


if __name__ == "__main__":
    main()
