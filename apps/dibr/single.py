"""python -m apps.dibr train|eval [--config configs/dibr/single_cpu.yaml] [key=value ...] [--resume | --overwrite]

DIB-R single-image reconstruction (nv-tlabs/DIB-R-Single-Image-3D-Reconstruction): an image encoder and
DVR's decoder at every template vertex predict vertex offsets and colours of a 642-vertex sphere, trained
through the DIB-R rasterizer on 2 views per object of a ShapeNet-layout dataset (DVR's own, or the built-in
procedural classes generated once), then the held-out objects scored as the original's
chamfer/check_chamfer.py (2500 points a side, non-squared distances, Chamfer and F-score at 0.01..0.05,
per class and mean) beside the project's Chamfer-L1 / F-score@0.01, with three baselines scored the same
way: the template sphere, the class-mean shape of the training objects and the nearest training shape by
input image.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
import trimesh

from taichi_sdf.cameras.camera import Camera
from taichi_sdf.data.shapenet import ShapeNetDataset, builtin_layout_root, generate_shapenet_layout
from taichi_sdf.mesh.export import save_ply
from taichi_sdf.models.dvr import ConvEncoder, DVRDecoder, ResNet18Encoder
from taichi_sdf.train import distributed as tdist
from taichi_sdf.train.checkpoint import atomic_write_bytes
from taichi_sdf.train.cli import train_and_export
from taichi_sdf.train.metrics import chamfer_distance, evaluate_mesh, fscore, sample_surface, write_eval_tables
from taichi_sdf.train.trainer import Trainer, is_main_process

from .single_config import SingleImageConfig
from .single_system import SingleImageMeshNet
from .template import make_template

DEFAULT_PRESET = "configs/dibr/single_cpu.yaml"
LOSS_KEYS = ("loss", "image", "iou", "laplacian", "flatten")  # means over the batch's objects


def builtin_root(cfg: SingleImageConfig) -> Path:
    """The built-in layout's cache folder; named as `python -m apps.dvr single` names it, so that equal
    settings share one generated folder."""
    d = cfg.data
    return builtin_layout_root(d.classes, d.instances, d.views, d.size, d.points, d.seed)


def load_split(cfg: SingleImageConfig, split: str) -> ShapeNetDataset:
    """The split of `data.root`, or of the built-in layout (generated on first use, resumable, with
    the same generator call as DVR's single-view app)."""
    d = cfg.data
    root = d.root
    if root is None:
        root = builtin_root(cfg)
        if not (root / "generator.json").is_file() or split == "train":  # finished objects are skipped
            generate_shapenet_layout(root, classes=tuple(d.classes), n_per_class=d.instances, views=d.views,
                                     input_views=d.views, image_size=d.size, seed=d.seed, n_pointcloud=d.points,
                                     n_points=d.points, progress=is_main_process())  # fmt: skip
    return ShapeNetDataset(root, split, d.classes, d.input_folder, d.input_size, random_view=False)


def check_chamfer(pred_points: np.ndarray, gt_points: np.ndarray, thresholds) -> dict[str, float]:
    """The original's `chamfer/check_chamfer.py` on two point sets `[N, 3]`: Chamfer = (mean NN distance
    pred -> gt + mean gt -> pred) / 2 with non-squared Euclidean distances, and F-score at each threshold."""
    out = {"chamfer": chamfer_distance(pred_points, gt_points)["chamfer_l1"]}
    for t, (_, _, f) in fscore(pred_points, gt_points, thresholds).items():
        out[f"f@{t:g}"] = f
    return out


def score_mesh(mesh: trimesh.Trimesh, gt_points: np.ndarray, gt_normals: np.ndarray, cfg: SingleImageConfig,
               index: int) -> dict[str, float]:  # fmt: skip
    """check_chamfer scores (2500 area-weighted points on `mesh` vs 2500 random GT points, seeded by the
    object's index) and the project's Chamfer-L1 / F-score@0.01 / normal consistency (`eval.project_points`
    points on the mesh against at most as many GT points)."""
    e = cfg.eval
    rng = np.random.default_rng([cfg.seed, index])
    gt = gt_points[rng.choice(len(gt_points), e.n_points, replace=len(gt_points) < e.n_points)]
    pred, _ = sample_surface(mesh, e.n_points, seed=cfg.seed)
    row = check_chamfer(pred, gt, e.thresholds)
    sub = rng.choice(len(gt_points), min(e.project_points, len(gt_points)), replace=False)
    project = evaluate_mesh(mesh, (gt_points[sub], gt_normals[sub]), n_points=e.project_points, thresholds=(0.01,), seed=cfg.seed)
    row |= {"chamfer_l1": project["chamfer_l1"], "fscore@0.01": project["fscore@0.01"],
            "normal_consistency": project.get("normal_consistency", float("nan"))}  # fmt: skip
    return row


def class_templates(train_set: ShapeNetDataset, resolution: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """One template per class index of `train_set`: its class-mean shape, lightly smoothed (Taubin, which
    keeps the volume) so the marching-cubes staircase does not feed the flatten loss."""
    means = train_set.class_mean_meshes(resolution)
    out = []
    for k in range(len(train_set.class_names)):
        if k not in means:
            raise ValueError(f"data: class {train_set.class_names[k]!r} has no training objects for its class-mean template")
        mesh = means[k].copy()
        trimesh.smoothing.filter_taubin(mesh, iterations=10)
        out.append((np.asarray(mesh.vertices), np.asarray(mesh.faces)))
    return out


def build_network(cfg: SingleImageConfig, train_set: ShapeNetDataset | None = None) -> SingleImageMeshNet:
    """The network of `cfg`; `train_set` is needed for `model.template=class_mean`."""
    m, r, t = cfg.model, cfg.render, cfg.train
    encoder = ConvEncoder(m.c_dim) if m.encoder == "conv" else ResNet18Encoder(m.c_dim, weights_path=m.encoder_weights)
    decoder = DVRDecoder(m.c_dim, m.hidden_size, m.n_blocks, out_dim=6, leaky=m.leaky)
    per_class = None
    if m.template == "class_mean":
        if train_set is None:
            raise ValueError("model.template: 'class_mean' needs the training objects (train_set)")
        per_class = class_templates(train_set, m.template_resolution)
        v0, f0 = per_class[0]
    else:
        template = make_template("icosphere", m.icosphere_subdivisions, m.scale)
        v0, f0 = template.vertices, template.faces
    weights = {"image": t.image_weight, "iou": t.iou_weight, "laplacian": t.laplacian_weight, "flatten": t.flatten_weight}
    return SingleImageMeshNet(encoder, decoder, v0, f0, scale=m.scale, class_templates=per_class,
                              raster={"sigmainv": r.sigmainv, "boxlen": r.boxlen, "knum": r.knum}, weights=weights)  # fmt: skip


class SingleImageTrainer(Trainer):
    """Training views are read once into memory; a step draws `batch_size` objects (without
    replacement while there are enough), one input image and `views_per_object` distinct supervision
    views each."""

    name = "dibr-single"
    keep_last = 3

    def __init__(self, cfg: SingleImageConfig, mode: str = "new") -> None:
        self.info = self.start_runtime(cfg)  # torchrun job, Taichi, torch threads
        super().__init__(cfg, cfg.out, cfg.seed, mode)
        self.device = self.info.device
        self.train_set = load_split(cfg, "train")
        self.views = self.train_set.stacked_views(("inputs", "image", "mask", "K", "T_cam_world"), self.device)
        if self.views["image"].shape[1] < cfg.train.views_per_object:
            raise ValueError(f"train.views_per_object: expected <= {self.views['image'].shape[1]} (views per object), "
                             f"got {cfg.train.views_per_object}")  # fmt: skip
        self.system = build_network(cfg, self.train_set).to(self.device)
        self.model = self.wrap_ddp(self.system)
        self.my_share(cfg.train.batch_size)  # every rank needs an object of the batch
        self.categories = torch.tensor([c for _, _, c in self.train_set.models], device=self.device)  # [N]
        self.optimizer = torch.optim.Adam(self.system.parameters(), lr=cfg.train.lr, betas=tuple(cfg.train.betas))
        self.log_every = cfg.train.log_every
        self.samples_per_step = cfg.train.batch_size  # objects per second on the bar
        self.start(mode)

    @property
    def total_iterations(self) -> int:
        return self.cfg.train.iterations

    def checkpoint_due(self) -> bool:
        return self.iteration % self.cfg.train.checkpoint_every == 0

    def make_batch(self) -> dict:
        t, v = self.cfg.train, self.views
        N, V, H, W = v["image"].shape[:4]
        B, K = t.batch_size, t.views_per_object
        objs = torch.randperm(N, generator=self.gen)[:B] if B <= N else torch.randint(N, (B,), generator=self.gen)
        sup = torch.rand(len(objs), V, generator=self.gen).argsort(1)[:, :K]  # [B, K] distinct views
        inp = torch.randint(v["inputs"].shape[1], (len(objs),), generator=self.gen)
        objs, sup, inp = objs.to(self.device), sup.to(self.device), inp.to(self.device)
        rows = objs[:, None].expand(-1, K)
        cams = Camera(v["K"][rows, sup].flatten(0, 1), v["T_cam_world"][rows, sup].flatten(0, 1), W, H)
        return {"inputs": v["inputs"][objs, inp], "cameras": cams, "images": v["image"][rows, sup].flatten(0, 1),
                "masks": v["mask"][rows, sup].flatten(0, 1).float(), "categories": self.categories[objs]}  # fmt: skip

    def train_step(self) -> dict[str, float]:
        """One step on the global batch of `make_batch`; under torchrun this rank computes its share of the
        objects (their K views each). Every loss term is a mean over the objects the system sees (B_r), so
        the loss is scaled by B_r / B x ranks: DDP's gradient average is the single-process gradient."""
        batch = self.make_batch()
        B = batch["inputs"].shape[0]
        mine = self.my_share(B)
        if self.dist.distributed:
            K = len(batch["cameras"]) // B
            objs, views = slice(mine.start, mine.stop), slice(mine.start * K, mine.stop * K)
            batch = {"inputs": batch["inputs"][objs], "categories": batch["categories"][objs],
                     "cameras": batch["cameras"][views],
                     "images": batch["images"][views], "masks": batch["masks"][views]}  # fmt: skip
        share = len(mine) / B
        self.system.zeroed_grads = 0
        with tdist.peer_failures("the gradient all-reduce"):
            terms = self.model(batch)
            self.optimizer.zero_grad(set_to_none=True)
            (terms["loss"] * (share * self.dist.world_size) if self.dist.distributed else terms["loss"]).backward()
        row = {k: float(x.detach()) if isinstance(x, torch.Tensor) else float(x) for k, x in terms.items()}
        row |= {"zeroed_grads": float(self.system.zeroed_grads)}
        if self.dist.distributed:  # loss terms: this rank's share of the batch's; mask_iou: mean of the ranks'
            row = {k: v * share if k in LOSS_KEYS else v for k, v in row.items()}
        row = self.reduce_row(row, sums=(*LOSS_KEYS, "zeroed_grads"))
        self.check_loss(row)  # the reduced loss: every rank raises, before the step
        self.optimizer.step()
        return row

    def postfix(self, row: dict) -> dict:
        return {"loss": f"{row['loss']:.4f}", "iou": f"{row['mask_iou']:.3f}", "coef": f"{row['residual_coef']:.3f}",
                "objects": self.throughput()}  # fmt: skip

    def state(self) -> dict:
        return {"system": self.system.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state(self, s: dict) -> None:
        self.system.load_state_dict(s["system"])
        self.optimizer.load_state_dict(s["optimizer"])

    # -- evaluation --------------------------------------------------------------------------------

    @torch.no_grad()
    def reconstruct(self, image: torch.Tensor, category: int = 0) -> tuple[trimesh.Trimesh, np.ndarray]:
        """The predicted mesh (object frame) and its vertex colours `[V, 3]` for `image [3, S, S]` of an
        object of class index `category` (of the training split; used with class templates)."""
        was = self.system.training
        self.system.eval()
        v, c, _ = self.system.predict(image[None].to(self.device), torch.tensor([category], device=self.device))
        self.system.train(was)
        faces = self.system.template_of(category if self.system.n_templates > 1 else 0)[1]
        mesh = trimesh.Trimesh(v[0].double().cpu().numpy(), faces.long().cpu().numpy(), process=False)
        return mesh, c[0].cpu().numpy()

    def _eval_objects(self, ds: ShapeNetDataset) -> list[int]:
        cap, seen, keep = self.cfg.eval.max_instances, {}, []
        for i, (_, _, c) in enumerate(ds.models):
            if cap == 0 or seen.get(c, 0) < cap:
                keep.append(i)
                seen[c] = seen.get(c, 0) + 1
        return keep

    def export(self, progress: bool = True) -> dict:
        """generation/<synset>/<id>.ply (vertex colours) of the held-out objects, the check_chamfer tables
        of the model and both baselines (eval_chamfer*.csv/json), table.md and metrics.json."""
        e = self.cfg.eval
        ds = load_split(self.cfg, e.split)
        ids = self._eval_objects(ds)
        if not ids:
            raise ValueError(f"eval.split: no {e.split} objects in {ds.root}")
        t0 = time.time()
        rows: dict[str, list[dict]] = {"model": [], "template": [], "class_mean": [], "retrieval": []}
        class_means = self.train_set.class_mean_meshes()  # the training split's mean shape per class
        templates = [trimesh.Trimesh(v.double().cpu().numpy(), f.long().cpu().numpy(), process=False)
                     for v, f in map(self.system.template_of, range(self.system.n_templates))]  # fmt: skip
        train_inputs = self.views["inputs"].flatten(0, 1)  # [N * Vi, 3, S, S]
        with self.locked():
            for i in ids:
                item = ds.get(i, view=0, input_view=e.input_view)
                key = {"class": ds.class_names[item["category"]], "model": item["model"]}
                pts, nrm = (x.numpy().astype(np.float64) for x in ds.pointcloud(i))
                category = self.train_set.class_names.index(key["class"])
                mesh, colors = self.reconstruct(item["inputs"], category)
                template = templates[category if len(templates) > 1 else 0]  # the untrained network's output
                if is_main_process():
                    save_ply(self.out / "generation" / f"{item['model']}.ply", mesh.vertices, mesh.faces, colors=colors)
                rows["model"].append(key | score_mesh(mesh, pts, nrm, self.cfg, i))
                rows["template"].append(key | score_mesh(template, pts, nrm, self.cfg, i))
                mean_shape = class_means[self.train_set.class_names.index(key["class"])]
                rows["class_mean"].append(key | {"threshold": mean_shape.metadata["threshold"]}
                                          | score_mesh(mean_shape, pts, nrm, self.cfg, i))  # fmt: skip
                dist = (train_inputs - item["inputs"].to(self.device)[None]).flatten(1).square().sum(1)
                j = int(dist.argmin()) // self.views["inputs"].shape[1]
                nearest = trimesh.load(self.train_set.mesh_path(j), force="mesh", process=False)
                rows["retrieval"].append(
                    key | {"retrieved": self.train_set.models[j][1]} | score_mesh(nearest, pts, nrm, self.cfg, i)
                )
            metrics: dict = {"iterations": self.iteration, "split": e.split, "objects": len(ids),
                             "residual_coef": float(self.system.residual_coef.detach()),
                             "note": "chamfer is check_chamfer.py's (mean of the two non-squared NN means, 2500 points a side); "
                                     "table.md prints it x100"}  # fmt: skip
            if is_main_process():
                tables = {}
                for name, r in rows.items():
                    stem = "eval_chamfer" if name == "model" else f"eval_chamfer_{name}"
                    write_eval_tables(r, self.out, stem)
                    tables[name] = json.loads((self.out / f"{stem}.json").read_text())
                metrics |= tables
                text = format_table(tables, e.thresholds)
                atomic_write_bytes(self.out / "table.md", text.encode())
                self.message("\n" + text)
                metrics["export_seconds"] = time.time() - t0
                atomic_write_bytes(self.out / "metrics.json", json.dumps(metrics, indent=2, default=float).encode())
        return metrics


def format_table(tables: dict[str, list[dict]], thresholds) -> str:
    """Per-class Markdown table: Chamfer x100 (check_chamfer's, as the original's README) and F-scores of
    every method, then the project's Chamfer-L1 x100 / F-score@0.01."""
    names = list(tables)
    lo, hi = f"f@{min(thresholds):g}", f"f@{max(thresholds):g}"
    head = ["class", "n"] + [f"{n} CD x100" for n in names] + [f"{n} {k}" for n in names for k in (lo, hi)]
    head += [f"{n} CD-L1 x100 / F@0.01 (project)" for n in names]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r, row in enumerate(tables[names[0]]):
        cells = [row["class"], str(row["n"])]

        def get(n, k, r=r):
            x = tables[n][r].get(k)
            return float("nan") if x is None else float(x)

        cells += [f"{100 * get(n, 'chamfer'):.2f}" for n in names]
        cells += [f"{get(n, k):.3f}" for n in names for k in (lo, hi)]
        cells += [f"{100 * get(n, 'chamfer_l1'):.2f} / {get(n, 'fscore@0.01'):.3f}" for n in names]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None, command: str = "train") -> dict:
    """`command` "train" (then evaluate) or "eval" (evaluate the latest checkpoint of `out`)."""
    argv = list(argv or [])
    if command == "eval":
        argv = ["--eval-only"] + [a for a in argv if a != "--eval-only"]
    return train_and_export(argv, prog=f"python -m apps.dibr {command}", name=f"dibr {command}",
                            description=__doc__.split("\n\n")[1].replace("\n", " "), config_cls=SingleImageConfig,
                            make_trainer=SingleImageTrainer, default_preset=DEFAULT_PRESET,
                            outputs="generation/, eval_chamfer*.csv/json, table.md, metrics.json, log.csv, checkpoints/")  # fmt: skip
