"""torch.distributed helper (`taichi_sdf.train.distributed`) and DeepSDF under DDP.

Unit tests: shard_indices, the CPU thread split, the device-index check of `check_tensor` (with a faked
CUDA runtime: there is no GPU here), the no-op single-process path. Multi-process tests spawn 2 gloo
ranks on 127.0.0.1 (module-level workers, every join bounded, leftovers killed)."""

from __future__ import annotations

import pytest
import torch

from taichi_sdf.core import runtime, validation
from taichi_sdf.train import distributed as tdist

# -- unit tests ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n, world", [(8, 2), (7, 2), (10, 3), (2, 4), (0, 3), (5, 1)])
def test_shard_indices_split_a_batch_without_changing_it(n, world):
    shards = [tdist.shard_indices(n, r, world) for r in range(world)]
    assert [i for s in shards for i in s] == list(range(n))  # disjoint, union in rank order = the batch
    assert max(map(len, shards)) - min(map(len, shards)) <= 1  # balanced


def test_shard_indices_refuse_bad_arguments():
    with pytest.raises(ValueError, match="rank: expected 0 <= rank < world = 2, got 2"):
        tdist.shard_indices(8, 2, 2)
    with pytest.raises(ValueError, match="world: expected >= 1"):
        tdist.shard_indices(8, 0, 0)
    with pytest.raises(ValueError, match="n: expected >= 0"):
        tdist.shard_indices(-1, 0, 1)


def test_threads_per_rank_splits_the_cores():
    assert tdist.threads_per_rank(2, cores=2) == 1
    assert tdist.threads_per_rank(4, cores=16) == 4
    assert tdist.threads_per_rank(3, cores=16) == 5
    assert tdist.threads_per_rank(8, cores=2) == 1  # never 0
    with pytest.raises(ValueError, match="local_world_size"):
        tdist.threads_per_rank(0, cores=2)


def test_init_distributed_without_torchrun_is_single_process(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr(tdist, "_info", None)
    threads = torch.get_num_threads()
    info = tdist.init_distributed(device="cpu")
    assert (info.rank, info.world_size, info.distributed, info.device) == (0, 1, False, torch.device("cpu"))
    assert torch.get_num_threads() == threads  # nothing changed
    assert not tdist.is_distributed() and tdist.rank() == 0 and tdist.world_size() == 1
    assert tdist.broadcast_object({"a": 1}) == {"a": 1}
    assert tdist.all_reduce_mean({"loss": 2.0}) == {"loss": 2.0}


def test_init_distributed_names_a_bad_environment(monkeypatch):
    monkeypatch.setattr(tdist, "_info", None)
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(tdist.DistributedError, match="RANK=2, WORLD_SIZE=2"):
        tdist.init_distributed(device="cpu")
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(tdist.DistributedError, match="RANK: expected an integer"):
        tdist.init_distributed(device="cpu")


def test_pinning_a_gpu_is_refused_once_taichi_runs_on_cuda(monkeypatch):
    monkeypatch.setattr(runtime, "_info", runtime.RuntimeInfo("cuda", torch.device("cuda", 0)))
    with pytest.raises(tdist.DistributedError, match="call init_distributed\\(\\) before taichi_sdf.init"):
        tdist._pin_gpu(1)


def test_pinning_picks_the_local_ranks_gpu(monkeypatch):
    monkeypatch.setattr(runtime, "_info", None)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    tdist._pin_gpu(1)
    assert __import__("os").environ["CUDA_VISIBLE_DEVICES"] == "1"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    tdist._pin_gpu(1)
    assert __import__("os").environ["CUDA_VISIBLE_DEVICES"] == "6"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    with pytest.raises(tdist.DistributedError, match="names only 2 GPUs"):
        tdist._pin_gpu(2)


class _OnCuda1(torch.Tensor):
    """A CPU tensor that reports cuda:1 (no GPU here): enough for the device check."""

    @property
    def device(self):
        return torch.device("cuda", 1)


def test_check_tensor_compares_the_device_index(monkeypatch):
    assert validation.device_mismatch(torch.device("cuda", 0), torch.device("cuda", 0)) is None
    assert validation.device_mismatch(torch.device("cuda", 1), torch.device("cuda")) is None  # no index asked for
    assert "cuda:0" in validation.device_mismatch(torch.device("cuda", 1), torch.device("cuda", 0))
    assert "on cuda" in validation.device_mismatch(torch.device("cpu"), torch.device("cuda", 0))
    monkeypatch.setattr(runtime, "device", lambda: torch.device("cuda", 0))  # a runtime on the process's GPU 0
    x = torch.zeros(4, 3).as_subclass(_OnCuda1)
    with pytest.raises(ValueError, match=r"points: expected a tensor on cuda:0 \(the GPU taichi_sdf runs on\), got one on cuda:1"):
        validation.check_tensor("points", x, shape=(None, 3))
    with pytest.raises(ValueError, match="points: expected a tensor on cuda"):
        validation.check_tensor("points", torch.zeros(4, 3), shape=(None, 3))
