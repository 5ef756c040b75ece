"""The training loop: determinism, exact kill-and-resume, divergence, schedules, losses, callbacks."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

from traindyn.config import load_config
from traindyn.data import prepare_dataset
from traindyn.train import Callback, RunSpec, lr_factor, make_loss, train


def make_spec(**overrides) -> RunSpec:
    """A small MLP run on digits; ``overrides`` replace any RunSpec field."""
    base = {
        "study": "test",
        "run": "sp-w32-d2-lr0.1-s0",
        "dataset": "digits",
        "model": {"arch": "mlp", "width": 32, "depth": 2},
        "param": "sp",
        "base_width": 32,
        "depth_alpha": None,
        "optimizer": "sgd",
        "lr": 0.1,
        "momentum": 0.9,  # optimizer state that a resume must restore
        "weight_decay": 1e-4,
        "loss": "xent",
        "steps": 60,
        "batch_size": 32,
        "schedule": "cosine",  # an LR that depends on the step
        "warmup_steps": 5,
        "eval_every": 10,
        "eval_examples": 128,
        "checkpoint_every": 10,
        "loss_cap": 20.0,
        "seed": 0,
        "fixed_batch_size": 32,
    }
    return RunSpec(**{**base, **overrides})


def _metrics(run_dir):
    return pd.read_parquet(run_dir / "metrics.parquet")


def _finals(final):
    return {k: v for k, v in final.items() if k.startswith("final_")}


# ----------------------------------------------------------------------------- determinism


def test_same_spec_and_seed_give_identical_metrics(digits, tmp_path):
    spec = make_spec(checkpoint_every=0)
    a = train(spec, digits, tmp_path / "a", progress=False)
    b = train(spec, digits, tmp_path / "b", progress=False)
    pd.testing.assert_frame_equal(_metrics(tmp_path / "a"), _metrics(tmp_path / "b"), check_exact=True)
    assert _finals(a) == _finals(b)
    assert len(_finals(a)) == 4 and not a["diverged"]
    # A different seed is a different run: the comparison above can fail.
    c = train(make_spec(checkpoint_every=0, seed=1), digits, tmp_path / "c", progress=False)
    assert _finals(c) != _finals(a)


# ----------------------------------------------------------------------------- kill and resume

_CHILD = """
import json, sys, time
from pathlib import Path
import torch
torch.set_num_threads(1)
from traindyn.train import Callback, RunSpec, train

class Hold(Callback):
    # Blocks (touching run_dir/holding) after step `at`, so the parent kills a run mid-way.
    def __init__(self, at):
        self.at = at
    def on_step_end(self, state, loss):
        if state.step == self.at:
            (state.run_dir / "holding").touch()
            time.sleep(600)

spec = RunSpec.from_dict(json.loads(sys.argv[1]))
train(spec, sys.argv[2], sys.argv[3], callbacks=[Hold(int(sys.argv[4]))], progress=False)
"""


class _Hold(Callback):
    """The child's callback in this process (stateless; never holds here)."""


def _child(spec, data_dir, run_dir, hold_at):
    cmd = [sys.executable, "-c", _CHILD, json.dumps(spec.to_dict()), str(data_dir), str(run_dir), str(hold_at)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path, proc, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"child exited ({proc.returncode}) before {path.name} appeared:\n{proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{path.name} did not appear within {timeout} s")
        time.sleep(0.01)


def test_sigkill_then_resume_equals_uninterrupted_run(digits, tmp_path, capfd):
    spec = make_spec()  # 60 steps, checkpoints every 10, momentum, cosine with warm-up
    run_dir = tmp_path / "killed"
    proc = _child(spec, digits, run_dir, hold_at=25)
    _wait_for(run_dir / "checkpoint.pt", proc)
    _wait_for(run_dir / "holding", proc)  # at step 25: the checkpoint of step 20 is on disk
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert (run_dir / "checkpoint.pt").is_file() and not (run_dir / "final.json").exists()

    # Resume in this process (a fresh interpreter costs seconds of imports): the model, the
    # optimizer, the sampler and the RNG all come from checkpoint.pt, not from this process.
    resumed = train(spec, digits, run_dir, callbacks=[_Hold()], progress=False)
    assert "resumed from" in (err := capfd.readouterr().err) and "at step 20" in err, err

    full = train(spec, digits, tmp_path / "full", callbacks=[_Hold()], progress=False)
    pd.testing.assert_frame_equal(_metrics(run_dir), _metrics(tmp_path / "full"), check_exact=True)
    assert _finals(resumed) == _finals(full) and len(_finals(full)) == 4
    assert json.loads((run_dir / "final.json").read_text()) == resumed
    assert not (run_dir / "checkpoint.pt").exists()


