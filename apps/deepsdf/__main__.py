"""python -m apps.deepsdf {sample,train,reconstruct,evaluate,all} [options] [key=value ...]

  sample       SDF samples in DeepSDF's layout (<data>/SdfSamples, SurfaceSamples,
               NormalizationParameters, splits/); without --meshes, the built-in chair family
  train        train the decoder and the training shapes' codes        (--help for options)
  reconstruct  fit codes to the test shapes, mesh them (--partial: from one side's samples)
  evaluate     Chamfer (x1000, as the paper), Chamfer-L1 and F-score of the reconstructions
  all          sample (if the data folder has no splits yet) -> train -> reconstruct (full and
               partial) -> evaluate, with the cpu preset unless --config is given; writes the wall
               time per step and the metrics to <out>/all_summary.json

`train` and `sample` also run under torchrun, one process per GPU (or per CPU share):
  torchrun --standalone --nproc_per_node N -m apps.deepsdf train [options] [key=value ...]
  torchrun --standalone --nproc_per_node N -m apps.deepsdf sample --out DIR [options]

Options of `all`: --config PRESET and key=value overrides (shared by every step); the sampler gets
`data.sample_args` of the config plus --sample-args "ARGS".
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

COMMANDS = ("sample", "train", "reconstruct", "evaluate", "all")


def run_all(argv: list[str]) -> dict:
    from taichi_sdf.train.checkpoint import atomic_write_bytes
    from taichi_sdf.train.config import add_config_args, load_config

    from . import evaluate, reconstruct, train
    from .config import DeepSDFConfig, check_config

    ap = argparse.ArgumentParser(prog="python -m apps.deepsdf all", description="The whole DeepSDF chain.")
    ap.add_argument("--sample-args", default="", help="extra arguments for `sample`, as one quoted string")
    add_config_args(ap)
    args = ap.parse_intermixed_args(argv)
    preset = args.config or train.DEFAULT_PRESET
    try:
        cfg = load_config(DeepSDFConfig, preset, args.overrides)
        check_config(cfg)
    except (ValueError, FileNotFoundError) as e:
        ap.error(str(e))
    common = ["--config", preset, *args.overrides]
    times: dict[str, float] = {}

    def timed(name, fn, *a):
        t0 = time.time()
        out = fn(*a)
        times[name] = time.time() - t0
        print(f"== {name}: {times[name]:.1f} s")
        return out

    root = Path(cfg.data.root)
    if cfg.data.train_split is None and not list((root / "splits").glob("*_train.json")):
        timed("sample", sample_main, ["--out", str(root), *shlex.split(cfg.data.sample_args), *shlex.split(args.sample_args)])
    timed("train", train.main, [*common, "--resume"])
    timed("reconstruct", reconstruct.main, common)
    timed("reconstruct_partial", reconstruct.main, [*common, "--partial"])
    full = timed("evaluate", evaluate.main, common)
    part = timed("evaluate_partial", evaluate.main, [*common, "--partial"])
    summary = {"wall_seconds": times, "full": full["summary"], "partial": part["summary"],
               "partial_direction": list(cfg.reconstruct.partial_direction), "epoch": full["epoch"],
               "environment": environment(cfg)}  # fmt: skip
    atomic_write_bytes(Path(cfg.out) / "all_summary.json", json.dumps(summary, indent=1).encode())
    print(json.dumps(summary, indent=1))
    print(f"deepsdf all: outputs in {cfg.out}/ (all_summary.json, Reconstructions/, Evaluations/, checkpoints/, log.csv)")
    return summary


def environment(cfg) -> dict:
    """What decides the floating-point results besides the seed: the device, torch's thread count
    (set_torch_threads(0) keeps torch's default on machines with more than 4 cores) and the versions.
    Runs that differ here give different numbers (1000 epochs amplify last-bit differences)."""
    import os
    import platform

    import numpy
    import torch

    from .train import resolve_device

    return {"device": str(resolve_device(cfg.device)), "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "torch": torch.__version__, "numpy": numpy.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "processor": platform.processor()}  # fmt: skip


def sample_main(argv: list[str]):
    from . import sample

    return sample.main(argv)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return None
    from taichi_sdf.core.errors import app_main  # here: the help above stays instant (no torch/Taichi import)

    return app_main("python -m apps.deepsdf")(_run)(argv)


def _run(argv: list[str]):
    cmd, rest = argv[0], argv[1:]
    if cmd not in COMMANDS:
        raise SystemExit(f"error: unknown command {cmd!r}; expected one of {', '.join(COMMANDS)}")
    if cmd not in ("train", "sample") and int(os.environ.get("WORLD_SIZE", "1")) > 1:  # launched by torchrun with several ranks
        raise SystemExit(f"error: only `train` and `sample` run under torchrun (each rank would repeat `{cmd}` and write "
                         "the same files); run the other commands in one process")  # fmt: skip
    if cmd == "all":
        return run_all(rest)
    from taichi_sdf.train.distributed import finish_distributed

    from . import evaluate, reconstruct, train

    out = {"sample": sample_main, "train": train.main, "reconstruct": reconstruct.main, "evaluate": evaluate.main}[cmd](rest)
    finish_distributed()  # under torchrun: every rank leaves the process group together
    return out


if __name__ == "__main__":
    main()
