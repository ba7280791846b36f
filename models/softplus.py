"""Softplus(beta) exactly as `nn.Softplus` computes it, in place when no gradient is recorded.

    softplus(x) = log(1 + exp(beta x)) / beta   (x itself where beta x > 20, torch's threshold)

Values and derivatives of every order are torch's own kernels (`softplus`, `softplus_backward`,
`softplus_double_backward`), so they equal `nn.Softplus` bit for bit. Without grad (the tracer's
marching: most of the network's evaluations) the result overwrites its input when the caller owns it,
which saves an allocation and a pass over fresh memory (~10% of the activation's CPU time at
[1000, 128] float32).

Measured and rejected on the 2-core CPU (bench/train_step.py; one thread, CPU time, interleaved):
- relu(x) + log(1 + exp(-|beta x|)) / beta (exp and log instead of torch's log1p, several passes):
  slower than torch's single pass without grad, and its grad forward (keeping sigmoid(beta x)) slower;
- exp and log1p as polynomials in torch ops (range reduction, Horner): 5x slower;
- a custom autograd Function keeping sigmoid(beta x) for a cheaper double backward: 18% less for one
  activation's forward + double backward in isolation, but the IDR eikonal pattern (create_graph
  derivative at 1536 points + first-order values + backward, cpu-preset network) took 41.8 ms
  against 35.4 ms with torch's own derivatives;
- torch.compile (see `SDFNetwork.compile_no_grad`).
The activation costs what torch's vectorised exp + log1p cost here; the savings are elsewhere in the
network (`SDFNetwork`'s fused formulation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

THRESHOLD = 20.0  # torch's default: above beta x = 20 softplus returns x

_softplus_kernel = torch._C._nn.softplus  # the kernel behind F.softplus; it accepts out= (F.softplus does not)


def softplus(x: torch.Tensor, beta: float = 1.0, *, inplace: bool = False) -> torch.Tensor:
    """Softplus(beta) of `x` (any shape), equal to `nn.Softplus(beta)` in values and derivatives.

    Args:
        x: the input; with `inplace` and no gradient recorded it is overwritten (only where no one else
            keeps it, e.g. the fresh output of a linear layer). With a gradient, never (the backward
            needs it).
        beta: > 0, the sharpness (IDR: 100).
    """
    if beta <= 0:
        raise ValueError(f"beta: expected > 0, got {beta}")
    if torch.is_grad_enabled() and x.requires_grad:
        return F.softplus(x, beta, THRESHOLD)
    return _softplus_kernel(x, beta, THRESHOLD, out=x) if inplace else _softplus_kernel(x, beta, THRESHOLD)
