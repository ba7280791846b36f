"""Run plumbing shared by the apps: typed configs, atomic checkpoints, metrics, the loss terms of the
published methods (`losses`) and the trainer base (`trainer.Trainer`: run folder and lock, RNG state,
checkpoints with retention, resume, the loop with a save on Ctrl-C / SIGTERM, log.csv / log.png)."""
