"""Pixel sampling for image-supervised training: uniform draws, part of them moved near the object.

Objects often fill a fifth of the frame or less, so uniform sampling (what IDR and DVR do) spends most
rays on background that only the mask/freespace terms use. `object_pixel_lists` precomputes, per view,
the pixels of the mask grown by a margin (the silhouette's surroundings stay in, so the background near
the object still carves it); `draw_pixels` then replaces a share of each uniform draw with draws from
those lists. With `fraction` 0 the draws are exactly the uniform ones (same generator calls).
"""

from __future__ import annotations

import torch


def object_pixel_lists(masks: torch.Tensor, margin: int) -> list[torch.Tensor]:
    """Flat pixel indices of each view's mask grown by `margin` pixels (a square neighbourhood).
    masks: `[V, H, W]` bool -> V tensors `[K_v]` int64 (on the masks' device)."""
    if masks.dim() != 3:
        raise ValueError(f"masks: expected [V, H, W], got shape {tuple(masks.shape)}")
    if margin < 0:
        raise ValueError(f"margin: expected pixels >= 0, got {margin}")
    grown = masks.float()[:, None]
    if margin > 0:
        grown = torch.nn.functional.max_pool2d(grown, 2 * margin + 1, stride=1, padding=margin)
    return [torch.nonzero(g.reshape(-1) > 0)[:, 0] for g in grown[:, 0]]


def draw_pixels(n_pixels: int, count: int, near: torch.Tensor | None, fraction: float,
                generator: torch.Generator) -> torch.Tensor:  # fmt: skip
    """`[count]` flat pixel indices in [0, n_pixels): uniform, with the first round(fraction * count)
    drawn from `near [K]` (e.g. one entry of `object_pixel_lists`) when it is given and not empty.
    Draws on the CPU generator; the result is on `near`'s device (CPU without `near`)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction: expected a share in [0, 1], got {fraction}")
    flat = torch.randint(n_pixels, (count,), generator=generator)
    if near is None:
        return flat
    flat = flat.to(near.device)
    k = round(fraction * count)
    if k > 0 and len(near):
        flat[:k] = near[torch.randint(len(near), (k,), generator=generator).to(near.device)]
    return flat
