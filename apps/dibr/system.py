"""Multi-view mesh fitting as one `nn.Module` ("system"): a template deformed by per-vertex offsets, its
albedo (vertex colours or a UV texture, both as logits behind a sigmoid as DIB-R's colour head), an
optional light and per-view pose refinement. `forward(batch)` renders the batch's views with
`taichi_sdf.mesh.render.render_mesh` and returns the loss dict (DIB-R / SoftRas terms of
`taichi_sdf.train.losses`); `subdivide()` is the coarse-to-fine step."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from taichi_sdf.cameras import camera as C
from taichi_sdf.cameras.pose import PoseRefinement
from taichi_sdf.mesh.render import render_mesh
from taichi_sdf.mesh.shading import DirectionalLight
from taichi_sdf.train import losses

from .template import Template, spherical_uv, subdivide


def _logit(p: torch.Tensor) -> torch.Tensor:
    p = p.clamp(1e-4, 1 - 1e-4)
    return torch.log(p / (1 - p))


class MeshFitSystem(nn.Module):
    """`forward(batch)` with batch = {"views": `[B]` int64 view indices (for pose refinement),
    "cameras": B `Camera`s (unrefined), "images": `[B, H, W, 3]` in [0, 1], "masks": `[B, H, W]` float}
    returns {"loss", "image", "iou", "laplacian", "flatten", "edge", "normal"} (tensors; loss = the
    weighted sum) and the diagnostics {"psnr", "mask_iou", "vertices"} (floats)."""

    def __init__(self, template: Template, *, num_views: int, albedo: str = "vertex", texture_size: int = 64,
                 init_color: float = 0.5, mode: str = "dibr", shading: str = "none", learn_light: bool = False,
                 raster: dict | None = None, train_cameras: bool = False, weights: dict | None = None,
                 laplacian: str = "uniform") -> None:  # fmt: skip
        super().__init__()
        if albedo not in ("vertex", "texture"):
            raise ValueError(f"albedo: expected 'vertex' or 'texture', got {albedo!r}")
        if shading not in ("none", "lambert", "sh"):
            raise ValueError(f"shading: expected 'none', 'lambert' or 'sh', got {shading!r}")
        self.albedo, self.mode, self.shading, self.laplacian = albedo, mode, shading, laplacian
        self.raster = dict(raster or {})
        self.weights = {"image": 3.0, "iou": 1.0, "laplacian": 0.03, "flatten": 3e-4, "edge": 0.0, "normal": 0.0} | (
            weights or {}
        )
        self.level = 0  # subdivisions done
        v = torch.as_tensor(template.vertices, dtype=torch.float32)
        self.register_buffer("base", v)  # [V, 3] the template (moved into the fitted mesh at each subdivision)
        self.register_buffer("faces", torch.as_tensor(template.faces, dtype=torch.int32))  # [F, 3]
        self.offsets = nn.Parameter(torch.zeros_like(v))  # [V, 3]
        init = _logit(torch.tensor(float(init_color)))
        if albedo == "vertex":
            self.color_logit = nn.Parameter(torch.full_like(v, float(init)))  # [V, 3]
        else:
            if template.uv is None:
                uv, uv_faces = spherical_uv(template.vertices, template.faces)
            else:
                uv, uv_faces = template.uv, template.uv_faces
            self.register_buffer("uv", torch.as_tensor(uv, dtype=torch.float32))  # [Vuv, 2]
            self.register_buffer("uv_faces", torch.as_tensor(uv_faces, dtype=torch.int32))  # [F, 3]
            self.texture_logit = nn.Parameter(torch.full((texture_size, texture_size, 3), float(init)))  # [T, T, 3]
        sun = DirectionalLight()
        if shading == "sh":
            self.light = nn.Parameter(sun.to_sh()[0], requires_grad=learn_light)  # [9, 3] radiance coefficients
        elif shading == "lambert":
            self.light_color = nn.Parameter(torch.full((3,), float(sun.color)), requires_grad=learn_light)
            self.light_ambient = nn.Parameter(torch.full((3,), float(sun.ambient)), requires_grad=learn_light)
        self.poses = PoseRefinement(num_views) if train_cameras else None

    # -- the mesh ----------------------------------------------------------------------------------

    @property
    def vertices(self) -> torch.Tensor:
        """`[V, 3]` fitted vertices in the normalised frame (differentiable)."""
        return self.base + self.offsets

    def colors(self) -> torch.Tensor | None:
        """`[V, 3]` vertex colours in (0, 1), None with a texture."""
        return torch.sigmoid(self.color_logit) if self.albedo == "vertex" else None

    def texture(self) -> torch.Tensor | None:
        """`[T, T, 3]` texture in (0, 1) (row 0 = v = 1), None with vertex colours."""
        return torch.sigmoid(self.texture_logit) if self.albedo == "texture" else None

    def light_arg(self):
        if self.shading == "sh":
            return self.light
        if self.shading == "lambert":
            return DirectionalLight(color=self.light_color, ambient=self.light_ambient)
        return None

    def camera(self, cams: C.Camera, views: torch.Tensor) -> C.Camera:
        return cams if self.poses is None else self.poses.refine(cams, views)

    def render(self, cams: C.Camera, mode: str | None = None, background: float = 0.0):
        """`MeshRender` of the current mesh seen by `cams` (mode default: the fit's)."""
        tex = self.texture()
        texture = None if tex is None else (tex, self.uv, self.uv_faces)
        mode = mode or self.mode
        raster = self.raster if mode != "hard" else {}
        return render_mesh(self.vertices, self.faces, cams, colors=self.colors(), texture=texture, normals="smooth",
                           shading=self.shading, light=self.light_arg(), mode=mode, address="repeat",
                           background=background, **raster)  # fmt: skip

    # -- the loss ----------------------------------------------------------------------------------

    def regularisers(self) -> dict[str, torch.Tensor]:
        v, f = self.vertices, self.faces.long()
        zero = v.new_zeros(())
        w = self.weights
        return {
            "laplacian": losses.laplacian_loss(v, f, kind=self.laplacian) if w["laplacian"] else zero,
            "flatten": losses.flatten_loss(v, f) if w["flatten"] else zero,
            "edge": losses.edge_length_loss(v, f) if w["edge"] else zero,
            "normal": losses.normal_consistency_loss(v, f) if w["normal"] else zero,
        }

    def forward(self, batch: dict) -> dict:
        cams = self.camera(batch["cameras"], batch["views"])
        out = self.render(cams)
        gt_rgb, gt_mask = batch["images"], batch["masks"]
        terms = {"image": losses.masked_image_l1(out.rgb, gt_rgb, gt_mask),
                 "iou": losses.silhouette_iou_loss(out.alpha, gt_mask)} | self.regularisers()  # fmt: skip
        loss = sum(self.weights[k] * t for k, t in terms.items())
        with torch.no_grad():
            m = gt_mask > 0.5
            mse = ((out.rgb - gt_rgb).square().mean(-1)[m]).mean() if m.any() else out.rgb.new_tensor(float("nan"))
            pred = out.alpha > 0.5
            iou = (pred & m).sum() / (pred | m).sum().clamp_min(1)
        return {"loss": loss, **terms, "psnr": float(-10 * torch.log10(mse.clamp_min(1e-10))), "mask_iou": float(iou),
                "vertices": float(self.base.shape[0])}  # fmt: skip

    # -- coarse-to-fine ----------------------------------------------------------------------------

    @torch.no_grad()
    def subdivide(self, method: str = "midpoint") -> None:
        """Split every face into four at the current fit: the fitted vertices become the new template
        (offsets restart at 0) and the colours (or the uv mesh) are carried to the new vertices. The
        parameters are new tensors, so the optimiser must be rebuilt."""
        colors = self.colors()
        uv = self.uv.double().cpu().numpy() if self.albedo == "texture" else None
        uvf = self.uv_faces.long().cpu().numpy() if self.albedo == "texture" else None
        v, f, c, uv, uvf = subdivide(self.vertices.double().cpu().numpy(), self.faces.long().cpu().numpy(),
                                     None if colors is None else colors.double().cpu().numpy(), uv, uvf, method)  # fmt: skip
        dev = self.base.device
        self.base = torch.as_tensor(np.ascontiguousarray(v), dtype=torch.float32, device=dev)
        self.faces = torch.as_tensor(np.ascontiguousarray(f), dtype=torch.int32, device=dev)
        self.offsets = nn.Parameter(torch.zeros_like(self.base))
        if c is not None:
            self.color_logit = nn.Parameter(_logit(torch.as_tensor(c, dtype=torch.float32, device=dev)))
        if uv is not None:
            self.uv = torch.as_tensor(np.ascontiguousarray(uv), dtype=torch.float32, device=dev)
            self.uv_faces = torch.as_tensor(np.ascontiguousarray(uvf), dtype=torch.int32, device=dev)
        self.level += 1

    def resize_like(self, state: dict) -> None:
        """Give the mesh tensors the shapes of a saved `state_dict` (taken at another level), so that
        `load_state_dict(state)` fits."""
        for name in ("base", "faces", "uv", "uv_faces", "offsets", "color_logit"):
            if name in state and hasattr(self, name) and getattr(self, name).shape != state[name].shape:
                old = getattr(self, name)
                new = old.new_empty(state[name].shape)
                setattr(self, name, nn.Parameter(new) if isinstance(old, nn.Parameter) else new)

    def param_groups(self, lr: float, color_lr: float, light_lr: float, camera_lr: float, scale: float = 1.0) -> list[dict]:
        """Adam groups: offsets, albedo, light, poses (the learning rates times `scale`)."""
        albedo = [self.color_logit] if self.albedo == "vertex" else [self.texture_logit]
        light = [p for n, p in self.named_parameters() if n.startswith("light") and p.requires_grad]
        groups = [{"params": [self.offsets], "lr": lr * scale, "name": "offsets"},
                  {"params": albedo, "lr": color_lr * scale, "name": "albedo"}]  # fmt: skip
        if light:
            groups.append({"params": light, "lr": light_lr, "name": "light"})
        if self.poses is not None:
            groups.append({"params": list(self.poses.parameters()), "lr": camera_lr, "name": "poses"})
        return groups
