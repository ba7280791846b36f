"""torch.distributed helper (`taichi_sdf.train.distributed`) and DeepSDF under DDP.

Unit tests: shard_indices, the CPU thread split, the device-index check of `check_tensor` (with a faked
CUDA runtime: there is no GPU here), the no-op single-process path. Multi-process tests spawn 2 gloo
ranks on 127.0.0.1 (module-level workers, every join bounded, leftovers killed)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from taichi_sdf.core import runtime, validation
from taichi_sdf.train import distributed as tdist

ROOT = Path(__file__).resolve().parents[2]

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


# -- multi-process: 2 gloo ranks on 127.0.0.1 ----------------------------------------------------------

JOIN_S = 180  # bound on each spawned run (they take seconds); a hang is killed and fails the test
TINY = ["model.latent_size=8", "model.dims=[32,32,32,32]", "model.latent_in=[2]", "model.dropout_prob=0.0",
        "model.code_init_std=3.0",  # codes start beyond code_bound=1, so the bound acts every step
        "train.scenes_per_batch=4", "train.samples_per_scene=128", "train.epochs=3", "train.checkpoint_every=1",
        "train.code_reg_warmup=2", "device=cpu", "torch_threads=1"]  # fmt: skip
# float32 equality of a 2-rank run with the single-process run of the same global batches: the two
# sum the per-sample gradients in another order (two half GEMMs + all-reduce), which moves the
# weights by ~1e-7 per step; over these few Adam steps the difference stays below this.
ATOL = 1e-5


def make_spheres(root: Path, n_shapes: int = 4) -> Path:
    """DeepSDF layout with `n_shapes` spheres (SDF |x| - r) in one train split."""
    from taichi_sdf.data.deepsdf import Instance, save_sdf_samples, save_split

    rng = np.random.default_rng(0)
    insts = []
    for i in range(n_shapes):
        r = 0.3 + 0.1 * i
        x = rng.uniform(-1, 1, size=(600, 3)).astype(np.float32)
        s = np.linalg.norm(x, axis=1) - r
        xs = np.concatenate([x, s[:, None]], 1).astype(np.float32)
        it = Instance("synth", "spheres", f"s{i}")
        save_sdf_samples(it.sdf_samples(root), xs[s >= 0], xs[s < 0])
        insts.append(it)
    save_split(root / "splits" / "synth_spheres_train.json", insts)
    return root


def deepsdf_cfg(data: Path, out: Path, *extra: str):
    from apps.deepsdf.config import DeepSDFConfig
    from taichi_sdf.train.config import load_config

    return load_config(DeepSDFConfig, "configs/deepsdf/cpu.yaml", TINY + [f"data.root={data}", f"out={out}", *extra])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_entry(target, rank: int, world: int, port: int, result_dir: str, args: tuple) -> None:
    """A spawned rank: torchrun's environment, then `target(rank, world, *args)`; its return value (or
    the error) goes to <result_dir>/rank<r>.pt."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world), TAICHI_SDF_ARCH="cpu")  # fmt: skip
    try:
        out = {"ok": target(rank, world, *args)}
    except BaseException as e:  # noqa: BLE001 - reported to the test
        out = {"error": f"{type(e).__name__}: {e}"}
    torch.save(out, Path(result_dir) / f"rank{rank}.pt")
    sys.stdout.flush()
    sys.stderr.flush()
    # os._exit: skip interpreter teardown, where gloo sometimes aborts a rank whose peer already left
    # ("terminate called without an active exception", exit -6) after the result above is written
    os._exit(0 if "ok" in out else 1)


def run_ranks(tmp: Path, target, *args, world: int = 2) -> list[dict]:
    """Run `target` on `world` spawned ranks; every join bounded by JOIN_S, leftovers killed."""
    ctx = mp.get_context("spawn")
    result_dir = tmp / f"results_{target.__name__}_{_free_port()}"
    result_dir.mkdir(parents=True)
    port = _free_port()
    procs = [ctx.Process(target=_rank_entry, args=(target, r, world, port, str(result_dir), args)) for r in range(world)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + JOIN_S
    try:
        for p in procs:
            p.join(max(1.0, deadline - time.monotonic()))
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(10)
    results = []
    for r, p in enumerate(procs):
        f = result_dir / f"rank{r}.pt"
        res = torch.load(f, weights_only=False) if f.is_file() else {"error": f"no result (exit code {p.exitcode})"}
        results.append(res | {"exitcode": p.exitcode})
    return results


def _params(tr) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in tr.system.state_dict().items()} | {"losses": torch.tensor([r["loss"] for r in tr.log])}


