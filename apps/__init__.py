"""Runnable apps: `python -m apps.<name> --help`."""
