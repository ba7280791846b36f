"""python -m apps.dvr [--config configs/dvr/cpu.yaml] [key=value ...] [--resume | --overwrite] [--eval-only]
   python -m apps.dvr single ...   (single-view reconstruction: python -m apps.dvr single --help)

Trains DVR (multi-view, per scene) on the configured dataset (the built-in CSG dataset when `data.data` is not set), then
writes renders of held-out views, a turntable, mesh.ply (world units) and metrics.json to `out`.
A folder holding a run is refused unless --resume (continue it) or --overwrite (replace it);
Ctrl-C or SIGTERM saves a checkpoint after the running iteration and exits (--resume continues).
"""

from __future__ import annotations

import sys

from taichi_sdf.core.errors import app_main
from taichi_sdf.train.cli import train_and_export

from .config import DVRConfig
from .trainer import DVRTrainer

DEFAULT_PRESET = "configs/dvr/cpu.yaml"


@app_main("python -m apps.dvr")
def main(argv=None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["single"]:  # DVR single-view reconstruction
        from .single import main as single_main

        return single_main(argv[1:])
    return train_and_export(argv, prog="python -m apps.dvr", name="dvr", description=__doc__.split("\n\n")[1].replace("\n", " "),
                            config_cls=DVRConfig, make_trainer=DVRTrainer, default_preset=DEFAULT_PRESET,
                            outputs="mesh.ply, metrics.json, renders/, turntable.gif, log.csv, log.png, checkpoints/")  # fmt: skip


if __name__ == "__main__":
    main()
