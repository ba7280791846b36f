"""Run plumbing shared by the apps: typed configs, atomic checkpoints, metrics."""
