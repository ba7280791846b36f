"""Atomic checkpoint writes: round trip, crash safety, clear errors, latest lookup."""

from __future__ import annotations

import os

import pytest
import torch

from taichi_sdf.train import checkpoint as ckpt
from taichi_sdf.train.checkpoint import (
    CheckpointError,
    atomic_write_bytes,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)


def test_round_trip(tmp_path):
    model = torch.nn.Linear(3, 2)
    state = {"model": model.state_dict(), "step": 42, "lr": 1e-3, "tags": ["a", "b"]}
    path = tmp_path / "run" / "ckpt_000042.pt"  # parent created on demand
    assert save_checkpoint(path, state) == str(path)
    back = load_checkpoint(path)
    assert back["step"] == 42 and back["lr"] == 1e-3 and back["tags"] == ["a", "b"]
    for k, v in model.state_dict().items():
        assert torch.equal(back["model"][k], v)
    assert os.listdir(path.parent) == ["ckpt_000042.pt"]  # no temp files left


def test_crash_during_write_keeps_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"step": 1, "w": torch.arange(4.0)})
    before = path.read_bytes()

    def crashing_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 partial zip data")  # half a checkpoint, then the "crash"
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crashing_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"step": 2, "w": torch.zeros(4)})
    monkeypatch.undo()

    assert path.read_bytes() == before
    old = load_checkpoint(path)
    assert old["step"] == 1 and torch.equal(old["w"], torch.arange(4.0))
    assert os.listdir(tmp_path) == ["ckpt.pt"]  # the partial temp file was removed


def test_corrupt_file_error_names_file(tmp_path):
    path = tmp_path / "broken.pt"
    save_checkpoint(path, {"w": torch.randn(100)})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated by something other than us
    with pytest.raises(CheckpointError, match="broken.pt"):
        load_checkpoint(path)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="garbage.pt"):
        load_checkpoint(garbage)


def test_missing_file_error_names_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing_here.pt"):
        load_checkpoint(tmp_path / "nothing_here.pt")


def test_atomic_write_bytes(tmp_path):
    path = tmp_path / "a.bin"
    atomic_write_bytes(path, b"one")
    atomic_write_bytes(path, b"two")
    assert path.read_bytes() == b"two"
    assert os.listdir(tmp_path) == ["a.bin"]
    with pytest.raises(TypeError, match="data"):
        atomic_write_bytes(path, "text")


def test_latest_checkpoint(tmp_path):
    assert latest_checkpoint(tmp_path / "missing") is None
    assert latest_checkpoint(tmp_path) is None
    for step in (900, 1000, 50):  # written out of order: the step number decides, not mtime
        save_checkpoint(tmp_path / f"ckpt_{step:06d}.pt", {"step": step})
    (tmp_path / ".ckpt_999999.pt.abc.tmp").write_bytes(b"partial")  # interrupted write: ignored
    (tmp_path / "notes.txt").write_text("x")
    assert latest_checkpoint(tmp_path) == str(tmp_path / "ckpt_001000.pt")
    assert load_checkpoint(latest_checkpoint(tmp_path))["step"] == 1000


def test_save_uses_current_torch_save(monkeypatch, tmp_path):
    # save_checkpoint must look torch.save up at call time (so the crash test above is meaningful).
    calls = []
    real = torch.save
    monkeypatch.setattr(torch, "save", lambda obj, f: (calls.append(1), real(obj, f)))
    ckpt.save_checkpoint(tmp_path / "x.pt", {"a": 1})
    assert calls == [1]