def train_deepsdf(rank: int, world: int, data: str, out: str, extra: tuple, variant: str = "ddp", iterations=None):
    """A rank's DeepSDF run; `variant` "codes_outside_ddp" / "max_norm_in_forward" are the designs that
    diverge. `iterations`: stop after that many batches (a mid-epoch checkpoint), else train to the end."""
    from apps.deepsdf.train import DeepSDFTrainer
    from taichi_sdf.train.trainer import Trainer

    tr = DeepSDFTrainer(deepsdf_cfg(Path(data), Path(out), *extra), mode="resume")
    if variant == "codes_outside_ddp":  # the public-fork pattern: DDP wraps the decoder only
        tr.model = tr.system
        tr.system.decoder = torch.nn.parallel.DistributedDataParallel(tr.decoder)
    elif variant == "max_norm_in_forward":  # nn.Embedding(max_norm=...): the renorm is a side effect of forward
        tr.latents.embedding.max_norm = tr.latents.code_bound
        tr.latents.renorm_ = lambda *a, **k: None
    if iterations is None:
        tr.train(progress=False)
    else:
        Trainer.train(tr, iterations, progress=False)
    return _params(tr)


def _single(data: Path, out: Path, *extra: str) -> dict[str, torch.Tensor]:
    from apps.deepsdf.train import DeepSDFTrainer

    tr = DeepSDFTrainer(deepsdf_cfg(data, out, *extra))
    tr.train(progress=False)
    return _params(tr)


def _max_diff(a: dict, b: dict) -> float:
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a if k != "losses")


@pytest.fixture(scope="module")
def spheres(tmp_path_factory):
    return make_spheres(tmp_path_factory.mktemp("ddp") / "data")


@pytest.fixture(scope="module")
def ddp_run(spheres, tmp_path_factory):
    """An uninterrupted 2-rank run (3 epochs of 1 batch of 4 shapes: 2 per rank), each rank's share in 2
    chunks (DDP all-reduces after the last one only: `no_sync`)."""
    tmp = tmp_path_factory.mktemp("ddp_run")
    return run_ranks(tmp, train_deepsdf, str(spheres), str(tmp / "out"), ("train.batch_split=2",))


@pytest.mark.slow
def test_ddp_ranks_agree_and_equal_a_single_process_run(spheres, ddp_run, tmp_path):
    assert all("ok" in r for r in ddp_run), ddp_run
    r0, r1 = ddp_run[0]["ok"], ddp_run[1]["ok"]
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k  # decoder and codes bit-identical across ranks
    single = _single(spheres, tmp_path / "single")  # the whole batch in one chunk
    assert _max_diff(r0, single) < ATOL  # = one process on the union of the ranks' batches
    torch.testing.assert_close(r0["losses"], single["losses"], atol=ATOL, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["codes_outside_ddp", "max_norm_in_forward"])
def test_codes_diverge_across_ranks_without_the_design(spheres, tmp_path, variant):
    res = run_ranks(tmp_path, train_deepsdf, str(spheres), str(tmp_path / "out"), (), variant)
    assert all("ok" in r for r in res), res
    codes = [r["ok"]["latents.embedding.weight"] for r in res]
    assert float((codes[0] - codes[1]).abs().max()) > 1e-3  # each rank holds other codes


@pytest.mark.slow
def test_resumed_ddp_run_equals_the_uninterrupted_one(spheres, tmp_path):
    out = str(tmp_path / "out")
    extra = ("train.scenes_per_batch=2",)  # 2 batches per epoch: stop mid-epoch
    full = run_ranks(tmp_path, train_deepsdf, str(spheres), str(tmp_path / "full"), extra)
    part = run_ranks(tmp_path, train_deepsdf, str(spheres), out, extra, "ddp", 3)  # epoch 2, batch 1 of 2
    assert all("ok" in r for r in full + part), full + part
    shutil.copytree(out, tmp_path / "one")  # the same checkpoint, to be resumed by one process below
    resumed = run_ranks(tmp_path, train_deepsdf, str(spheres), out, extra)
    assert all("ok" in r for r in resumed), resumed
    for k in full[0]["ok"]:
        assert torch.equal(resumed[0]["ok"][k], full[0]["ok"][k]), k  # bit for bit
    # The state is global: the same checkpoint resumed by one process gives the same run (to rounding).
    from apps.deepsdf.train import DeepSDFTrainer

    tr = DeepSDFTrainer(deepsdf_cfg(spheres, tmp_path / "one", *extra), mode="resume")
    assert tr.iteration == 3
    tr.train(progress=False)
    assert _max_diff(_params(tr), full[0]["ok"]) < ATOL


