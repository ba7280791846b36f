"""YAML presets of the apps (shipped as package data: `taichi_sdf.configs`)."""
