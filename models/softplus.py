"""Softplus(beta) with fewer passes over memory than `nn.Softplus`, first and second derivatives included.

    softplus(x) = log(1 + exp(beta x)) / beta = relu(x) + log(1 + exp(-|beta x|)) / beta

Why not `torch.nn.functional.softplus`: its CPU kernel evaluates `log1p`, the slowest transcendental
torch vectorises (on this project's 2-core CPU: ~2x `exp` + `log` together), and its backward
recomputes `exp` and a division from the input. Here the forward evaluates one `exp` and one `log`,
in place when the caller owns the input, and, when a gradient will be needed, keeps the derivative
sigmoid(beta x) from the same `exp`, so the backward is one multiplication. The second derivative
beta s (1 - s) (the eikonal loss's double backward) comes from the same kept `s`.

Accuracy: `log(1 + e)` instead of `log1p(e)` costs an absolute error below eps(dtype) / beta where the
result is tiny (beta x < -17 in float32); elsewhere it matches `nn.Softplus` to rounding. Above
torch's threshold (beta x > 20) both give x (to rounding) and a derivative of 1 (to rounding).
Derivatives of higher order are exact too (they recompute s from the output, a rare path).
"""

from __future__ import annotations

import torch


def _softplus_(x: torch.Tensor, beta: float, keep_slope: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Overwrite `x` with softplus_beta(x); also return sigmoid(beta x) when `keep_slope`."""
    e = torch.abs(x).mul_(-beta).exp_()  # exp(-|beta x|) in (0, 1]: never overflows
    if not keep_slope:
        log_u = e.add_(1).log_()
        return x.clamp_min_(0).add_(log_u, alpha=1.0 / beta), None
    r = torch.add(e, 1).reciprocal_()  # 1 / (1 + e)
    slope = torch.where(x >= 0, r, e.mul_(r))  # sigmoid(beta x) = 1/(1+e) (x >= 0), e/(1+e) (x < 0)
    return x.clamp_min_(0).sub_(r.log_(), alpha=1.0 / beta), slope


class _Softplus(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, beta: float, inplace: bool) -> torch.Tensor:
        y, slope = _softplus_(x if inplace else x.clone(), beta, keep_slope=True)
        if inplace:
            ctx.mark_dirty(x)
        ctx.save_for_backward(y, slope)
        ctx.beta = beta
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        y, slope = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: the result must depend on x, through y
            return _SoftplusGrad.apply(grad, y, slope, ctx.beta), None, None
        return grad * slope, None, None


class _SoftplusGrad(torch.autograd.Function):
    """grad * s with s = sigmoid(beta x) = 1 - exp(-beta y): differentiable in grad and in y."""

    @staticmethod
    def forward(ctx, grad: torch.Tensor, y: torch.Tensor, slope: torch.Tensor, beta: float) -> torch.Tensor:
        ctx.save_for_backward(grad, y, slope)
        ctx.beta = beta
        return grad * slope

    @staticmethod
    def backward(ctx, grad_grad: torch.Tensor):
        grad, y, slope = ctx.saved_tensors
        if torch.is_grad_enabled():  # a third derivative is asked for: s as a recorded function of y
            slope = -torch.expm1(-ctx.beta * y)
        # d s / d y = beta (1 - s); the chain through y's own node adds the factor d y / d x = s.
        grad_y = grad_grad * grad * (1 - slope) * ctx.beta if ctx.needs_input_grad[1] else None
        return grad_grad * slope if ctx.needs_input_grad[0] else None, grad_y, None, None


def softplus(x: torch.Tensor, beta: float = 1.0, *, inplace: bool = False) -> torch.Tensor:
    """Softplus(beta) of `x` (any shape), with first and second derivatives (see the module docstring).

    Args:
        x: the input; with `inplace` it is overwritten (only where no one else keeps it, e.g. the fresh
            output of a linear layer).
        beta: > 0, the sharpness (IDR: 100).
    """
    if beta <= 0:
        raise ValueError(f"beta: expected > 0, got {beta}")
    if torch.is_grad_enabled() and x.requires_grad:
        return _Softplus.apply(x, beta, inplace)
    return _softplus_(x if inplace else x.clone(), beta, keep_slope=False)[0]
