"""The trainer base on a toy regression: exact resume after SIGTERM, retention, the run lock, refusals
of occupied folders / incompatible resumes / evaluation without a checkpoint, stale temp files, logs."""

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field

import pytest
import torch

from taichi_sdf.train.trainer import Trainer, UserError


@dataclass
class ToyModel:
    width: int = 4


@dataclass
class ToyTrain:
    iterations: int = 12
    lr: float = 0.1


@dataclass
class ToyConfig:
    model: ToyModel = field(default_factory=ToyModel)
    data: dict = field(default_factory=dict)
    train: ToyTrain = field(default_factory=ToyTrain)


class Toy(Trainer):
    name = "toy"
    log_every = 2

    def __init__(self, out, mode="new", cfg=None, **kw):
        cfg = cfg or ToyConfig()
        super().__init__(cfg, out, seed=3, mode=mode)
        for k, v in kw.items():
            setattr(self, k, v)
        self.net = torch.nn.Sequential(torch.nn.Linear(3, cfg.model.width), torch.nn.Dropout(0.3), torch.nn.Linear(cfg.model.width, 1))
        self.opt = torch.optim.SGD(self.net.parameters(), lr=cfg.train.lr)
        self.total_iterations = cfg.train.iterations
        self.start(mode)

    def train_step(self):
        x = torch.randn(16, 3, generator=self.gen)
        loss = (self.net(x)[:, 0] - x.sum(1)).square().mean()  # dropout draws from the global RNG
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return {"loss": float(loss.detach())}

    def checkpoint_due(self):
        return self.iteration % 3 == 0

    def state(self):
        return {"net": self.net.state_dict(), "opt": self.opt.state_dict()}

    def load_state(self, s):
        self.net.load_state_dict(s["net"])
        self.opt.load_state_dict(s["opt"])


def params(t):
    return [p.detach().clone() for p in t.net.parameters()]


def test_sigterm_stops_at_an_iteration_boundary_and_resume_is_bit_exact(tmp_path):
    ref = Toy(tmp_path / "ref")
    ref.train(progress=False)

    def kill_at_5(tr, row):
        if tr.iteration == 5:
            os.kill(os.getpid(), signal.SIGTERM)

    part = Toy(tmp_path / "run")
    part.train(progress=False, callback=kill_at_5)
    assert part.interrupted == signal.SIGTERM and part.iteration == 5
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handler restored
    torch.manual_seed(99)  # resume must restore every RNG itself
    resumed = Toy(tmp_path / "run", mode="resume")
    assert resumed.iteration == 5
    resumed.train(progress=False)
    assert all(torch.equal(a, b) for a, b in zip(params(ref), params(resumed)))
    ref_log = (tmp_path / "ref" / "log.csv").read_text()
    assert (tmp_path / "run" / "log.csv").read_text() == ref_log  # log continued, no duplicate rows
    assert ref_log.splitlines()[0] == "iteration,loss" and len(ref_log.splitlines()) == 1 + 6
    assert (tmp_path / "run" / "log.png").stat().st_size > 0


def test_retention_keeps_the_last_k_and_every_nth(tmp_path):
    tr = Toy(tmp_path, keep_last=2, keep_every=6)
    tr.train(progress=False)  # checkpoints at 3, 6, 9, 12
    names = sorted(p.name for p in (tmp_path / "checkpoints").glob("*.pt"))
    assert names == ["ckpt_00000006.pt", "ckpt_00000009.pt", "ckpt_00000012.pt", "latest.pt"]


def test_a_second_run_in_a_locked_folder_is_refused(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        tmp_path.mkdir(exist_ok=True)
        (tmp_path / ".lock").write_text(f"{holder.pid}\n")
        with pytest.raises(UserError, match=rf"{tmp_path}.*PID {holder.pid}"):
            Toy(tmp_path).train(progress=False)
    finally:
        holder.kill()
        holder.wait()
    # the holder is dead now: its stale lock is taken over, and released at the end
    tr = Toy(tmp_path)
    tr.train(progress=False)
    assert tr.iteration == 12 and not (tmp_path / ".lock").exists()


def test_lock_is_held_while_training(tmp_path):
    seen = []
    Toy(tmp_path).train(progress=False, callback=lambda tr, row: seen.append((tmp_path / ".lock").read_text().strip()))
    assert set(seen) == {str(os.getpid())}


def test_new_run_in_a_finished_folder_is_refused_unless_overwrite_or_resume(tmp_path):
    Toy(tmp_path).train(progress=False)
    with pytest.raises(UserError, match="already holds a run.*--resume.*--overwrite"):
        Toy(tmp_path).train(progress=False)
    done = Toy(tmp_path, mode="resume")
    assert done.iteration == 12
    fresh = Toy(tmp_path, mode="overwrite")
    fresh.train(progress=False, iterations=2)
    assert fresh.iteration == 2 and sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["ckpt_00000002.pt", "latest.pt"]


def test_resume_with_other_model_or_data_settings_is_refused(tmp_path):
    Toy(tmp_path).train(progress=False, iterations=3)
    cfg = ToyConfig(model=ToyModel(width=8), data={"root": "elsewhere"}, train=ToyTrain(iterations=20, lr=0.01))
    with pytest.raises(UserError, match=r"model.width \(4 -> 8\).*|data.root"):
        Toy(tmp_path, mode="resume", cfg=cfg)
    ok = Toy(tmp_path, mode="resume", cfg=ToyConfig(train=ToyTrain(iterations=20, lr=0.01)))  # schedule keys may change
    assert ok.iteration == 3 and ok.total_iterations == 20


def test_eval_without_a_checkpoint_is_refused(tmp_path):
    with pytest.raises(UserError, match="--eval-only: no checkpoint"):
        Toy(tmp_path, mode="eval")


def test_stale_temp_files_of_a_killed_run_are_removed(tmp_path):
    ckpt = tmp_path / "checkpoints"
    ckpt.mkdir(parents=True)
    stale = [ckpt / ".ckpt_00000003.pt.k2j3h4.tmp", ckpt / ".latest.pt.abc123.tmp", tmp_path / ".metrics.json.x1.tmp"]
    for p in stale:
        p.write_bytes(b"half a checkpoint")
    Toy(tmp_path, mode="resume").train(progress=False, iterations=1)
    assert not any(p.exists() for p in stale)
    assert not list(tmp_path.rglob("*.tmp"))


@dataclass
class ToyThreadsConfig(ToyConfig):
    torch_threads: int = 0


def test_resume_with_auto_threads_keeps_the_checkpoints_thread_count(tmp_path):
    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a = Toy(tmp_path, cfg=ToyThreadsConfig())
        a.train(3)  # checkpoint at iteration 3, written with 1 thread
        torch.set_num_threads(2)  # a new auto pick at resume time would differ
        Toy(tmp_path, mode="resume", cfg=ToyThreadsConfig())
        assert torch.get_num_threads() == 1
        torch.set_num_threads(2)
        Toy(tmp_path, mode="resume", cfg=ToyThreadsConfig(torch_threads=2))  # an explicit setting wins
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(saved)
