"""A small trainer base shared by the apps (not a framework): the run folder and its lock, seeding and
RNG state, atomic checkpoints with retention, resume, the tqdm loop, a save at an iteration boundary on
Ctrl-C / SIGTERM, rank-0 guards, and a loss log (log.csv, log.png, TensorBoard scalars when installed).

A subclass sets `total_iterations` and implements `train_step() -> dict of floats` (one iteration; the
base's `step()` calls it and counts `self.iteration`), `state()` / `load_state(state)` (its own tensors; the base
adds the iteration, RNG states and config), and optionally `export()`. Refusals a user can fix raise
`UserError`; apps turn it into one line on stderr and a non-zero exit (`exit_on_user_error`).
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import random
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from taichi_sdf.core.errors import InputError, user_errors

from . import distributed as tdist
from .checkpoint import latest_checkpoint, load_checkpoint, remove_stale_temp_files, save_checkpoint
from .config import config_to_dict, save_config

__all__ = ["UserError", "Trainer", "RunLock", "is_main_process", "seed_everything", "exit_on_user_error", "config_diff"]


class UserError(InputError):
    """A refusal the user can act on (busy or occupied run folder, incompatible resume, no checkpoint)."""


def exit_on_user_error(prog: str) -> contextlib.AbstractContextManager[None]:
    """Turn a user error (`UserError`, a named ValueError / TypeError / FileNotFoundError: see
    `taichi_sdf.core.errors.is_user_error`) into `prog: error: ...` and exit 1; the same handler as
    `taichi_sdf.core.errors.user_errors` (kept under this name for the trainers)."""
    return user_errors(prog)


def is_main_process() -> bool:
    """Rank 0 of an initialised torch.distributed group, else True (guards writes and progress bars)."""
    dist = torch.distributed
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def seed_everything(seed: int) -> torch.Generator:
    """Seed python's `random`, numpy's legacy global RNG and torch's global RNG; returns a CPU
    `torch.Generator` seeded with `seed` for the run's own draws (sampling), saved in checkpoints."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def config_diff(old: dict, new: dict, sections: tuple[str, ...], prefix: str = "") -> list[str]:
    """Dotted keys under `sections` (all keys if empty) whose values differ between two config dicts."""
    out = []
    for k in sorted(set(old) | set(new)):
        if not prefix and sections and k not in sections:
            continue
        a, b = old.get(k, "<missing>"), new.get(k, "<missing>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_diff(a, b, (), f"{prefix}{k}.")
        elif (list(a) if isinstance(a, tuple) else a) != (list(b) if isinstance(b, tuple) else b):
            out.append(f"{prefix}{k} ({a!r} -> {b!r})")
    return out


class RunLock:
    """`<folder>/.lock` holding the PID of the process that trains there; re-entrant within one object.
    A lock whose PID is dead (a killed run) is taken over; a live one refuses with a `UserError`."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder, self.path, self.depth = Path(folder), Path(folder) / ".lock", 0

    @staticmethod
    def _alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def acquire(self) -> None:
        if self.depth == 0:
            self.folder.mkdir(parents=True, exist_ok=True)
            while True:
                try:
                    fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                except FileExistsError:
                    try:
                        pid = int(self.path.read_text().strip() or 0)
                    except (OSError, ValueError):
                        pid = 0
                    if pid > 0 and self._alive(pid):
                        raise UserError(f"{self.folder} is in use by another run (PID {pid}, lock file {self.path}); "
                                        "wait for it, stop it, or choose another out=") from None  # fmt: skip
                    self.path.unlink(missing_ok=True)  # stale: its process is gone
                    continue
                with os.fdopen(fd, "w") as f:
                    f.write(f"{os.getpid()}\n")
                break
        self.depth += 1

    def release(self) -> None:
        self.depth = max(0, self.depth - 1)
        if self.depth == 0:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class Trainer:
    """Base of the apps' trainers; see the module docstring. Mode: "new" refuses a folder holding a
    run (checkpoints or metrics.json), "overwrite" clears it, "resume" continues from the latest
    checkpoint (a new run if there is none), "eval" requires a checkpoint."""

    name = "train"  # progress bar and message prefix
    unit = "it"
    compatible_sections: tuple[str, ...] = ("model", "data")  # must match the checkpoint's config on resume
    keep_last: int | None = 3  # numbered checkpoints kept (None = all) ...
    keep_every: int | None = None  # ... plus those whose number is a multiple of this
    log_every = 10  # iterations per log.csv row (mean of the steps in between)
    outputs: tuple[str, ...] = ("checkpoints", "metrics.json", "log.csv", "log.png", "tensorboard")  # a run's files
    checkpoints = True  # False: a stateless job (renders) that writes none

    def __init__(self, cfg, out: str | os.PathLike, seed: int = 0, mode: str = "new") -> None:
        if mode not in ("new", "resume", "overwrite", "eval"):
            raise ValueError(f"mode: expected new, resume, overwrite or eval, got {mode!r}")
        self.cfg, self.out, self.seed, self.mode = cfg, Path(out), seed, mode
        self.ckpt_dir = self.out / "checkpoints"
        self.gen = seed_everything(seed)  # every draw of the run's sampling goes through this
        self.iteration = 0
        self.interrupted = None  # the signal that stopped `train()`, if any
        self.lock = RunLock(self.out)
        self._prepared = False
        self._pending: list[dict] = []

    # -- multi-process (torchrun + DDP) ----------------------------------------------------------------
    # A trainer under torchrun calls `join_distributed` first (before Taichi or CUDA start), trains
    # `wrap_ddp(system)`, draws the same global batch on every rank from the shared generator `gen`,
    # computes its share (`my_share`) with the loss scaled so that DDP's gradient average is the
    # single-process gradient, and logs `reduce_row(row)`. Rank 0 reads (resume) and writes; its
    # refusals (checkpoint, run folder) are raised on every rank.
    dist = tdist.DistInfo()  # single process unless `join_distributed` ran

    def join_distributed(self, arch: str = "auto", timeout_s: float = tdist.DEFAULT_TIMEOUT_S) -> tdist.DistInfo:
        """`init_distributed` for a Taichi `arch` ("cpu" -> CPU ranks, "cuda" -> one GPU per rank, else auto)."""
        device = arch if arch in ("cpu", "cuda") else "auto"
        self.dist = tdist.init_distributed(device=device, timeout_s=timeout_s)
        return self.dist

    def start_runtime(self, cfg):
        """The start of a Taichi app's trainer, before `Trainer.__init__`: join the torchrun job (before
        Taichi starts: the rank's GPU, CPU threads), start Taichi on `cfg.arch`, set `cfg.torch_threads`.
        Returns `taichi_sdf.init`'s `RuntimeInfo` (its `.device` is the torch device to train on)."""
        from taichi_sdf.core import runtime

        self.join_distributed(cfg.arch, cfg.dist_timeout_s)
        info = runtime.init(cfg.arch)
        if cfg.torch_threads or not self.dist.distributed:  # auto under torchrun: the ranks' share of the cores
            runtime.set_torch_threads(cfg.torch_threads)
        return info

    def keep_torch_threads(self, saved: int | None) -> None:
        """On resume with `torch_threads = 0` (auto), run on the thread count the checkpoint was written
        with (when this machine has that many cores), not a new pick from the current load: torch's
        reductions can round differently with another thread count, and a resumed run should continue
        the interrupted one exactly."""
        cfg_threads = getattr(self.cfg, "torch_threads", None)
        if saved and cfg_threads == 0 and not self.dist.distributed and saved <= (os.cpu_count() or 1):
            torch.set_num_threads(int(saved))

    def wrap_ddp(self, module: torch.nn.Module, find_unused_parameters: bool = False) -> torch.nn.Module:
        """`module` wrapped in DistributedDataParallel under torchrun (itself otherwise). On GPU ranks its
        BatchNorm layers become SyncBatchNorm (batch statistics of the global batch); SyncBatchNorm needs
        GPUs, so CPU ranks normalise with their own share's statistics (not the single-process result)."""
        if not self.dist.distributed:
            return module
        ids = None
        if self.dist.device.type == "cuda":
            module = torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
            ids = [self.dist.device.index]
        return torch.nn.parallel.DistributedDataParallel(module, device_ids=ids, find_unused_parameters=find_unused_parameters)

    def my_share(self, n: int, what: str = "train.batch_size") -> range:
        """This rank's contiguous share of `n` items of the global batch (all of them in one process);
        fewer items than ranks is a `UserError` naming `what`."""
        world = self.dist.world_size
        if n < world:
            raise UserError(f"{what}: {n} items per batch cannot be shared by {world} ranks (each needs one); "
                            "use a larger batch or fewer processes")  # fmt: skip
        return tdist.shard_indices(n, self.dist.rank, world)

    def reduce_row(self, row: dict[str, float], sums: tuple[str, ...] = ()) -> dict[str, float]:
        """A step's log row over the ranks (the row itself in one process): the mean of every value, the
        sum for the keys in `sums` (each rank's share of a global loss); also agrees on a stop signal."""
        if not self.dist.distributed:
            return row
        mean = tdist.all_reduce_mean({**row, "_stop": float(self._stop_signal or 0)})
        if mean.pop("_stop") > 0:  # every rank stops after this same step
            self._agreed_stop = self._stop_signal or signal.SIGTERM
        world = self.dist.world_size
        return {k: v * world if k in sums else v for k, v in mean.items()}

    def check_loss(self, row: dict[str, float]) -> None:
        """FloatingPointError when the step's loss (`row["loss"]`, reduced over the ranks) is not finite."""
        if not math.isfinite(row["loss"]):
            raise FloatingPointError(f"iteration {self.iteration}: loss is {row['loss']}; last checkpoint kept in {self.ckpt_dir}")  # fmt: skip

    # Under DDP the loop must stop after the same step on every rank: a signal only marks this rank
    # (`_stop_signal`); `interrupted`, which the loop reads, is set once the ranks agreed (in
    # `reduce_row`). In a single process the two are the same.
    _stop_signal: int | None = None
    _agreed_stop: int | None = None

    @property
    def interrupted(self) -> int | None:
        return self._agreed_stop if self.dist.distributed else self._stop_signal

    @interrupted.setter
    def interrupted(self, value: int | None) -> None:
        self._stop_signal = value
        if value is None:
            self._agreed_stop = None

    # -- to implement ---------------------------------------------------------------------------------
    total_iterations = 0

    def train_step(self) -> dict[str, float]:
        """One iteration (optimiser step); returns its loss terms as floats."""
        raise NotImplementedError

    def step(self) -> dict[str, float]:
        row = self.train_step()
        self.iteration += 1
        return row

    def state(self) -> dict:
        return {}

    def load_state(self, state: dict) -> None:
        pass

    def start(self, mode: str) -> None:
        """Call at the end of the subclass's `__init__`: resume (mode resume / eval) and refuse an
        evaluation without a checkpoint."""
        self.resumed = self.resume() if mode in ("resume", "eval") else False
        if mode == "eval" and not self.resumed:
            raise UserError(f"--eval-only: no checkpoint in {self.ckpt_dir}; train first (or set out= to a trained run)")

    def checkpoint_due(self) -> bool:  # after `self.iteration` iterations
        return False

    def checkpoint_name(self) -> str | None:  # a numbered snapshot to write besides latest.pt
        return f"ckpt_{self.iteration:08d}.pt"

    samples_per_step = 0  # rays / samples per iteration: the bar then shows their throughput

    def throughput(self) -> str:
        """`samples_per_step` x iterations per second since `train()` began, e.g. '2.1e+04/s'."""
        t0, it0 = self._run_start
        return f"{self.samples_per_step * (self.iteration - it0) / max(time.time() - t0, 1e-9):.3g}/s"

    def postfix(self, row: dict) -> dict:
        p = {"loss": f"{row.get('loss', float('nan')):.4g}"}
        return p | ({"samples": self.throughput()} if self.samples_per_step else {})

    def log_row(self, row: dict) -> dict | None:
        """The log.csv row after a step (default: mean of the last `log_every` steps' values)."""
        self._pending.append(row)
        if self.iteration % self.log_every and self.iteration != self.total_iterations:
            return None
        keys = [k for k in self._pending[-1] if isinstance(self._pending[-1][k], (int, float))]
        rows, self._pending = self._pending, []
        return {"iteration": self.iteration, **{k: _nanmean([r.get(k, math.nan) for r in rows]) for k in keys}}

    # -- run folder -----------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Called once under the lock before the first write: clean, refuse or clear the folder."""
        if self._prepared:
            return
        self._prepared = True
        if not is_main_process():
            return
        for d in (self.out, self.ckpt_dir):
            remove_stale_temp_files(d)
        found = [n for n in self.outputs if (self.out / n).exists() and n != "checkpoints"]
        found += ["checkpoints"] if latest_checkpoint(self.ckpt_dir) else []
        if self.mode == "new" and self.iteration == 0 and found:
            raise UserError(f"{self.out} already holds a run ({', '.join(sorted(found))}); "
                            "pass --resume to continue it or --overwrite to replace it, or choose another out=")  # fmt: skip
        if self.mode == "overwrite" and self.iteration == 0:
            import shutil

            for n in self.outputs:
                p = self.out / n
                shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
        if self.cfg is not None:
            save_config(self.cfg, self.out / "config.yaml")

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the run folder's lock (rank 0) and prepare the folder; re-entrant. Under torchrun rank 0's
        refusal (a busy or occupied folder) is raised on every rank, so the others exit at once too."""
        main = is_main_process()

        def enter() -> tuple:
            if main:
                self.lock.acquire()
            try:
                self.prepare()
            except BaseException:
                if main:
                    self.lock.release()
                raise
            return (None,)

        _read_on_main_process(enter)
        try:
            self.prepare()  # ranks > 0: only marks the folder prepared
            yield
        finally:
            if main:
                self.lock.release()

    # -- checkpoints ----------------------------------------------------------------------------------
    def full_state(self) -> dict:
        s = self.state()
        s.update(iteration=self.iteration, log_pending=list(self._pending), generator=self.gen.get_state(), torch_rng=torch.get_rng_state(),
                 python_rng=random.getstate(), numpy_rng=_numpy_state(), torch_threads=torch.get_num_threads(),
                 config=config_to_dict(self.cfg) if self.cfg is not None else None)  # fmt: skip
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            s["cuda_rng"] = torch.cuda.get_rng_state_all()
        return s

    def save(self) -> Path | None:
        """Write checkpoints/latest.pt (and the numbered snapshot), atomically; apply retention."""
        if not (self.checkpoints and is_main_process()):
            return None
        state = self.full_state()
        latest = Path(save_checkpoint(self.ckpt_dir / "latest.pt", state))
        name = self.checkpoint_name()
        if name:
            save_checkpoint(self.ckpt_dir / name, state)
            self.apply_retention()
        return latest

    def apply_retention(self) -> None:
        numbered = []
        for p in self.ckpt_dir.glob("*.pt"):
            digits = "".join(c for c in p.stem if c.isdigit())
            if p.name != "latest.pt" and digits:
                numbered.append((int(digits), p))
        numbered.sort()
        if self.keep_last is None:
            return
        for k, (num, p) in enumerate(numbered):
            recent = k >= len(numbered) - self.keep_last
            if not recent and not (self.keep_every and num % self.keep_every == 0):
                p.unlink(missing_ok=True)

    def resume(self, path: str | os.PathLike | None = None) -> bool:
        """Load `path` (default checkpoints/latest.pt, else the newest numbered one); False if none."""
        path, s = _read_on_main_process(lambda: self._read_checkpoint(path))
        if path is None:
            return False
        if self.cfg is not None and s.get("config") is not None:
            diff = config_diff(s["config"], config_to_dict(self.cfg), self.compatible_sections)
            if diff:
                raise UserError(f"{path} was trained with other {'/'.join(self.compatible_sections)} settings: "
                                f"{'; '.join(diff)}; resume with the same settings or start a new run (--overwrite)")  # fmt: skip
        self.load_state(s)
        self.iteration = int(s["iteration"])
        self._pending = list(s.get("log_pending", []))
        self.gen.set_state(s["generator"])
        torch.set_rng_state(s["torch_rng"])
        self.keep_torch_threads(s.get("torch_threads"))
        if "python_rng" in s:
            random.setstate(_tuples(s["python_rng"]))
            kind, keys, pos, has_gauss, gauss = s["numpy_rng"]
            np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        if "cuda_rng" in s and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(s["cuda_rng"])
        return True

    def _read_checkpoint(self, path: str | os.PathLike | None) -> tuple[Path | None, dict | None]:
        latest = self.ckpt_dir / "latest.pt"
        path = path or (latest if latest.is_file() else latest_checkpoint(self.ckpt_dir))
        return (None, None) if path is None else (Path(path), load_checkpoint(path, map_location="cpu"))

    # -- the loop ------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _stop_on_signals(self) -> Iterator[None]:
        """SIGINT / SIGTERM set `self.interrupted`; the loop stops after the running iteration. A second
        Ctrl-C raises KeyboardInterrupt at once."""
        if not threading_main():  # signal handlers can only be set from the main thread
            yield
            return
        old = {}

        def handler(signum, frame):
            if self.interrupted is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self.interrupted = signum

        for sig in (signal.SIGINT, signal.SIGTERM):
            old[sig] = signal.signal(sig, handler)
        try:
            yield
        finally:
            for sig, h in old.items():
                signal.signal(sig, h)

    def train(self, iterations: int | None = None, progress: bool = True,
              callback: Callable[[Trainer, dict], None] | None = None) -> dict[str, float]:  # fmt: skip
        """Run up to `total_iterations` (or `iterations` more now). Saves on schedule, at the end and
        after the iteration during which SIGINT/SIGTERM arrived (then returns with `interrupted` set)."""
        from tqdm import tqdm

        end = self.total_iterations if iterations is None else min(self.total_iterations, self.iteration + iterations)
        last: dict[str, float] = {}
        self.interrupted = None
        self._run_start = (time.time(), self.iteration)
        live = self.live_view()
        with self.locked(), self._stop_on_signals(), MetricLog(self.out, self.iteration) as log:
            bar = tqdm(total=self.total_iterations, initial=self.iteration, disable=not (progress and is_main_process()),
                       dynamic_ncols=True, desc=self.name, unit=self.unit)  # fmt: skip
            try:
                while self.iteration < end and self.interrupted is None:
                    last = self.step()
                    bar.update(1)
                    row = self.log_row(last)
                    if row is not None:
                        log.write(row)
                        bar.set_postfix(self.postfix(last), refresh=False)
                    if callback is not None:
                        callback(self, last)
                    if live is not None:
                        live.after_step(last)
                    if self.checkpoint_due():
                        self.save()
            finally:
                bar.close()
                if live is not None:
                    live.close()
            self.save()
            if self.interrupted is not None:
                name = signal.Signals(self.interrupted).name
                self.message(f"{name}: stopped after iteration {self.iteration}, saved {self.ckpt_dir / 'latest.pt'} (--resume continues)")
        return last

    def live_view(self):
        """The browser view served while this run trains (`viewer: true` in the config, rank 0 only; see
        `taichi_sdf.train.live`), or None. Its renders run on this thread between iterations."""
        if not (getattr(self.cfg, "viewer", False) and is_main_process()):
            return None
        from .live import LiveView

        return LiveView(self, host=getattr(self.cfg, "viewer_host", "127.0.0.1"), port=getattr(self.cfg, "viewer_port", 8080))

    # -- messages and phases --------------------------------------------------------------------------
    def message(self, text: str) -> None:
        if is_main_process():
            print(f"{self.name}: {text}", file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def phase(self, what: str) -> Iterator[None]:
        """One line before and after a phase the user waits for: `name: what ...` / `... done (2.1 s)`."""
        t0 = time.time()
        self.message(f"{what} ...")
        yield
        self.message(f"{what}: done ({time.time() - t0:.1f} s)")


def _read_on_main_process(read: Callable[[], tuple]) -> tuple:
    """`read()` in a single process; under torch.distributed rank 0 reads (only it writes checkpoints, and
    other machines may not see its disk) and every rank gets the result, or raises rank 0's error."""
    if not tdist.is_distributed():
        return read()
    got = None
    if is_main_process():
        try:
            got = (read(), None)
        except Exception as e:  # noqa: BLE001 - sent to the other ranks, raised everywhere below
            got = (None, e)
    result, error = tdist.broadcast_object(got)
    if error is not None:
        raise error
    return result


def _nanmean(values: list[float]) -> float:
    """`np.nanmean` without its warning when every value is NaN (a PSNR on steps that hit nothing): NaN."""
    kept = [v for v in values if not math.isnan(v)]
    return float(np.mean(kept)) if kept else math.nan


def _numpy_state() -> tuple:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)


