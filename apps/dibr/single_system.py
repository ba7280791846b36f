"""The single-image network of nv-tlabs/DIB-R-Single-Image-3D-Reconstruction as one `nn.Module`: an
image encoder (DVR's ResNet-18 or its small ConvEncoder) gives a code; DVR's decoder, evaluated at every
template vertex with that code, gives 3 colour logits and 3 offsets; the vertices are
`template + residual_coef * offset` with a learned scalar `residual_coef` that starts at 0 (so the
untrained network outputs the template), then each mesh is recentred and rescaled so that its largest
|coordinate| is `scale` (0.5: "0.5 for NMR, 0.45 for DIB-R" in the reimplementation's `train/train.py`).
`forward(batch)` renders every object from its supervision views with the DIB-R rasterizer and
returns the loss dict (3 x masked L1 + IoU + 0.01 Laplacian on the offsets + 0.001 flatten)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from taichi_sdf.cameras.camera import Camera
from taichi_sdf.mesh.render import render_mesh
from taichi_sdf.train import losses


def normalize_meshes(vertices: torch.Tensor, scale: float = 0.5) -> torch.Tensor:  # [B, V, 3] -> [B, V, 3]
    """Recentre each mesh on its bounding-box centre and rescale it so its largest |coordinate| is
    `scale` (differentiable; the max picks one vertex, as the original's)."""
    if vertices.dim() != 3 or vertices.shape[-1] != 3:
        raise ValueError(f"vertices: expected shape [B, V, 3], got {list(vertices.shape)}")
    centre = 0.5 * (vertices.amax(1, keepdim=True) + vertices.amin(1, keepdim=True))
    v = vertices - centre
    return v * (scale / v.abs().amax(dim=(1, 2), keepdim=True).clamp_min(1e-8))


def decode_mesh(decoder: nn.Module, template: torch.Tensor, codes: torch.Tensor, residual_coef: torch.Tensor,
                scale: float = 0.5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """The decoder-at-vertices path: `template [V, 3]`, `codes [B, C]`, scalar `residual_coef` ->
    (vertices `[B, V, 3]` normalised by `normalize_meshes`, colours `[B, V, 3]` in (0, 1), offsets
    `[B, V, 3]` = residual_coef * the decoder's offset outputs). The decoder maps `[B, V, 3], [B, C]`
    to `[B, V, 6]`: columns 0..2 colour logits, 3..5 offsets (the reimplementation's order)."""
    if template.dim() != 2 or template.shape[-1] != 3:
        raise ValueError(f"template: expected shape [V, 3], got {list(template.shape)}")
    if codes.dim() != 2:
        raise ValueError(f"codes: expected shape [B, C], got {list(codes.shape)}")
    out = decoder(template.expand(codes.shape[0], -1, -1), codes)  # [B, V, 6]
    if out.shape[-1] != 6:
        raise ValueError(f"decoder: expected 6 outputs per vertex (3 colour + 3 offset), got {out.shape[-1]}")
    offsets = residual_coef * out[..., 3:]
    return normalize_meshes(template + offsets, scale), torch.sigmoid(out[..., :3]), offsets


class SingleImageMeshNet(nn.Module):
    """`predict(images [B, 3, S, S])` -> (vertices, colours, offsets) as `decode_mesh`; `forward(batch)`
    with batch = {"inputs": `[B, 3, S, S]`, "cameras": B * K `Camera`s (object-major: the K views of
    object 0 first), "images": `[B*K, H, W, 3]`, "masks": `[B*K, H, W]` float} returns {"loss", "image",
    "iou", "laplacian", "flatten"} (tensors) and {"mask_iou", "residual_coef"} (floats)."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, template: np.ndarray | torch.Tensor,
                 faces: np.ndarray | torch.Tensor, *, scale: float = 0.5, raster: dict | None = None,
                 weights: dict | None = None) -> None:  # fmt: skip
        super().__init__()
        self.encoder, self.decoder, self.scale = encoder, decoder, float(scale)
        self.raster = dict(raster or {})
        self.weights = {"image": 3.0, "iou": 1.0, "laplacian": 0.01, "flatten": 0.001} | (weights or {})
        t = torch.as_tensor(np.asarray(template), dtype=torch.float32)
        # the template is stored normalised, so that residual_coef = 0 reproduces it exactly
        self.register_buffer("template", normalize_meshes(t[None], self.scale)[0])  # [V, 3]
        self.register_buffer("faces", torch.as_tensor(np.asarray(faces), dtype=torch.int32))  # [F, 3]
        self.residual_coef = nn.Parameter(torch.zeros(()))
        self.zeroed_grads = 0  # non-finite rasterizer gradient entries zeroed since the last reset

    def _finite_grad(self, x: torch.Tensor) -> torch.Tensor:
        """`x` unchanged, with a hook that zeroes non-finite entries of its gradient: the DIB-R backward
        returns NaN for some (edge-on) faces, and one NaN would reach every network weight through the
        shared decoder; the entries zeroed are counted in `zeroed_grads`."""
        if x.requires_grad:

            def hook(g: torch.Tensor) -> torch.Tensor:
                bad = ~torch.isfinite(g)
                if not bad.any():
                    return g
                self.zeroed_grads += int(bad.sum())
                return torch.where(bad, torch.zeros_like(g), g)

            x.register_hook(hook)
        return x

    def predict(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return decode_mesh(self.decoder, self.template, self.encoder(images), self.residual_coef, self.scale)

    def forward(self, batch: dict) -> dict:
        vertices, colors, offsets = self.predict(batch["inputs"])
        cams: Camera = batch["cameras"]
        k = len(cams) // vertices.shape[0]
        if k * vertices.shape[0] != len(cams):
            raise ValueError(f"cameras: expected a multiple of {vertices.shape[0]} (objects), got {len(cams)}")
        rv, rc = self._finite_grad(vertices.repeat_interleave(k, 0)), self._finite_grad(colors.repeat_interleave(k, 0))
        out = render_mesh(rv, self.faces, cams, colors=rc,
                          normals="smooth", shading="none", mode="dibr", background=1.0, **self.raster)  # fmt: skip
        f = self.faces.long()
        gt_mask = batch["masks"]
        terms = {"image": losses.masked_image_l1(out.rgb, batch["images"], gt_mask),
                 "iou": losses.silhouette_iou_loss(out.alpha, gt_mask),
                 "laplacian": losses.laplacian_loss(offsets, f), "flatten": losses.flatten_loss(vertices, f)}  # fmt: skip
        loss = sum(self.weights[name] * t for name, t in terms.items())
        with torch.no_grad():
            pred, m = out.alpha > 0.5, gt_mask > 0.5
            iou = float((pred & m).sum() / (pred | m).sum().clamp_min(1))
        return {"loss": loss, **terms, "mask_iou": iou, "residual_coef": float(self.residual_coef.detach())}
