"""The shape prior DIST optimises in: a trained DeepSDF experiment (decoder, training codes) and its
held-out shapes (meshes, surface samples, normalisation), plus each shape's code fitted to its full 3D
SDF samples (DeepSDF's reconstruction: the upper bound DIST is compared with)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from apps.deepsdf.config import DeepSDFConfig, check_config
from apps.deepsdf.data import load_split_instances
from apps.deepsdf.reconstruct import load_decoder, reconstruct_latent, split_file
from taichi_sdf.data.deepsdf import Instance, load_normalization, load_sdf_samples, load_surface_samples, normalize
from taichi_sdf.models.deepsdf import DeepSDFDecoder
from taichi_sdf.train.checkpoint import atomic_write_bytes
from taichi_sdf.train.config import load_config

from .config import ShapeModelConfig

MESH_EXTENSIONS = (".ply", ".obj", ".off", ".stl", ".glb")


@dataclass
class HeldOutShape:
    """One shape of the split, in DeepSDF's normalised frame (the decoder's frame, inside the unit sphere)."""

    instance: Instance
    vertices: np.ndarray  # [V, 3] normalised
    faces: np.ndarray  # [F, 3]
    surface: np.ndarray  # [P, 3] GT surface samples, normalised
    offset: np.ndarray  # NormalizationParameters: x_n = (x + offset) * scale
    scale: float

    @property
    def name(self) -> str:
        return self.instance.instance


@dataclass
class ShapeModel:
    decoder: DeepSDFDecoder  # eval mode, parameters frozen
    cfg: DeepSDFConfig
    epoch: int
    train_codes: torch.Tensor  # [S, L] the training shapes' codes
    experiment: Path

    @property
    def latent_size(self) -> int:
        return self.decoder.latent_size

    @property
    def mean_code(self) -> torch.Tensor:
        """`[L]` the mean training code (DIST's lower bound: a shape prior without observations)."""
        return self.train_codes.mean(0)


def load_shape_model(sc: ShapeModelConfig, device: torch.device) -> ShapeModel:
    """The trained DeepSDF experiment of `sc` (a clear error when it is missing)."""
    experiment = Path(sc.experiment)
    if not (experiment / "config.yaml").is_file():
        raise FileNotFoundError(f"shapes.experiment: {experiment}/config.yaml not found; train DeepSDF first "
                                "(python -m apps.deepsdf all) or point shapes.experiment=DIR at an experiment")  # fmt: skip
    cfg = load_config(DeepSDFConfig, experiment / "config.yaml", [f"out={experiment}"])
    check_config(cfg)
    decoder, state = load_decoder(experiment, sc.checkpoint, cfg, device)
    for p in decoder.parameters():
        p.requires_grad_(False)
    return ShapeModel(decoder, cfg, int(state["epoch"]), state["latents"].to(device), experiment)


def find_mesh(folder: Path, instance: Instance) -> Path:
    for ext in MESH_EXTENSIONS:
        for cand in (folder / instance.dataset / instance.class_name / f"{instance.instance}{ext}",
                     folder / f"{instance.instance}{ext}"):  # fmt: skip
            if cand.is_file():
                return cand
    raise FileNotFoundError(f"shapes.meshes: no mesh for {instance.instance} in {folder} "
                            f"(looked for <instance>{{{','.join(MESH_EXTENSIONS)}}})")  # fmt: skip


def held_out_shapes(model: ShapeModel, sc: ShapeModelConfig) -> list[HeldOutShape]:
    """The first `sc.max_shapes` shapes of `sc.split`, normalised into the decoder's frame."""
    import trimesh

    root = Path(model.cfg.data.root)
    instances = load_split_instances(root, split_file(model.cfg, sc.split))
    if sc.max_shapes:
        instances = instances[: sc.max_shapes]
    if not instances:
        raise ValueError(f"shapes.split: the split {sc.split!r} of {root} has no shapes")
    meshes = Path(sc.meshes) if sc.meshes else root / "meshes"
    out = []
    for it in instances:
        path = find_mesh(meshes, it)
        mesh = trimesh.load(path, force="mesh", process=False)
        if len(mesh.faces) == 0:
            raise ValueError(f"{path}: the mesh has no faces")
        offset, scale = load_normalization(it.normalization(root))
        surface = normalize(load_surface_samples(it.surface_samples(root)), offset, scale)
        v = normalize(np.asarray(mesh.vertices, dtype=np.float64), offset, scale)
        out.append(HeldOutShape(it, v, np.asarray(mesh.faces, dtype=np.int64), surface, offset, scale))
    return out


def fitted_code(model: ShapeModel, shape: HeldOutShape, cache: Path, seed: int = 0) -> torch.Tensor:
    """`[L]` the shape's code fitted to its full 3D SDF samples with DeepSDF's reconstruction (the
    experiment's `reconstruct` settings), cached in `cache/<instance>.pth`."""
    path = cache / f"{shape.name}.pth"
    if path.is_file():
        return torch.load(path, map_location="cpu").to(model.train_codes.device)
    pos, neg = (torch.from_numpy(a) for a in load_sdf_samples(shape.instance.sdf_samples(model.cfg.data.root)))
    gen = torch.Generator().manual_seed(seed)
    code, _ = reconstruct_latent(model.decoder, pos, neg, model.cfg.reconstruct, model.cfg.train.clamp, gen)
    cache.mkdir(parents=True, exist_ok=True)
    import io

    buf = io.BytesIO()
    torch.save(code.cpu(), buf)
    atomic_write_bytes(path, buf.getvalue())
    return code.to(model.train_codes.device)
