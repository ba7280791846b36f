"""Shared test helpers: compare an op with its torch twin on values and vector-Jacobian products; record
the points a field is asked for."""

from __future__ import annotations

import numpy as np
import torch


def assert_matches_twin(op, twin, inputs, *, atol, rtol=0.0, seed=0):
    """Check op(*inputs) == twin(*inputs) and their VJPs with random cotangents agree.

    Args:
        op, twin: callables returning a tensor or a tuple of tensors.
        inputs: tensors; the floating ones that require grad get gradients compared.

    Every floating output must require grad exactly when the twin's does (a detached output would
    otherwise skip its VJP check silently).
    """
    leaves = [x.detach().clone().requires_grad_(x.requires_grad) for x in inputs]
    leaves_twin = [x.detach().clone().requires_grad_(x.requires_grad) for x in inputs]
    out = op(*leaves)
    out_twin = twin(*leaves_twin)
    out = out if isinstance(out, tuple) else (out,)
    out_twin = out_twin if isinstance(out_twin, tuple) else (out_twin,)
    assert len(out) == len(out_twin)
    gen = torch.Generator().manual_seed(seed)
    loss, loss_twin = 0.0, 0.0
    for i, (a, b) in enumerate(zip(out, out_twin)):
        torch.testing.assert_close(a, b, atol=atol, rtol=rtol)
        if a is None or not a.is_floating_point():
            continue
        # An op output that is wrongly detached (or wrongly differentiable) would otherwise drop out
        # of the VJP comparison unnoticed.
        assert a.requires_grad == b.requires_grad, (
            f"output {i}: requires_grad is {a.requires_grad} for the op but {b.requires_grad} for the twin"
        )
        if a.requires_grad:
            cot = torch.randn(a.shape, generator=gen, dtype=a.dtype).to(a.device)
            loss = loss + (a * cot).sum()
            loss_twin = loss_twin + (b * cot).sum()
    grad_leaves = [x for x in leaves if x.requires_grad]
    if not grad_leaves:
        return
    grads = torch.autograd.grad(loss, grad_leaves)
    grads_twin = torch.autograd.grad(loss_twin, [x for x in leaves_twin if x.requires_grad])
    for g, gt in zip(grads, grads_twin):
        torch.testing.assert_close(g, gt, atol=atol * 10, rtol=rtol)


class Recorder:
    """Wraps a field; keeps every point it was asked for."""

    def __init__(self, fn):
        self.fn, self.points = fn, []

    def __call__(self, p):
        self.points.append(p.detach().clone())
        return self.fn(p)

    def grid_indices(self, lo, step):  # [K, 3] int64 grid coordinates of every queried point
        p = torch.cat(self.points).double().numpy()
        return np.rint((p - lo) / step).astype(np.int64)
