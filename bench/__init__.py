"""Benchmarks: `python -m bench.<name>`; each prints one table measured in one run."""
