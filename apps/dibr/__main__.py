"""python -m apps.dibr fit [--config configs/dibr/cpu.yaml] [key=value ...] [--resume | --overwrite] [--eval-only]
   python -m apps.dibr train|eval ...   (the single-image network: python -m apps.dibr train --help)

Fits a mesh to the images and masks of a multi-view dataset (the built-in CSG dataset when `data.data` is
not set; any IDR/DTU, NeRF or DVR folder otherwise): a template (icosphere or `model.template=PATH`) deformed
by per-vertex offsets with vertex colours or a UV texture, rendered by the DIB-R / SoftRas rasterizer, and
subdivided when the loss plateaus. Writes mesh.ply (world units, vertex colours; mesh.obj + texture when
textured), renders of held-out views, a turntable and metrics.json to `out`. A folder holding a run is
refused unless --resume (continue it) or --overwrite (replace it); Ctrl-C or SIGTERM saves a checkpoint
after the running iteration and exits (--resume continues).
"""

from __future__ import annotations

import sys

from taichi_sdf.core.errors import app_main
from taichi_sdf.train.cli import train_and_export

from .config import FitConfig
from .trainer import FitTrainer

DEFAULT_PRESET = "configs/dibr/cpu.yaml"
COMMANDS = ("fit", "train", "eval")


def fit(argv=None) -> dict:
    return train_and_export(argv, prog="python -m apps.dibr fit", name="dibr fit",
                            description=__doc__.split("\n\n")[1].replace("\n", " "), config_cls=FitConfig,
                            make_trainer=FitTrainer, default_preset=DEFAULT_PRESET,
                            outputs="mesh.ply, metrics.json, renders/, turntable.gif, log.csv, log.png, checkpoints/")  # fmt: skip


@app_main("python -m apps.dibr")
def main(argv=None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["fit"]:
        return fit(argv[1:])
    if argv[:1] in (["train"], ["eval"]):  # single-image reconstruction
        from .single import main as single_main

        return single_main(argv[1:], command=argv[0])
    usage = f"usage: python -m apps.dibr {{{','.join(COMMANDS)}}} ... (python -m apps.dibr fit --help lists the keys)"
    if argv[:1] in (["-h"], ["--help"]):
        print(usage + "\n\n" + __doc__.split("\n\n")[1])
        raise SystemExit(0)
    raise SystemExit(
        f"{usage}\npython -m apps.dibr: error: expected a command ({', '.join(COMMANDS)}), got {' '.join(argv[:1]) or 'none'}"
    )


if __name__ == "__main__":
    main()
