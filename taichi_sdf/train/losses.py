"""Loss terms of the published methods, each as the original computes it (reductions included), so an
app's numbers match the paper's code. Every function returns a 0-dim tensor.

    rgb_l1          IDR         sum_rays |c - c_gt| / N                       (L1Loss(sum) / num_pixels)
    mask_bce        IDR         BCE(sigmoid(-alpha s*), m) summed / (alpha N)  (s* = min SDF on the ray)
    eikonal         IDR, DIST   mean (||grad f|| - 1)^2
    clamped_sdf_l1  DeepSDF     sum |clamp(f, d) - clamp(s, d)| / S
    latent_l2       DeepSDF     lambda min(1, epoch / warmup) sum_samples ||z|| / S
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["rgb_l1", "mask_bce", "eikonal", "clamped_sdf_l1", "latent_l2"]


def rgb_l1(
    pred: torch.Tensor,  # [M, 3]
    target: torch.Tensor,  # [M, 3]
    num_rays: int | None = None,
) -> torch.Tensor:
    """IDR's RGB loss: `sum |pred - target| / num_rays` over the `M` rays that hit the surface inside
    the mask (`pred`, `target` `[M, 3]`), divided by ALL rays of the batch (`num_rays`, default M),
    as `IDRLoss.get_rgb_loss`: `L1Loss(reduction='sum')(rgb, rgb_gt) / num_pixels`. 0 when M = 0."""
    n = pred.shape[0] if num_rays is None else num_rays
    if pred.shape[0] == 0:
        return pred.new_zeros(())
    return (pred - target).abs().sum() / n


def mask_bce(
    min_sdf: torch.Tensor,  # [K]
    mask: torch.Tensor,  # [K] bool or float
    alpha: float,
    num_rays: int | None = None,
) -> torch.Tensor:
    """IDR's mask loss on the `K` rays outside `hit & mask`: binary cross-entropy of the predicted
    occupancy `sigmoid(-alpha * min_sdf)` (`min_sdf [K]`, the smallest SDF along each ray) against
    the ground-truth mask `[K]`, summed, divided by `alpha * num_rays` (default K), as
    `IDRLoss.get_mask_loss`: `BCEWithLogits(sum)(-alpha * sdf_output, gt) / alpha / num_pixels`."""
    n = min_sdf.shape[0] if num_rays is None else num_rays
    return F.binary_cross_entropy_with_logits(-alpha * min_sdf, mask.to(min_sdf.dtype), reduction="sum") / (alpha * n)


def eikonal(grad: torch.Tensor) -> torch.Tensor:  # [N, 3]
    """Eikonal regulariser `mean_n (||grad_n|| - 1)^2` of spatial SDF gradients `grad [N, 3]`
    (IDR's `get_eikonal_loss`; Gropp et al. 2020). 0 when N = 0."""
    if grad.shape[0] == 0:
        return grad.new_zeros(())
    return (grad.norm(dim=-1) - 1).square().mean()


def clamped_sdf_l1(
    pred: torch.Tensor,  # [N]
    sdf: torch.Tensor,  # [N]
    clamp: float = 0.1,
    num_samples: int | None = None,
) -> torch.Tensor:
    """DeepSDF's data term `sum_n |clamp(pred_n, -d, d) - clamp(sdf_n, -d, d)| / S` for predictions
    `pred [N]` and ground truth `sdf [N]`, d = `clamp`, S = `num_samples` (default N; pass the whole
    batch's count when the batch is split into chunks so that the chunks add up), as
    `train_deep_sdf.py`: `L1Loss(reduction='sum')(clamp(pred), clamp(sdf)) / num_sdf_samples`."""
    S = pred.shape[0] if num_samples is None else num_samples
    return (pred.clamp(-clamp, clamp) - sdf.clamp(-clamp, clamp)).abs().sum() / S


def latent_l2(
    codes: torch.Tensor,  # [N, L]
    weight: float = 1e-4,
    epoch: int | None = None,
    warmup: int = 100,
    num_samples: int | None = None,
) -> torch.Tensor:
    """DeepSDF's code regularisation `weight * min(1, epoch / warmup) * sum_n ||codes_n|| / S` for the
    per-sample codes `codes [N, L]` (one row per SDF sample, so a shape weighs by its sample count),
    S = `num_samples` (default N); `epoch=None` skips the warm-up. As `train_deep_sdf.py`:
    `code_reg_lambda * min(1, epoch / 100) * sum(norm(batch_vecs, dim=1)) / num_sdf_samples` (the
    norm, not its square)."""
    S = codes.shape[0] if num_samples is None else num_samples
    ramp = 1.0 if epoch is None else min(1.0, epoch / warmup)
    return weight * ramp * codes.norm(dim=1).sum() / S