# ----------------------------------------------------------------------------- divergence


def test_huge_lr_diverges_without_raising(digits, tmp_path):
    spec = make_spec(lr=1e4, momentum=0.0, schedule="constant", warmup_steps=0, checkpoint_every=0)
    final = train(spec, digits, tmp_path / "run", progress=False)
    assert final["diverged"] is True
    assert isinstance(final["diverged_at"], int) and 1 <= final["diverged_at"] < spec.steps
    assert final["steps_done"] < spec.steps
    assert all(v is None for v in _finals(final).values()) and len(_finals(final)) == 4
    assert json.loads((tmp_path / "run" / "final.json").read_text()) == final
    metrics = _metrics(tmp_path / "run")
    last = metrics[metrics.metric == "train_loss_batch"].iloc[-1]
    assert last.step == final["diverged_at"]
    assert not math.isfinite(last.value) or last.value > spec.loss_cap
    assert set(metrics.run) == {spec.run}


# ----------------------------------------------------------------------------- schedules


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        # steps=10, warmup_steps=4; lr_factor(step) multiplies the LR of step + 1.
        ("constant", {0: 1.0, 3: 1.0, 4: 1.0, 9: 1.0}),
        ("warmup", {0: 0.25, 1: 0.5, 3: 1.0, 4: 1.0, 9: 1.0}),
        # after warm-up: 0.5 * (1 + cos(pi * (step - 4) / 6))
        ("cosine", {0: 0.25, 3: 1.0, 4: 1.0, 5: 0.5 * (1 + math.sqrt(3) / 2), 7: 0.5, 9: 0.5 * (1 - math.sqrt(3) / 2)}),
    ],
)
def test_lr_factor(schedule, expected):
    spec = make_spec(steps=10, warmup_steps=4, schedule=schedule)
    for step, value in expected.items():
        assert lr_factor(spec, step) == pytest.approx(value, abs=1e-12), (schedule, step)


def test_cosine_without_warmup_starts_at_one_and_halves_midway():
    spec = make_spec(steps=100, warmup_steps=0, schedule="cosine")
    assert lr_factor(spec, 0) == 1.0
    assert lr_factor(spec, 50) == pytest.approx(0.5, abs=1e-12)
    assert lr_factor(spec, 100) == pytest.approx(0.0, abs=1e-12)


# ----------------------------------------------------------------------------- losses


def test_mse_is_half_squared_error_to_onehot_summed_over_classes():
    gen = torch.Generator().manual_seed(0)
    out = torch.randn(5, 7, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 7, (5,), generator=gen)
    onehot = torch.zeros(5, 7, dtype=torch.float64)
    onehot[torch.arange(5), y] = 1.0
    expected = sum(0.5 * float(((out[i] - onehot[i]) ** 2).sum()) for i in range(5)) / 5
    assert float(make_loss("mse")(out, y)) == pytest.approx(expected, rel=1e-12)
    # Sequences (B, T, V): mean over examples and positions.
    seq, ys = out.reshape(1, 5, 7), y.reshape(1, 5)
    assert float(make_loss("mse")(seq, ys)) == pytest.approx(expected, rel=1e-12)


