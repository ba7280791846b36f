"""Data on disk: multi-view datasets (IDR/DTU, NeRF), the DeepSDF layout, image io."""
