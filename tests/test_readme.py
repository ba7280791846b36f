"""The README's library example runs as written, and its gradients arrive where it says."""

from __future__ import annotations

import re
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def test_readme_library_example_runs():
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## The library in one screen"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    field, net, r, s = scope["field"], scope["net"], scope["r"], scope["s"]
    assert r.hit.any() and s.hit.any()
    assert field.params.grad is not None and torch.isfinite(field.params.grad).all() and field.params.grad.abs().sum() > 0
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0