def test_mse_hessian_in_the_outputs_is_identity():
    loss = make_loss("mse")
    y = torch.tensor([2])
    f = torch.randn(1, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    hess = torch.autograd.functional.hessian(lambda o: loss(o, y), f).reshape(4, 4)
    torch.testing.assert_close(hess, torch.eye(4, dtype=torch.float64), rtol=0, atol=1e-12)
    # With a batch of B the mean makes it I / B.
    yb = torch.tensor([0, 3, 1])
    fb = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    hess = torch.autograd.functional.hessian(lambda o: loss(o, yb), fb).reshape(12, 12)
    torch.testing.assert_close(hess, torch.eye(12, dtype=torch.float64) / 3, rtol=0, atol=1e-12)


def test_unknown_loss_is_rejected():
    with pytest.raises(ValueError, match="expected 'xent' or 'mse'"):
        make_loss("hinge")


# ----------------------------------------------------------------------------- callbacks


class _Count(Callback):
    """Counts steps in its own state and records the count and LR factor every step."""

    def __init__(self):
        self.count = 0

    def on_step_end(self, state, loss):
        self.count += 1
        state.record("counts", count=self.count, lr_factor=state.lr_factor, loss=loss)

    def state_dict(self):
        return {"count": self.count}

    def load_state_dict(self, state):
        self.count = state["count"]


class _Crash(Callback):
    """Raises after step ``at`` (None: never), leaving the last checkpoint behind."""

    def __init__(self, at=None):
        self.at = at

    def on_step_end(self, state, loss):
        if state.step == self.at:
            raise KeyboardInterrupt


def test_callback_rows_land_in_table_and_callback_state_survives_resume(digits, tmp_path):
    spec = make_spec(steps=40, checkpoint_every=10)
    with pytest.raises(KeyboardInterrupt):
        train(spec, digits, tmp_path / "resumed", callbacks=[_Count(), _Crash(at=25)], progress=False)
    assert (tmp_path / "resumed" / "checkpoint.pt").is_file()
    assert not (tmp_path / "resumed" / "counts.parquet").exists()
    train(spec, digits, tmp_path / "resumed", callbacks=[_Count(), _Crash()], progress=False)
    train(spec, digits, tmp_path / "full", callbacks=[_Count(), _Crash()], progress=False)

    table = pd.read_parquet(tmp_path / "resumed" / "counts.parquet")
    assert list(table.columns) == ["step", "count", "lr_factor", "loss", "run"]
    assert table.step.tolist() == list(range(1, 41))
    assert (table["count"] == table.step).all()  # a count restarted at 0 would fail here
    assert (table.run == spec.run).all()
    assert table.lr_factor.tolist() == [lr_factor(spec, s - 1) for s in range(1, 41)]
    pd.testing.assert_frame_equal(table, pd.read_parquet(tmp_path / "full" / "counts.parquet"), check_exact=True)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_resume_on_cuda_matches_uninterrupted_run(digits, tmp_path):
    # The checkpoint's RNG states must come back as CPU tensors, whatever the run's device.
    spec = make_spec(steps=40, checkpoint_every=10)
    cuda = torch.device("cuda")
    with pytest.raises(KeyboardInterrupt):
        train(spec, digits, tmp_path / "resumed", callbacks=[_Crash(at=25)], device=cuda, progress=False)
    resumed = train(spec, digits, tmp_path / "resumed", callbacks=[_Crash()], device=cuda, progress=False)
    full = train(spec, digits, tmp_path / "full", callbacks=[_Crash()], device=cuda, progress=False)
    assert resumed["device"] == "cuda" and resumed["steps_done"] == 40
    pd.testing.assert_frame_equal(_metrics(tmp_path / "resumed"), _metrics(tmp_path / "full"),
                                  rtol=1e-5, atol=1e-7)  # fmt: skip
    assert _finals(resumed) == pytest.approx(_finals(full), rel=1e-5)


# ----------------------------------------------------------------------------- GPT


def test_gpt_trains_on_shakespeare_and_loss_decreases(tmp_path):
    data = tmp_path / "shakespeare"
    prepare_dataset("shakespeare", load_config([], ["data.max_train=20000"]).data, data)
    spec = make_spec(run="gpt", dataset="shakespeare", model={"arch": "gpt", "width": 32, "depth": 2, "n_heads": 4},
                     optimizer="adam", lr=1e-2, momentum=0.0, weight_decay=0.0, steps=30, batch_size=16,
                     schedule="constant", warmup_steps=0, eval_every=30, eval_examples=64, checkpoint_every=0,
                     context=32, fixed_batch_size=16)  # fmt: skip
    final = train(spec, data, tmp_path / "run", progress=False)
    assert not final["diverged"] and final["steps_done"] == 30
    metrics = _metrics(tmp_path / "run").set_index(["step", "metric"]).value
    vocab = json.loads((data / "vocab.json").read_text())
    assert metrics[(0, "train_loss")] == pytest.approx(math.log(len(vocab)), rel=0.15)  # near uniform at init
    assert metrics[(30, "train_loss")] < metrics[(0, "train_loss")] - 1.0
    assert metrics[(30, "val_loss")] < metrics[(0, "val_loss")] - 1.0
    batch = metrics.xs("train_loss_batch", level="metric")
    assert batch.iloc[-5:].mean() < batch.iloc[:5].mean()
