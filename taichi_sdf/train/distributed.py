"""A thin helper over `torch.distributed` for processes launched by `torchrun` (no launcher or
communication layer of its own).

    info = init_distributed()          # first thing in main(), before Taichi or CUDA start
    model = DDP(system) if info.distributed else system
    mine = batch[shard_indices(len(batch), info.rank, info.world_size)]   # this rank's part

`init_distributed` reads torchrun's RANK / WORLD_SIZE / LOCAL_RANK / LOCAL_WORLD_SIZE; without them it
returns single-process info and starts nothing, so the same code runs with and without torchrun.
Per rank it:
- pins the rank's GPU by setting `CUDA_VISIBLE_DEVICES` before Taichi or torch start CUDA (Taichi's
  CUDA backend binds device 0 of the process and one runtime per process, so `torch.cuda.set_device`
  alone would leave Taichi on the wrong GPU); a process whose Taichi or torch already runs CUDA is
  refused (`DistributedError`);
- on CPU ranks splits the cores: torch threads and Taichi's `cpu_max_num_threads` become
  cores // ranks-on-this-machine (gloo ranks would otherwise oversubscribe the machine);
- starts the process group (gloo on CPU, NCCL for CUDA tensors) with a timeout, so a collective that
  waits for a dead rank fails instead of hanging: `peer_failures(what)` turns that failure into a
  `DistributedError` naming the step, the rank and the timeout.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist

from taichi_sdf.core import runtime
from taichi_sdf.core.errors import BadInput

__all__ = ["DistInfo", "DistributedError", "init_distributed", "info", "rank", "world_size", "is_distributed", "barrier",
           "broadcast_object", "all_gather_object", "all_reduce_mean", "shard_indices", "threads_per_rank",
           "peer_failures", "finish_distributed", "DEFAULT_TIMEOUT_S"]  # fmt: skip

DEFAULT_TIMEOUT_S = 300.0  # a collective waiting this long for another rank fails (a dead or stuck rank)
_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")


class DistributedError(BadInput, RuntimeError):
    """A multi-process run cannot start or go on: bad launch environment, a runtime started on the wrong
    device, or another rank that died or timed out. Apps print it as one line."""


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job. `distributed` is False for a plain (not launched) process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    backend: str | None = None  # None: no process group
    device: torch.device = torch.device("cpu")  # the torch device this rank trains on
    timeout_s: float = DEFAULT_TIMEOUT_S

    @property
    def distributed(self) -> bool:
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


_info: DistInfo | None = None


def _env_int(name: str, default: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None:
        if default is None:
            raise DistributedError(f"{name}: not set; launch with torchrun, which sets {', '.join(_ENV)}")
        return default
    try:
        return int(raw)
    except ValueError:
        raise DistributedError(f"{name}: expected an integer (set by torchrun), got {raw!r}") from None


def threads_per_rank(local_world_size: int, cores: int | None = None) -> int:
    """CPU threads for each of `local_world_size` ranks sharing this machine's `cores` (default: the
    cores this process may run on): cores // local_world_size, at least 1."""
    if local_world_size < 1:
        raise ValueError(f"local_world_size: expected >= 1, got {local_world_size}")
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if cores < 1:
        raise ValueError(f"cores: expected >= 1, got {cores}")
    return max(1, cores // local_world_size)


def shard_indices(n: int, rank: int, world: int) -> range:
    """This rank's contiguous share of `n` items: ranks get n // world or n // world + 1 items, the shares
    are disjoint and their union in rank order is range(n) (so a global batch is split, not changed).
    Slice a tensor with `t[r.start : r.stop]`."""
    if world < 1:
        raise ValueError(f"world: expected >= 1, got {world}")
    if not 0 <= rank < world:
        raise ValueError(f"rank: expected 0 <= rank < world = {world}, got {rank}")
    if n < 0:
        raise ValueError(f"n: expected >= 0, got {n}")
    return range(rank * n // world, (rank + 1) * n // world)


def _pin_gpu(local_rank: int) -> None:
    """Make the rank's GPU the only visible one (device 0 for Taichi and torch), before CUDA starts."""
    if runtime.is_initialized() and runtime.device().type == "cuda":
        raise DistributedError("taichi_sdf already runs on CUDA in this process, on the GPU it found first; "
                               "call init_distributed() before taichi_sdf.init() or any op, so each rank gets its own GPU")  # fmt: skip
    if torch.cuda.is_initialized():
        raise DistributedError("torch already started CUDA in this process, so CUDA_VISIBLE_DEVICES can no longer pick "
                               "the rank's GPU; call init_distributed() before any CUDA tensor is made")  # fmt: skip
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(local_rank)
        return
    ids = [v for v in visible.split(",") if v.strip()]
    if len(ids) == 1:  # the launcher pinned it already
        return
    if local_rank >= len(ids):
        raise DistributedError(f"LOCAL_RANK={local_rank}: CUDA_VISIBLE_DEVICES={visible!r} names only {len(ids)} GPUs; "
                               "launch at most that many processes per machine (--nproc_per_node)")  # fmt: skip
    os.environ["CUDA_VISIBLE_DEVICES"] = ids[local_rank]


def _split_cpu(local_world_size: int) -> None:
    n = threads_per_rank(local_world_size)
    torch.set_num_threads(n)
    runtime.set_taichi_cpu_threads(n)  # taken when Taichi starts; a warning if it already runs with more


def init_distributed(backend: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S,
                     device: str = "auto") -> DistInfo:  # fmt: skip
    """Join the job torchrun launched (see the module docstring) and return this rank's `DistInfo`;
    without torchrun's variables, a single-process `DistInfo` and nothing else. Idempotent.

    Args:
        backend: "gloo", "nccl", ...; None = gloo for CPU ranks, "cpu:gloo,cuda:nccl" for GPU ranks
            (NCCL for the gradients, gloo for small CPU objects such as `broadcast_object`).
        timeout_s: how long a collective waits for the other ranks before it fails.
        device: "auto" (CUDA when this rank's pinned GPU is visible to torch), "cpu" or "cuda".
    """
    global _info
    if _info is not None:
        return _info
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device: expected 'auto', 'cpu' or 'cuda', got {device!r}")
    if not timeout_s > 0:
        raise ValueError(f"timeout_s: expected > 0 seconds, got {timeout_s}")
    if "RANK" not in os.environ and "WORLD_SIZE" not in os.environ:
        dev = "cuda" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "cpu"
        _info = DistInfo(device=torch.device(dev), timeout_s=timeout_s)
        return _info
    rank_, world = _env_int("RANK"), _env_int("WORLD_SIZE")
    local_rank = _env_int("LOCAL_RANK", 0)
    local_world = _env_int("LOCAL_WORLD_SIZE", world)
    if world < 1 or not 0 <= rank_ < world:
        raise DistributedError(f"RANK={rank_}, WORLD_SIZE={world}: expected 0 <= RANK < WORLD_SIZE")
    if not 0 <= local_rank < local_world:
        raise DistributedError(f"LOCAL_RANK={local_rank}, LOCAL_WORLD_SIZE={local_world}: expected 0 <= LOCAL_RANK < LOCAL_WORLD_SIZE")
    use_cuda = device == "cuda" or (device == "auto" and torch.backends.cuda.is_built() and backend != "gloo")
    if use_cuda:
        _pin_gpu(local_rank)
        if not torch.cuda.is_available():
            if device == "cuda":
                raise DistributedError(f"rank {rank_}: device 'cuda' but torch sees no GPU with "
                                       f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}")  # fmt: skip
            use_cuda = False
    if not use_cuda:
        _split_cpu(local_world)
    backend = backend or ("cpu:gloo,cuda:nccl" if use_cuda else "gloo")
    if not dist.is_initialized():
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")  # NCCL: a timed-out collective raises
        if use_cuda:
            torch.cuda.set_device(0)  # the rank's one visible GPU
        with peer_failures("joining the process group", timeout_s):
            dist.init_process_group(backend, rank=rank_, world_size=world, timeout=datetime.timedelta(seconds=timeout_s))
    dev = torch.device("cuda", 0) if use_cuda else torch.device("cpu")
    # Every rank must train on the same kind of device (one rank without a GPU would hang NCCL later).
    kinds = all_gather_object(dev.type, timeout_s)
    if len(set(kinds)) > 1:
        raise DistributedError(f"ranks disagree on the device: {kinds} (rank order); give every rank a GPU "
                               "(--nproc_per_node <= GPUs per machine) or run all on CPU (device=cpu)")  # fmt: skip
    _info = DistInfo(rank_, world, local_rank, local_world, backend, dev, timeout_s)
    return _info


def finish_distributed() -> None:
    """End a successful multi-process run: every rank meets at a barrier, then leaves the process group.
    Left to interpreter teardown, gloo sometimes aborts a rank whose peer already left ("terminate
    called without an active exception", exit -6), and torchrun then reports the run as failed.
    A no-op in a single process."""
    if dist.is_available() and dist.is_initialized():
        with peer_failures("the end-of-run barrier"):
            dist.barrier()
        dist.destroy_process_group()


def info() -> DistInfo:
    """The `DistInfo` of `init_distributed`, or of the current process group when one was started
    elsewhere, else single-process info."""
    if _info is not None:
        return _info
    if is_distributed():
        return DistInfo(dist.get_rank(), dist.get_world_size(), backend=str(dist.get_backend()))
    return DistInfo()


def is_distributed() -> bool:
    """A process group is running (torchrun + `init_distributed`, or a group started elsewhere)."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


# gloo reports a dropped peer as a plain RuntimeError from its transport ("[.../gloo/transport/tcp/pair.cc:537]
# Read error ...: Connection reset by peer"); c10d raises DistError subclasses (timeouts, NCCL errors).
_PEER_FAILURE_MARKS = ("gloo/transport", "Connection reset by peer", "Connection closed by peer", "Timed out", "timed out")


def _is_peer_failure(e: BaseException) -> bool:
    return isinstance(e, dist.DistError) or (isinstance(e, RuntimeError) and any(m in str(e) for m in _PEER_FAILURE_MARKS))


@contextlib.contextmanager
def peer_failures(what: str, timeout_s: float | None = None) -> Iterator[None]:
    """Turn a failed collective inside the block (a rank died, or did not answer within the timeout)
    into a `DistributedError` naming `what`, this rank and the timeout."""
    try:
        yield
    except RuntimeError as e:
        if not _is_peer_failure(e):
            raise
        t = timeout_s if timeout_s is not None else info().timeout_s
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DistributedError(f"rank {rank()}: {what} failed: another rank died or did not answer within "
                               f"{t:g} s ({first})") from e  # fmt: skip


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if is_distributed():
        with peer_failures("barrier"):
            dist.barrier()


def broadcast_object(obj=None, src: int = 0):
    """`obj` of rank `src` on every rank (pickled; for small state such as a loaded checkpoint)."""
    if not is_distributed():
        return obj
    box = [obj if rank() == src else None]
    with peer_failures("broadcast_object"):
        dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj, timeout_s: float | None = None) -> list:
    """Every rank's `obj`, in rank order (`[obj]` in a single process)."""
    if not is_distributed():
        return [obj]
    out = [None] * dist.get_world_size()
    with peer_failures("all_gather_object", timeout_s):
        dist.all_gather_object(out, obj)
    return out


def all_reduce_mean(value: torch.Tensor | Mapping[str, float]):
    """The mean over ranks of a tensor (a new tensor) or of a dict of floats (a new dict, same keys
    on every rank, e.g. a step's loss terms for the log); the value itself in a single process."""
    if isinstance(value, Mapping):
        keys = list(value)
        t = all_reduce_mean(torch.tensor([float(value[k]) for k in keys], dtype=torch.float64))
        return {k: float(v) for k, v in zip(keys, t.tolist())}
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"value: expected a torch.Tensor or a dict of floats, got {type(value).__name__}")
    if not is_distributed():
        return value.clone()
    out = value.detach().clone()
    if out.device.type == "cpu" and info().device.type == "cuda" and "gloo" not in str(dist.get_backend()):
        out = out.to(info().device)
    with peer_failures("all_reduce_mean"):
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return (out / dist.get_world_size()).to(value.device)
