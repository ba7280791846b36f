"""The Taichi <-> torch bridge: turn Taichi kernels into differentiable torch ops.

A `KernelOp` describes one op by its kernels; `KernelOp.__call__` runs it through a private
`torch.autograd.Function`. Calling convention of every kernel (all tensors are passed zero-copy as
`ti.types.ndarray` arguments, scalars as plain kernel arguments):

    forward(*inputs, *outputs, *scalars)
    backward(*inputs, *outputs, *grad_outputs, *grad_inputs, *scalars)   # hand-written, optional

Without a hand-written backward, gradients come from Taichi's reverse-mode autodiff
(`forward.grad`) run on fresh aliases of the tensors: the aliases share storage with the user's
tensors but carry their own `.grad` buffers, which the bridge creates (zeros for inputs, a copy of the
upstream gradient for outputs) and discards. The user's tensors' `.grad` are never read or written,
so there is nothing to save and restore, no stale gradient can leak in (taichi#8101, #8339) and a
second call gives the same result as the first.

Only use Taichi autodiff for loop-free kernels (or loops with a static trip count): Taichi 1.7 gives
silently wrong gradients through loops with a dynamic trip count. Marching loops get a hand-written
backward or implicit differentiation instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from taichi_sdf.core import runtime

Allocate = Callable[..., Sequence[torch.Tensor]]


@dataclass(frozen=True, eq=False)
class KernelOp:
    """A differentiable op made of Taichi kernels.

    Args:
        name: used in error messages.
        forward: `@ti.kernel` writing the outputs from the inputs.
        allocate: `(*inputs, *alloc_args) -> outputs`; allocates the output tensors on the inputs'
            device (zero-filled where the kernel writes only some elements).
        backward: optional hand-written `@ti.kernel`; it must *accumulate* into the zero-filled
            grad_inputs. When None, Taichi autodiff of `forward` is used.
        input_names: names of the inputs, used in error messages.
    """

    name: str
    forward: Callable
    allocate: Allocate
    backward: Callable | None = None
    input_names: tuple[str, ...] = field(default=())

    def __call__(
        self, *inputs: torch.Tensor, scalars: Sequence = (), alloc_args: Sequence = ()
    ) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """Run the op. `scalars` are passed to the kernels after the tensors; `alloc_args` only to
        `allocate` (e.g. an image size). Returns one tensor or a tuple, as `allocate` made them."""
        runtime.ensure_initialized()
        return _KernelFunction.apply(self, tuple(scalars), tuple(alloc_args), *inputs)


def _is_float(t: torch.Tensor) -> bool:
    return t.is_floating_point()


class _KernelFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, op: KernelOp, scalars: tuple, alloc_args: tuple, *inputs: torch.Tensor):
        # Detached aliases: Taichi would otherwise allocate `.grad` on tensors that require grad,
        # even in a forward call (taichi#8340).
        inputs = tuple(t.detach() for t in inputs)
        outputs = tuple(op.allocate(*inputs, *alloc_args))
        op.forward(*inputs, *outputs, *scalars)
        ctx.op = op
        ctx.scalars = scalars
        ctx.save_for_backward(*inputs, *outputs)
        ctx.n_inputs = len(inputs)
        ctx.mark_non_differentiable(*[o for o in outputs if not _is_float(o)])
        return outputs if len(outputs) > 1 else outputs[0]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, *grad_outputs: torch.Tensor):
        op: KernelOp = ctx.op
        # Detach: saved outputs carry this node as grad_fn, and Taichi would touch their `.grad`.
        saved = tuple(t.detach() for t in ctx.saved_tensors)
        inputs, outputs = saved[: ctx.n_inputs], saved[ctx.n_inputs :]
        needs = ctx.needs_input_grad[3:]
        if not any(needs):
            return (None, None, None) + (None,) * len(inputs)
        grad_outputs = tuple(
            (torch.zeros_like(o) if g is None else g.contiguous()) if _is_float(o) else None
            for o, g in zip(outputs, grad_outputs)
        )
        if op.backward is not None:
            grad_inputs = tuple(torch.zeros_like(t) if _is_float(t) else None for t in inputs)
            float_grad_outputs = tuple(g for g in grad_outputs if g is not None)
            float_grad_inputs = tuple(g for g in grad_inputs if g is not None)
            op.backward(*inputs, *outputs, *float_grad_outputs, *float_grad_inputs, *ctx.scalars)
        else:
            grad_inputs = _taichi_autodiff(op, inputs, outputs, grad_outputs, ctx.scalars)
        return (None, None, None) + tuple(g if need else None for g, need in zip(grad_inputs, needs))


def _alias_with_grad(t: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    alias = t.detach().requires_grad_(True)
    alias.grad = grad
    return alias


def _taichi_autodiff(op: KernelOp, inputs, outputs, grad_outputs, scalars):
    # Every floating input gets a zero adjoint buffer (Taichi's grad kernel writes adjoints of all of
    # them); integer tensors get none. The upstream gradient is cloned because the adjoint kernel
    # may consume (zero) the outputs' adjoints.
    grad_inputs = tuple(torch.zeros_like(t) if _is_float(t) else None for t in inputs)
    in_alias = tuple(t if g is None else _alias_with_grad(t, g) for t, g in zip(inputs, grad_inputs))
    out_alias = tuple(
        o if g is None else _alias_with_grad(o, g.clone()) for o, g in zip(outputs, grad_outputs)
    )
    op.forward.grad(*in_alias, *out_alias, *scalars)
    return grad_inputs