def _tuples(x):
    return tuple(_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


class MetricLog:
    """log.csv (appended; rows past `start` from an interrupted run are dropped), log.png of the curves
    at close, and TensorBoard scalars under tensorboard/ when `torch.utils.tensorboard` imports."""

    def __init__(self, out: Path, start: int) -> None:
        self.path, self.start, self.main = Path(out) / "log.csv", start, is_main_process()
        self.fields: list[str] | None = None
        self.tb = None

    def __enter__(self) -> MetricLog:
        if not self.main:
            return self
        rows = []
        if self.path.is_file():
            with self.path.open(newline="") as f:
                reader = csv.DictReader(f)
                self.fields = reader.fieldnames
                rows = [r for r in reader if int(float(r["iteration"])) <= self.start]
        with self.path.open("w", newline="") as f:  # rewrite: drops rows after the resumed checkpoint
            if self.fields:
                w = csv.DictWriter(f, self.fields)
                w.writeheader()
                w.writerows(rows)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(self.path.parent / "tensorboard"))
        except Exception:  # noqa: BLE001 - tensorboard is optional
            self.tb = None
        return self

    def write(self, row: dict) -> None:
        if not self.main:
            return
        new = self.fields is None
        if new:
            self.fields = list(row)
        with self.path.open("a", newline="") as f:
            w = csv.DictWriter(f, self.fields, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow(row)
        if self.tb is not None:
            for k, v in row.items():
                if k != "iteration" and isinstance(v, (int, float)) and math.isfinite(v):
                    self.tb.add_scalar(k, v, int(row["iteration"]))

    def __exit__(self, *exc) -> None:
        if not self.main:
            return
        if self.tb is not None:
            self.tb.close()
        with contextlib.suppress(Exception):  # a plot must never lose a run
            plot_log(self.path, self.path.with_suffix(".png"))


def plot_log(csv_path: Path, png_path: Path) -> None:
    """One panel per column of log.csv against its first column (log scale where all values > 0)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with Path(csv_path).open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return
    x_key, keys = list(rows[0])[0], list(rows[0])[1:]
    x = [float(r[x_key]) for r in rows]
    cols = min(3, len(keys)) or 1
    fig, axes = plt.subplots((len(keys) + cols - 1) // cols or 1, cols, figsize=(4 * cols, 2.6 * ((len(keys) + cols - 1) // cols or 1)), squeeze=False)
    for ax, k in zip(axes.flat, keys):
        y = np.array([float(r[k]) if r[k] not in ("", None) else np.nan for r in rows])
        ax.plot(x, y, lw=1)
        ax.set_title(k, fontsize=9)
        if np.all(y[np.isfinite(y)] > 0) and np.isfinite(y).any():
            ax.set_yscale("log")
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(png_path, dpi=80)
    plt.close(fig)
