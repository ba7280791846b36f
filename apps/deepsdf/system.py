"""DeepSDF as one `nn.Module` ("system"): the decoder and the training shapes' latent codes, whose
`forward(batch)` returns the loss dict, so a `DistributedDataParallel` wrapper's forward is the
training step's only entry to the parameters (codes included)."""

from __future__ import annotations

import torch
from torch import nn

from taichi_sdf.models.deepsdf import DeepSDFDecoder, LatentCodes
from taichi_sdf.train import losses


class DeepSDFSystem(nn.Module):
    """`forward(batch)` with batch = {"shape": [N] int64 shape index per sample, "xyz": [N, 3],
    "sdf": [N], "epoch": int (from 1, for the code-norm warm-up), "num_samples": int (the whole
    batch's S, so chunks of a split batch add up)} returns {"loss", "data", "code_reg"}: the clamped
    L1 data term plus DeepSDF's code regularisation (`train_deep_sdf.py`)."""

    def __init__(self, decoder: DeepSDFDecoder, latents: LatentCodes, clamp: float = 0.1, code_reg: bool = True,
                 code_reg_lambda: float = 1e-4, code_reg_warmup: int = 100) -> None:  # fmt: skip
        super().__init__()
        self.decoder, self.latents = decoder, latents
        self.clamp, self.code_reg, self.code_reg_lambda, self.code_reg_warmup = clamp, code_reg, code_reg_lambda, code_reg_warmup

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        codes = self.latents(batch["shape"])
        pred = self.decoder(codes, batch["xyz"])
        S = batch.get("num_samples")
        data = losses.clamped_sdf_l1(pred, batch["sdf"], self.clamp, S)
        reg = torch.zeros((), device=pred.device)
        if self.code_reg and self.code_reg_lambda > 0:
            reg = losses.latent_l2(codes, self.code_reg_lambda, batch["epoch"], self.code_reg_warmup, S)
        return {"loss": data + reg, "data": data, "code_reg": reg}
