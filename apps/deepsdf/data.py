"""DeepSDF's SDF samples of a split, held in memory, and the per-shape sampler of the original's
`unpack_sdf_samples` (half the samples from `pos`, half from `neg`, uniformly with replacement)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from taichi_sdf.data.deepsdf import Instance, load_sdf_samples, load_split


def find_split(root: str | Path, split: str | None, which: str) -> Path:
    """The split JSON to use: `split` if given, else the single `<root>/splits/*_<which>.json`."""
    if split is not None:
        path = Path(split)
        if not path.is_file():
            raise FileNotFoundError(f"data.{which}_split: split file {path} not found")
        return path
    found = sorted((Path(root) / "splits").glob(f"*_{which}.json"))
    if len(found) != 1:
        what = "no" if not found else f"{len(found)} ({', '.join(p.name for p in found)})"
        raise FileNotFoundError(
            f"data.{which}_split: not set and {what} files match {Path(root) / 'splits' / f'*_{which}.json'}; "
            f"set data.{which}_split=PATH (or run `python -m apps.deepsdf sample` first)"
        )
    return found[0]


def load_split_instances(root: str | Path, split_file: str | Path) -> list[Instance]:
    """The split's instances; every one must have its SdfSamples npz (the error names the split and the file)."""
    instances = load_split(split_file)
    if not instances:
        raise ValueError(f"{split_file}: the split lists no instances")
    missing = [it.sdf_samples(root) for it in instances if not it.sdf_samples(root).is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise FileNotFoundError(f"{split_file} names instances without SDF samples: {missing[0]} not found{more}")
    return instances


class SDFSamples:
    """The `pos [P_i, 4]` and `neg [N_i, 4]` samples (x, y, z, sdf) of every shape of a split, in memory.

    All shapes' samples are stored in two flat tensors with per-shape offsets so that drawing a batch is
    a few vectorised ops, whatever the number of shapes.
    """

    def __init__(self, root: str | Path, split_file: str | Path) -> None:
        self.root, self.split_file = Path(root), Path(split_file)
        self.instances = load_split_instances(root, split_file)
        pos, neg = [], []
        for it in self.instances:
            p, n = load_sdf_samples(it.sdf_samples(root))
            pos.append(p)
            neg.append(n)
        self.pos, self.pos_start, self.pos_count = _flatten(pos)
        self.neg, self.neg_start, self.neg_count = _flatten(neg)

    def __len__(self) -> int:
        return len(self.instances)

    def shape_samples(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(pos `[P, 4]`, neg `[N, 4]`) of shape `i`."""
        s, c = int(self.pos_start[i]), int(self.pos_count[i])
        t, d = int(self.neg_start[i]), int(self.neg_count[i])
        return self.pos[s : s + c], self.neg[t : t + d]

    def sample(self, indices: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """`[B, n, 4]` samples of the shapes `indices [B]`: n // 2 from pos then n - n // 2 from neg
        (all from the other side for a shape that has none on one side)."""
        return sample_pos_neg(self.pos, self.pos_start[indices], self.pos_count[indices],
                              self.neg, self.neg_start[indices], self.neg_count[indices], n, generator)  # fmt: skip


def _flatten(arrays: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    counts = torch.tensor([len(a) for a in arrays], dtype=torch.int64)
    starts = torch.cumsum(counts, 0) - counts
    flat = torch.from_numpy(np.concatenate(arrays, 0)) if arrays else torch.zeros(0, 4)
    return flat, starts, counts


def sample_pos_neg(pos: torch.Tensor, pos_start: torch.Tensor, pos_count: torch.Tensor, neg: torch.Tensor,
                   neg_start: torch.Tensor, neg_count: torch.Tensor, n: int,
                   generator: torch.Generator | None = None) -> torch.Tensor:  # fmt: skip
    """Draw `[B, n, 4]` samples for B shapes whose samples are `pos[start : start + count]` (same for neg)."""
    B = pos_start.shape[0]
    half = n // 2
    n_pos = torch.where(neg_count == 0, n, torch.where(pos_count == 0, 0, half))  # [B]
    u = torch.rand(B, n, generator=generator)
    col = torch.arange(n)[None, :]
    from_pos = col < n_pos[:, None]  # [B, n]
    # Index into each side uniformly with replacement (unpack_sdf_samples' `rand * count`).
    i_pos = pos_start[:, None] + (u * pos_count[:, None]).long().clamp_max((pos_count - 1).clamp_min(0)[:, None])
    i_neg = neg_start[:, None] + (u * neg_count[:, None]).long().clamp_max((neg_count - 1).clamp_min(0)[:, None])
    out = torch.empty(B, n, 4)
    if pos.shape[0]:
        out[from_pos] = pos[i_pos[from_pos]]
    if neg.shape[0]:
        out[~from_pos] = neg[i_neg[~from_pos]]
    return out
