"""python -m apps.deepsdf sample [--meshes DIR] --out DIR [--dataset NAME --class-name NAME ...]

Turns a folder of meshes into DeepSDF's data layout (the original's preprocess_data.py, without its
OpenGL toolchain): for every mesh, SDF samples (SdfSamples/<dataset>/<class>/<instance>.npz), 30k
surface samples in the mesh's units (SurfaceSamples/...ply) and the normalisation
(NormalizationParameters/...npz), plus a deterministic train/test split
(`<out>/splits/<dataset>_<class>_{train,test}.json`). Without --meshes it first writes the built-in
procedural chairs (taichi_sdf.geometry.shape_family) to `<out>/meshes/`.

As in the original's README, the test split is sampled with the `-t` preset (variance 0.05, 45/50
near the surface, half the samples), which reconstruction uses; `--test-split-preset train` samples
it like the training split instead, and `--test` samples every mesh with the test preset.

Resumable: an instance whose three files exist is skipped (unless it was sampled with other
settings, as recorded in `<out>/sample_report.json`, or --overwrite is given). A mesh that cannot be
read, has no faces or has non-finite vertices is reported by name and the others go on; the exit
status is non-zero only when no mesh could be sampled.

Under torchrun (`torchrun --nproc_per_node N -m apps.deepsdf sample ...`) rank r samples its contiguous
share of the sorted meshes (`shard_indices`); the per-mesh seeds depend on the names only, so the files
are those of one process. Rank 0 writes the built-in chairs (the others wait), the splits and the
report (the ranks' results gathered). Every rank needs the same --out folder (a shared disk across
machines); resuming skips the finished instances whatever the number of ranks.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import zlib
from collections import Counter
from pathlib import Path

import numpy as np

from taichi_sdf.core.errors import app_main
from taichi_sdf.data.deepsdf import (
    NORMALIZATION,
    SDF_SAMPLES,
    SURFACE_SAMPLES,
    Instance,
    save_normalization,
    save_sdf_samples,
    save_split,
    save_surface_samples,
)
from taichi_sdf.train import distributed as tdist
from taichi_sdf.train.checkpoint import atomic_write_bytes

MESH_EXTENSIONS = (".obj", ".ply", ".off", ".stl", ".glb", ".gltf")
REPORT = "sample_report.json"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m apps.deepsdf sample",
        description="Sample DeepSDF's SDF samples, surface samples and normalisation of a folder of meshes "
        "(default: the built-in procedural chairs).",
    )
    ap.add_argument("--meshes", default=None, help="folder searched recursively for " + ", ".join(MESH_EXTENSIONS)
                    + " files; default: generate the built-in chairs into OUT/meshes")  # fmt: skip
    ap.add_argument("--out", required=True, help="data root (DeepSDF's DataSource)")
    ap.add_argument("--dataset", default=None, help="dataset name in the layout (default: 'procedural' for the "
                    "built-in chairs, else the name of the --meshes folder)")  # fmt: skip
    ap.add_argument("--class-name", default=None, help="class name in the layout (default: 'chairs' for the "
                    "built-in chairs, else 'all')")  # fmt: skip
    ap.add_argument("--samples", type=int, default=500_000, help="SDF samples per training mesh (the test preset uses half)")
    ap.add_argument("--variance", type=float, default=0.005, help="variance of the first near-surface perturbation")
    ap.add_argument("--surface-samples", type=int, default=30_000, help="surface points per mesh, in mesh units")
    ap.add_argument("--sign-mode", default="winding", choices=["winding", "pseudonormal"])
    ap.add_argument("--test", action="store_true", help="sample every mesh with the original's -t preset")
    ap.add_argument("--test-split-preset", default="test", choices=["test", "train"],
                    help="sampling of the test split: 'test' = the -t preset (as the original's README), 'train' = as training")  # fmt: skip
    ap.add_argument("--test-fraction", type=float, default=0.2, help="share of the meshes in the test split")
    ap.add_argument("--seed", type=int, default=0, help="seeds the split, the samples and the built-in chairs")
    ap.add_argument("--count", type=int, default=100, help="built-in chairs to generate (without --meshes)")
    ap.add_argument("--resolution", type=int, default=128, help="marching-cubes resolution of the built-in chairs")
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--skip-existing", dest="overwrite", action="store_false", default=False,
                       help="skip instances already sampled with the same settings (default)")  # fmt: skip
    group.add_argument("--overwrite", dest="overwrite", action="store_true", help="resample every instance")
    ap.add_argument("--arch", default="auto", help="Taichi arch: auto, cpu, cuda")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    return ap


# -------------------------------------------------------------------------------------- meshes


def find_meshes(root: str | Path, exclude: tuple[Path, ...] = ()) -> list[tuple[str, Path]]:
    """(instance name, path) of every mesh file under `root` but not under `exclude`, sorted by name.

    The name is the file's stem when stems are unique; else the first folder of its path below
    `root` when those are unique (ShapeNet's `<id>/models/model_normalized.obj`); else the relative
    path without extension, with '/' replaced by '_'.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"--meshes: {root} is not a folder")
    exclude = tuple(Path(e).resolve() for e in exclude)
    files = sorted(
        p for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in MESH_EXTENSIONS and not any(p.resolve().is_relative_to(e) for e in exclude)
    )  # fmt: skip
    rel = [p.relative_to(root) for p in files]
    candidates = (
        [r.stem for r in rel],
        [r.parts[0] if len(r.parts) > 1 else r.stem for r in rel],
        [str(r.with_suffix("")).replace("/", "_").replace("\\", "_") for r in rel],
    )
    names = next((c for c in candidates if len(set(c)) == len(c)), candidates[-1])
    return sorted(zip(names, files))


