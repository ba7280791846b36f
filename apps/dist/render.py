"""DIST's differentiable SDF renderer on the project's DIST marcher: per-pixel camera z-depth,
silhouette, normals and the min-|SDF| value of a DeepSDF shape seen by one camera."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from taichi_sdf.cameras.camera import Camera
from taichi_sdf.implicit.marchers import DISTMarcher
from taichi_sdf.implicit.wavefront import march_field

from .config import RenderConfig


class SDFImage(NamedTuple):
    """One rendered view (`[H, W]` images); depth, normal and min_sdf are differentiable."""

    depth: torch.Tensor  # [H, W] camera z of the hit, 0 where no hit
    mask: torch.Tensor  # [H, W] bool, the ray converged on the surface
    normal: torch.Tensor  # [H, W, 3] world unit normals (0 where no hit)
    min_sdf: torch.Tensor  # [H, W] f at the ray's smallest-|f| sample (DIST's silhouette signal)
    points: torch.Tensor  # [H, W, 3] world hit points (min-|f| points where no hit)
    evals: int  # field evaluations spent


def marcher_of(rc: RenderConfig) -> DISTMarcher:
    kw = dict(bound_radius=rc.bound_radius, eps=rc.eps, march_steps=rc.march_steps, alpha=rc.alpha, clamp=rc.clamp,
              scales=tuple(rc.scales), steps_per_scale=tuple(rc.steps_per_scale))  # fmt: skip
    if rc.gradient == "approximate":
        kw["buffer_size"] = rc.buffer_size
    return DISTMarcher(**kw)


def render_sdf(
    fn: Callable[[torch.Tensor], torch.Tensor],
    camera: Camera,
    rc: RenderConfig,
    *,
    normals: bool = True,
) -> SDFImage:
    """Render the SDF `fn: points [M, 3] -> [M]` seen by one `camera` with DIST's marcher (pyramid
    over the image). Gradients reach `fn`'s parameters / code and the camera (through the rays).
    `normals=False` skips the second-order graph of the normals (no normal loss)."""
    if len(camera) != 1:
        raise ValueError(f"camera: expected one camera, got {len(camera)}")
    H, W = camera.height, camera.width
    o, d = (x[0] for x in camera.image_rays())
    o, d = o.reshape(-1, 3), d.reshape(-1, 3)
    kw = {"gradient": "approximate"} if rc.gradient == "approximate" else {}
    res = march_field(fn, o, d, marcher=marcher_of(rc), image_shape=(1, H, W), create_graph=normals, **kw)
    z_axis = camera.R[0, 2]  # the camera's optical axis in world coordinates
    depth = torch.where(res.hit, res.t * (d @ z_axis.to(d)), torch.zeros_like(res.t))
    n = torch.where(res.hit[:, None], res.normals, torch.zeros_like(res.normals))
    return SDFImage(depth.reshape(H, W), res.hit.reshape(H, W), n.reshape(H, W, 3), res.min_sdf.reshape(H, W),
                    res.points.reshape(H, W, 3), int(res.num_evals))  # fmt: skip
