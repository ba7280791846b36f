"""Lens distortion of the OpenCV model (radial k1, k2, k3 and tangential p1, p2), and the resampling
that turns distorted photographs into pinhole images with the same K (as `cv2.undistort` with
`newCameraMatrix = K`), so the pinhole `Camera` describes them exactly.

COLMAP's SIMPLE_RADIAL (k), RADIAL (k1, k2) and OPENCV (k1, k2, p1, p2) models and nerfstudio's
`k1 k2 k3 p1 p2` keys are all this model with some coefficients zero.
"""

from __future__ import annotations

import torch

COEFFS = ("k1", "k2", "p1", "p2", "k3")


def distort(xy: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
    """Normalised pinhole coordinates `[..., 2]` (x/z, y/z) -> distorted ones `[..., 2]`, for
    `coeffs [5]` = (k1, k2, p1, p2, k3) (COLMAP's and OpenCV's formula)."""
    k1, k2, p1, p2, k3 = coeffs.to(xy.dtype).unbind(-1)
    x, y = xy[..., 0], xy[..., 1]
    r2 = x * x + y * y
    radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + 2 * p2 * x * y + p1 * (r2 + 2 * y * y)
    return torch.stack([xd, yd], -1)


def undistort_views(images: torch.Tensor, masks: torch.Tensor | None, K: torch.Tensor, coeffs: torch.Tensor):
    """Resample distorted views into pinhole views with the same intrinsics.

    Args:
        images: `[N, H, W, 3]` float in [0, 1], photographed through the distorted lens.
        masks: `[N, H, W]` bool or None.
        K: `[N, 3, 3]` intrinsics (pixel centres at +0.5), kept for the output.
        coeffs: `[N, 5]` (k1, k2, p1, p2, k3) per view; views with all zeros are returned unchanged.

    Returns:
        (images `[N, H, W, 3]`, masks `[N, H, W]` or None): each output pixel takes the bilinear sample
        of the input where the lens put its ray; pixels whose ray fell outside the photograph are black
        and outside the mask (mask: the resampled coverage > 0.5).
    """
    N, H, W, _ = images.shape
    images = images.clone()
    masks = None if masks is None else masks.clone()
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float64) + 0.5, torch.arange(W, dtype=torch.float64) + 0.5, indexing="ij")
    for i in range(N):
        if not coeffs[i].abs().max() > 0:
            continue
        k = K[i].double()
        xy = torch.stack([(u - k[0, 2] - k[0, 1] * (v - k[1, 2]) / k[1, 1]) / k[0, 0], (v - k[1, 2]) / k[1, 1]], -1)
        d = distort(xy, coeffs[i].double())
        src_u = k[0, 0] * d[..., 0] + k[0, 1] * d[..., 1] + k[0, 2]
        src_v = k[1, 1] * d[..., 1] + k[1, 2]
        grid = torch.stack([2 * src_u / W - 1, 2 * src_v / H - 1], -1)[None].float()  # align_corners=False: edges at +-1
        planes = [images[i].permute(2, 0, 1)]
        if masks is not None:
            planes.append(masks[i][None].float())
        out = torch.nn.functional.grid_sample(torch.cat(planes)[None].float(), grid, mode="bilinear",
                                              padding_mode="zeros", align_corners=False)[0]  # fmt: skip
        images[i] = out[:3].permute(1, 2, 0).to(images.dtype)
        if masks is not None:
            masks[i] = out[3] > 0.5
    return images, masks