def load_mesh(path: Path):
    """The triangle mesh in `path` (scenes are flattened); ValueError naming the file otherwise."""
    import trimesh

    try:
        mesh = trimesh.load(path, force="mesh", process=False)
    except Exception as e:  # noqa: BLE001 - every unreadable file is reported the same way
        raise ValueError(f"cannot read the mesh ({type(e).__name__}: {e})") from e
    if not isinstance(mesh, trimesh.Trimesh):
        raise ValueError(f"not a triangle mesh (read a {type(mesh).__name__})")
    if len(mesh.faces) == 0:
        raise ValueError("the mesh has no faces")
    if not np.isfinite(np.asarray(mesh.vertices)).all():
        raise ValueError("the mesh has non-finite (NaN or inf) vertex coordinates")
    return mesh


def split_names(names: list[str], test_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Deterministic (train, test) split of `names`: a seeded permutation of the sorted names; with
    test_fraction > 0 and at least two names, each side gets at least one."""
    names = sorted(names)
    n = len(names)
    n_test = int(round(test_fraction * n))
    if test_fraction > 0 and n >= 2:
        n_test = min(max(n_test, 1), n - 1)
    order = np.random.default_rng(seed).permutation(n)
    test = {names[i] for i in order[:n_test]}
    return [x for x in names if x not in test], [x for x in names if x in test]


def _instance_seed(seed: int, name: str) -> int:
    """A per-mesh seed that depends on the name, not on the mesh's position in the folder."""
    return int(np.random.SeedSequence([seed, zlib.crc32(name.encode())]).generate_state(1)[0])


def _settings(args, preset: str, name: str) -> dict:
    from taichi_sdf.geometry.sdf_sampling import TEST_PRESET

    if preset == "test":
        # The -t preset relative to --samples (500k -> 250k), so a quick run stays quick.
        s = dict(TEST_PRESET, num_samples=max(1, args.samples * TEST_PRESET["num_samples"] // 500_000))
    else:
        s = {"num_samples": args.samples, "variance": args.variance, "second_variance": args.variance / 10,
             "near_ratio": 47 / 50}  # fmt: skip
    return dict(s, preset=preset, sign_mode=args.sign_mode, surface_samples=args.surface_samples,
                seed=_instance_seed(args.seed, name))  # fmt: skip


def _done(inst: Instance, out: Path) -> bool:
    return all(p.is_file() for p in (inst.sdf_samples(out), inst.surface_samples(out), inst.normalization(out)))


def _sample_one(path: Path, inst: Instance, out: Path, settings: dict) -> None:
    from taichi_sdf.geometry.sdf_sampling import sample_sdf

    mesh = load_mesh(path)
    kw = {k: v for k, v in settings.items() if k != "preset"}
    s = sample_sdf(mesh, **kw)
    # The SDF samples last: they are what marks an instance as usable.
    if len(s.surface):
        save_surface_samples(inst.surface_samples(out), s.surface)
    save_normalization(inst.normalization(out), s.offset, s.scale)
    save_sdf_samples(inst.sdf_samples(out), s.pos, s.neg)


# ---------------------------------------------------------------------------------------- main


@app_main("python -m apps.deepsdf sample")
def main(argv: list[str] | None = None) -> dict:
    """Run the sampler; returns the report (also written to `<out>/sample_report.json`).
    Raises SystemExit(1) when no mesh could be sampled (or found)."""
    from tqdm.auto import tqdm

    import taichi_sdf
    from taichi_sdf.core.runtime import set_torch_threads

    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    for flag, ok in (("--samples", args.samples >= 1), ("--test-fraction", 0.0 <= args.test_fraction < 1.0),
                     ("--count", args.count >= 1), ("--surface-samples", args.surface_samples >= 0),
                     ("--variance", args.variance > 0), ("--seed", args.seed >= 0)):  # fmt: skip
        if not ok:
            raise SystemExit(f"{flag}: invalid value {getattr(args, flag[2:].replace('-', '_'))!r}")
    out = Path(args.out)
    builtin = args.meshes is None
    dataset = args.dataset or ("procedural" if builtin else Path(args.meshes).resolve().name)
    class_name = args.class_name or ("chairs" if builtin else "all")
    t_start = time.perf_counter()
    dist = tdist.init_distributed(device=args.arch if args.arch in ("cpu", "cuda") else "auto")  # before Taichi starts
    main_rank = dist.is_main
    taichi_sdf.init(args.arch)
    set_torch_threads(0)  # before the chairs too: 2 torch threads next to Taichi's pool thrash small machines
    if builtin and main_rank:
        from taichi_sdf.geometry.shape_family import write_family

        print(f"writing {args.count} built-in chairs to {out / 'meshes'}", file=sys.stderr)
        write_family(out / "meshes", args.count, seed=args.seed, resolution=args.resolution, progress=not args.quiet)
    tdist.barrier()  # the other ranks read the chairs rank 0 wrote
    meshes_dir = out / "meshes" if builtin else Path(args.meshes)
    try:
        # Our own outputs (SurfaceSamples/*.ply) are not input meshes when --out lies inside --meshes.
        found = find_meshes(meshes_dir, exclude=tuple(out / kind for kind in (SDF_SAMPLES, SURFACE_SAMPLES, NORMALIZATION)))
    except FileNotFoundError as e:
        raise SystemExit(str(e)) from None
    if builtin:  # only the chairs asked for, not more left by an earlier, larger run
        keep = {f"chair_{i:04d}" for i in range(args.count)}
        found = [(n, p) for n, p in found if n in keep]
    if not found:
        raise SystemExit(f"--meshes: no {'/'.join(e[1:] for e in MESH_EXTENSIONS)} files under {meshes_dir}")
    t_meshes = time.perf_counter() - t_start

    train_names, test_names = split_names([n for n, _ in found], args.test_fraction, args.seed)
    test_set = set(test_names)
    previous = {}
    if (out / REPORT).is_file():
        try:
            previous = json.loads((out / REPORT).read_text()).get("settings", {})
        except (json.JSONDecodeError, AttributeError):
            previous = {}

    status: dict[str, str] = {}
    failed: list[dict] = []
    settings_of: dict[str, dict] = {}
    seconds: list[float] = []
    mine = tdist.shard_indices(len(found), dist.rank, dist.world_size)  # all of them in one process
    bar = tqdm(found[mine.start : mine.stop], desc="sampling", unit="mesh", disable=args.quiet or not main_rank)
    for name, path in bar:
        inst = Instance(dataset, class_name, name)
        preset = "test" if args.test or (name in test_set and args.test_split_preset == "test") else "train"
        settings = _settings(args, preset, name)
        key = f"{dataset}/{class_name}/{name}"
        if not args.overwrite and _done(inst, out) and previous.get(key, settings) == settings:
            status[name] = "skipped"
            settings_of[key] = settings
            continue
        bar.set_postfix_str(name)
        t0 = time.perf_counter()
        try:
            _sample_one(path, inst, out, settings)
        except Exception as e:  # noqa: BLE001 - report the mesh by name and go on with the others
            failed.append({"instance": name, "path": str(path), "error": str(e)})
            status[name] = "failed"
            tqdm.write(f"warning: {path}: {e}", file=sys.stderr)
            continue
        seconds.append(time.perf_counter() - t0)
        status[name] = "sampled"
        settings_of[key] = settings
    bar.close()
    if dist.distributed:  # every rank's results, merged in rank order (= the sorted meshes)
        parts = tdist.all_gather_object((status, failed, settings_of, seconds))
        status, failed, settings_of, seconds = {}, [], {}, []
        for st, fa, se, sec in parts:
            status |= st
            failed += fa
            settings_of |= se
            seconds += sec

    usable = [n for n, s in status.items() if s != "failed"]
    splits = {}
    if usable:
        for which, names in (("train", train_names), ("test", test_names)):
            split = out / "splits" / f"{dataset}_{class_name}_{which}.json"
            if main_rank:
                save_split(split, [Instance(dataset, class_name, n) for n in names if status.get(n) != "failed"])
            splits[which] = str(split)
    counts = Counter(status.values())
    report = {
        "dataset": dataset, "class_name": class_name, "meshes": str(meshes_dir),
        "sampled": sorted(n for n, s in status.items() if s == "sampled"),
        "skipped": sorted(n for n, s in status.items() if s == "skipped"),
        "failed": failed, "splits": splits,
        "seconds_per_mesh": float(np.mean(seconds)) if seconds else None,
        "seconds_meshes": t_meshes, "seconds_total": time.perf_counter() - t_start,
        "settings": {**{k: v for k, v in previous.items() if k not in settings_of}, **settings_of},
    }  # fmt: skip
    if not main_rank:
        if not usable:
            raise SystemExit(1)  # rank 0 says why
        return report
    atomic_write_bytes(out / REPORT, (json.dumps(report, indent=2) + "\n").encode())
    print(f"{counts['sampled']} sampled, {counts['skipped']} skipped (already sampled), {counts['failed']} failed"
          + (f" ({report['seconds_per_mesh']:.2f} s per mesh)" if seconds else "") + f"; report: {out / REPORT}",
          file=sys.stderr)  # fmt: skip
    for f in failed:
        print(f"  failed: {f['path']}: {f['error']}", file=sys.stderr)
    if not usable:
        raise SystemExit(f"no mesh could be sampled ({len(failed)} failed); see {out / REPORT}")
    return report


if __name__ == "__main__":
    main()
