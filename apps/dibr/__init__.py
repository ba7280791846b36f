"""DIB-R: mesh reconstruction from images (`python -m apps.dibr fit`: multi-view mesh fitting)."""
