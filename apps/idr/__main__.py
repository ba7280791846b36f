"""python -m apps.idr [--config configs/idr/cpu.yaml] [key=value ...] [--resume | --overwrite] [--eval-only]

Trains IDR on the configured dataset (the built-in CSG dataset when `data.data` is not set), then
writes renders of held-out views, a turntable, mesh.ply (world units) and metrics.json to `out`.
A folder holding a run is refused unless --resume (continue it) or --overwrite (replace it);
Ctrl-C or SIGTERM saves a checkpoint after the running iteration and exits (--resume continues).
"""

from __future__ import annotations

from taichi_sdf.core.errors import app_main
from taichi_sdf.train.cli import train_and_export

from .config import IDRConfig
from .trainer import IDRTrainer

DEFAULT_PRESET = "configs/idr/cpu.yaml"


@app_main("python -m apps.idr")
def main(argv=None) -> dict:
    return train_and_export(argv, prog="python -m apps.idr", name="idr", description=__doc__.split("\n\n")[1].replace("\n", " "),
                            config_cls=IDRConfig, make_trainer=IDRTrainer, default_preset=DEFAULT_PRESET,
                            outputs="mesh.ply, metrics.json, renders/, turntable.gif, log.csv, log.png, checkpoints/")  # fmt: skip


if __name__ == "__main__":
    main()
