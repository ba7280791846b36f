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
    object 0 first), "images": `[B*K, H, W, 3]`, "masks": `[B*K, H, W]` float, and with class templates
    "categories": `[B]` class indices} returns {"loss", "image",
    "iou", "laplacian", "flatten"} (tensors) and {"mask_iou", "residual_coef"} (floats)."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, template: np.ndarray | torch.Tensor,
                 faces: np.ndarray | torch.Tensor, *, scale: float = 0.5, raster: dict | None = None,
                 weights: dict | None = None, class_templates: list[tuple] | None = None) -> None:  # fmt: skip
        """`template [V, 3]` / `faces [F, 3]`: the template of every object; or `class_templates`, one
        (vertices `[V_k, 3]`, faces `[F_k, 3]`) per class index k, picked by the batch's "categories"
        (then `template` / `faces` must be class 0's)."""
        super().__init__()
        self.encoder, self.decoder, self.scale = encoder, decoder, float(scale)
        self.raster = dict(raster or {})
        self.weights = {"image": 3.0, "iou": 1.0, "laplacian": 0.01, "flatten": 0.001} | (weights or {})
        pairs = list(class_templates) if class_templates else [(template, faces)]
        self.n_templates = len(pairs)
        for k, (v, f) in enumerate(pairs):
            t = torch.as_tensor(np.asarray(v), dtype=torch.float32)
            suffix = "" if k == 0 else f"_{k}"
            # templates are stored normalised, so that residual_coef = 0 reproduces them exactly
            self.register_buffer("template" + suffix, normalize_meshes(t[None], self.scale)[0])  # [V_k, 3]
            self.register_buffer("faces" + suffix, torch.as_tensor(np.asarray(f), dtype=torch.int32))  # [F_k, 3]
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

    def template_of(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(vertices `[V_k, 3]`, faces `[F_k, 3]` int32) of template k (0 with a single template)."""
        suffix = "" if k == 0 else f"_{k}"
        return getattr(self, "template" + suffix), getattr(self, "faces" + suffix)

    def _groups(self, categories: torch.Tensor | None, n: int) -> list[tuple[int, torch.Tensor]]:
        """(template index, object rows `[n_k]`) for a batch of `n` objects of classes `categories [n]`."""
        rows = torch.arange(n, device=self.template.device)
        if self.n_templates == 1:
            return [(0, rows)]
        if categories is None:
            raise ValueError(f"categories: the network has {self.n_templates} class templates; give each object's class index")
        categories = categories.to(rows.device)
        if int(categories.min()) < 0 or int(categories.max()) >= self.n_templates:
            raise ValueError(f"categories: expected class indices in [0, {self.n_templates}), got {categories.tolist()}")
        return [(k, rows[categories == k]) for k in range(self.n_templates) if bool((categories == k).any())]

    def predict(self, images: torch.Tensor, categories: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(vertices, colours, offsets) `[B, V, 3]` as `decode_mesh` for `images [B, 3, S, S]` whose objects
        share one template (a single template, or `categories [B]` all equal); faces: `template_of`."""
        groups = self.predict_groups(images, categories)
        if len(groups) != 1:
            raise ValueError("categories: predict takes objects of one class; use predict_groups for a mixed batch")
        return groups[0][1:4]

    def predict_groups(self, images: torch.Tensor, categories: torch.Tensor | None = None) -> list[tuple]:
        """Per template group of the batch `images [B, 3, S, S]` (classes `categories [B]`): (object rows
        `[n_k]`, vertices `[n_k, V_k, 3]`, colours `[n_k, V_k, 3]`, offsets `[n_k, V_k, 3]`, faces `[F_k, 3]`)."""
        codes = self.encoder(images)
        out = []
        for k, rows in self._groups(categories, images.shape[0]):
            template, faces = self.template_of(k)
            out.append((rows, *decode_mesh(self.decoder, template, codes[rows], self.residual_coef, self.scale), faces))
        return out

    def forward(self, batch: dict) -> dict:
        groups = self.predict_groups(batch["inputs"], batch.get("categories"))
        n = batch["inputs"].shape[0]
        cams: Camera = batch["cameras"]
        k = len(cams) // n
        if k * n != len(cams):
            raise ValueError(f"cameras: expected a multiple of {n} (objects), got {len(cams)}")
        terms: dict[str, torch.Tensor] = {}
        inter = union = 0.0
        for rows, vertices, colors, offsets, faces in groups:
            # the views of these objects (object-major: object i's K views are rows i*K .. i*K + K-1)
            views = (rows[:, None] * k + torch.arange(k, device=rows.device)).flatten()
            rv, rc = self._finite_grad(vertices.repeat_interleave(k, 0)), self._finite_grad(colors.repeat_interleave(k, 0))
            out = render_mesh(rv, faces, cams[views], colors=rc,
                              normals="smooth", shading="none", mode="dibr", background=1.0, **self.raster)  # fmt: skip
            f, gt_mask = faces.long(), batch["masks"][views]
            group = {"image": losses.masked_image_l1(out.rgb, batch["images"][views], gt_mask),
                     "iou": losses.silhouette_iou_loss(out.alpha, gt_mask),
                     "laplacian": losses.laplacian_loss(offsets, f), "flatten": losses.flatten_loss(vertices, f)}  # fmt: skip
            share = len(rows) / n  # every term is a mean over the objects of its group
            for name, t in group.items():
                terms[name] = terms.get(name, 0.0) + share * t
            with torch.no_grad():
                pred, m = out.alpha > 0.5, gt_mask > 0.5
                inter, union = inter + float((pred & m).sum()), union + float((pred | m).sum())
        loss = sum(self.weights[name] * t for name, t in terms.items())
        iou = inter / max(union, 1.0)
        return {"loss": loss, **terms, "mask_iou": iou, "residual_coef": float(self.residual_coef.detach())}
