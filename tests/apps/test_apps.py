"""Every app runs end to end at tiny size (smoke tests that check what they wrote)."""

import json

import imageio.v3 as iio
import numpy as np
import pytest
import trimesh

from apps import demo


def test_demo_writes_images_mesh_and_metrics(tmp_path):
    metrics = demo.main(["--config", "configs/demo/default.yaml", "scene=sphere", "views=2", "size=32",
                         "mesh_resolution=32", f"out={tmp_path}", "--headless"])  # fmt: skip
    img = iio.imread(tmp_path / "views" / "000_normal.png")
    assert img.shape[:2] == (32, 32)
    # The sphere (radius 0.5 seen from 2.75 with a 40 degree fov) covers the centre, not the corners.
    assert img[16, 16].max() > 0 and img[0, 0].max() == 0
    mesh = trimesh.load(tmp_path / "mesh.ply")
    r = np.linalg.norm(mesh.vertices, axis=1)
    assert abs(r.mean() - 0.5) < 0.01
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["mesh_sdf_residual_max"] < 0.01 and saved == json.loads(json.dumps(metrics))
    assert (tmp_path / "turntable.gif").exists() and (tmp_path / "config.yaml").exists()


def test_check_cameras_tool(tmp_path):
    import torch

    from apps import check_cameras
    from taichi_sdf.data.multiview import save_idr, sphere_dataset

    save_idr(sphere_dataset(n_views=4, width=24, height=24, radius=0.5), tmp_path / "scan")
    g = torch.Generator().manual_seed(0)
    pts = torch.randn(2000, 3, generator=g, dtype=torch.float64)
    np.save(tmp_path / "surface.npy", (0.5 * pts / pts.norm(dim=-1, keepdim=True)).numpy())
    res = check_cameras.main([str(tmp_path / "scan"), "--points", str(tmp_path / "surface.npy")])
    assert res["fraction_inside"] == 1.0
    np.save(tmp_path / "shifted.npy", (0.5 * pts / pts.norm(dim=-1, keepdim=True) + torch.tensor([0.4, 0.0, 0.0], dtype=torch.float64)).numpy())
    assert check_cameras.main([str(tmp_path / "scan"), "--points", str(tmp_path / "shifted.npy")])["fraction_inside"] < 0.9


@pytest.mark.slow
def test_example_runs(tmp_path):
    """Every example is smoke-tested: the prototyping example renders and prints gradients."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, str(root / "examples" / "my_first_sdf.py")], cwd=tmp_path,
                         capture_output=True, text=True, env={**__import__("os").environ, "TAICHI_SDF_ARCH": "cpu"})  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert "d(mean hit distance)/d(params)" in out.stdout
    img = iio.imread(tmp_path / "my_first_sdf.png")
    assert img.shape[:2] == (256, 256) and img[128, 128].max() > 0