def fail_after_two_batches(rank: int, world: int, data: str, out: str, how: str) -> None:
    from apps.deepsdf.train import DeepSDFTrainer

    tdist.init_distributed(timeout_s=5.0, device="cpu")
    tr = DeepSDFTrainer(deepsdf_cfg(Path(data), Path(out), "train.epochs=50"))

    def fail(trainer, row):
        if rank == 1 and trainer.iteration == 2:
            if how == "hangs":  # stuck (a deadlock, a stalled disk): alive, its sockets open
                time.sleep(12)
            os._exit(3)  # as a crashed or killed rank: no clean-up, sockets drop

    tr.train(progress=False, callback=fail)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["dies", "hangs"])
def test_a_dead_rank_makes_the_other_exit_with_a_clear_error(spheres, tmp_path, how):
    res = run_ranks(tmp_path, fail_after_two_batches, str(spheres), str(tmp_path / "out"), how)
    assert res[1]["exitcode"] == 3
    assert res[0]["exitcode"] == 1, res[0]  # exited by itself (a hang would have been killed: exit code < 0)
    assert "DistributedError: rank 0:" in res[0]["error"] and "another rank died or did not answer within 5 s" in res[0]["error"]


@pytest.mark.slow
def test_torchrun_trains_deepsdf_on_two_cpu_ranks(spheres, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "apps.deepsdf",
           "train", *TINY, f"data.root={spheres}", f"out={out}"]  # fmt: skip
    env = os.environ | {"PYTHONPATH": str(ROOT), "TAICHI_SDF_ARCH": "cpu"}
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=JOIN_S)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.count("deepsdf train: 4 shapes") == 1 and "2 ranks (gloo)" in p.stdout  # rank 0 prints
    log = json.loads((out / "train_log.json").read_text())
    assert [r["epoch"] for r in log] == [1, 2, 3]
    assert (out / "checkpoints" / "latest.pt").is_file() and not (out / ".lock").exists()


def test_code_bound_before_forward_equals_max_norm_in_forward(spheres, tmp_path):
    """Single process: the trainer's renorm of the batch's rows before forward is the original's
    nn.Embedding(max_norm) lookup, bit for bit (codes start beyond the bound, so it acts every step)."""
    from apps.deepsdf.train import DeepSDFTrainer

    runs = []
    for variant in ("ddp", "max_norm_in_forward"):
        tr = DeepSDFTrainer(deepsdf_cfg(spheres, tmp_path / variant, "train.epochs=2"))
        if variant == "max_norm_in_forward":
            tr.latents.embedding.max_norm = tr.latents.code_bound
            tr.latents.renorm_ = lambda *a, **k: None
        tr.train(progress=False)
        runs.append(_params(tr))
    for k in runs[0]:
        assert torch.equal(runs[0][k], runs[1][k]), k


def signal_rank1_after_two_batches(rank: int, world: int, data: str, out: str):
    import signal as _signal

    from apps.deepsdf.train import DeepSDFTrainer

    tr = DeepSDFTrainer(deepsdf_cfg(Path(data), Path(out), "train.epochs=50", "train.scenes_per_batch=2"))

    def sigterm(trainer, row):
        if rank == 1 and trainer.iteration == 2:
            os.kill(os.getpid(), _signal.SIGTERM)  # only rank 1 is told to stop

    tr.train(progress=False, callback=sigterm)
    return {"iteration": tr.iteration, "interrupted": tr.interrupted}


@pytest.mark.slow
def test_a_signal_to_one_rank_stops_all_after_the_same_batch(spheres, tmp_path):
    import signal as _signal

    from taichi_sdf.train.checkpoint import load_checkpoint

    res = run_ranks(tmp_path, signal_rank1_after_two_batches, str(spheres), str(tmp_path / "out"))
    assert all("ok" in r for r in res), res
    assert res[0]["ok"] == res[1]["ok"] == {"iteration": 3, "interrupted": _signal.SIGTERM}  # agreed in batch 3's all-reduce
    assert load_checkpoint(tmp_path / "out" / "checkpoints" / "latest.pt")["iteration"] == 3  # rank 0 saved there


def resume_from_a_broken_checkpoint(rank: int, world: int, data: str, out: str):
    from apps.deepsdf.train import DeepSDFTrainer

    tdist.init_distributed(timeout_s=20.0, device="cpu")
    DeepSDFTrainer(deepsdf_cfg(Path(data), Path(out)), mode="resume")


@pytest.mark.slow
def test_a_checkpoint_rank0_cannot_read_is_an_error_on_every_rank(spheres, tmp_path):
    ckpt = tmp_path / "out" / "checkpoints" / "latest.pt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"not a checkpoint")
    res = run_ranks(tmp_path, resume_from_a_broken_checkpoint, str(spheres), str(tmp_path / "out"))
    assert res[0]["exitcode"] == res[1]["exitcode"] == 1
    assert res[0]["error"] == res[1]["error"] and "latest.pt" in res[0]["error"]  # rank 0's error, raised on rank 1 too
