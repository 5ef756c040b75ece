"""The lag study through the one training loop: grow from a base checkpoint, l(k), LAG's choice."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from traindyn.config import load_config
from traindyn.data import prepare_dataset
from traindyn.grow.callbacks import LagEval, choose_candidate
from traindyn.studies import callbacks, study_runs
from traindyn.train import RunData, TrainState, build, make_loss, train


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lag")
    data = tmp / "shakespeare"
    prepare_dataset("shakespeare", load_config([], ["data.max_train=20000"]).data, data)
    cfg = load_config(["config.yaml", "tests/configs/tiny.yaml"], ["lag.grow.moments=[copy_top]"]).raw
    runs = study_runs(cfg, "lag")
    runs_dir = tmp / "runs"
    for run in ("sp-base-d2-s0", "sp-fp_copy_top-d3-s0", "sp-copy_top-d3-s0", "sp-copy_top-moments-d3-s0"):
        train(runs[run], data, runs_dir / run, callbacks=callbacks("lag", runs[run]), progress=False)
    return data, runs, runs_dir


def _lag(runs_dir, run):
    return pd.read_parquet(runs_dir / run / "lag.parquet").set_index("lag")["val_loss"]


def _base_loss_on_lag_windows(data, runs, runs_dir):
    spec = runs["sp-base-d2-s0"]
    rd = RunData(spec, data, torch.device("cpu"))
    model, opt = build(spec, rd.model_dims(), torch.device("cpu"))
    model.load_state_dict(torch.load(runs_dir / spec.run / "weights.pt", weights_only=False)["model"])
    state = TrainState(model=model, optimizer=opt, loss_fn=make_loss("xent"), device=torch.device("cpu"),
                       run_dir=runs_dir, base_lr=spec.lr, total_steps=1, fixed_batch=rd.fixed_batch, data=rd)  # fmt: skip
    grown = runs["sp-fp_copy_top-d3-s0"].extra["lag"]
    return LagEval(grown["lags"], grown["examples"])._evaluate(state)


def test_function_preserving_growth_starts_at_the_base_loss(setup):
    data, runs, runs_dir = setup
    base = _base_loss_on_lag_windows(data, runs, runs_dir)
    assert _lag(runs_dir, "sp-fp_copy_top-d3-s0")[0] == pytest.approx(base, abs=1e-6)
    # copying without zeroing changes the function
    assert abs(_lag(runs_dir, "sp-copy_top-d3-s0")[0] - base) > 1e-4


def test_grown_runs_record_every_lag_and_their_growth(setup):
    _, runs, runs_dir = setup
    spec = runs["sp-copy_top-d3-s0"]
    assert list(_lag(runs_dir, spec.run).index) == spec.extra["lag"]["lags"]
    growth = pd.read_parquet(runs_dir / spec.run / "growth.parquet")
    assert growth["plan"].tolist() == ["011"] and growth["base"].tolist() == ["sp-base-d2-s0"]
    moments = pd.read_parquet(runs_dir / "sp-copy_top-moments-d3-s0" / "growth.parquet")
    assert moments["moments_grown"].iloc[0] > 0
    # the same data order, init and growth: the moments ablation differs only by the optimizer state
    assert _lag(runs_dir, "sp-copy_top-moments-d3-s0")[0] == pytest.approx(_lag(runs_dir, spec.run)[0], abs=1e-6)
    assert _lag(runs_dir, "sp-copy_top-moments-d3-s0").iloc[-1] != _lag(runs_dir, spec.run).iloc[-1]


def test_a_grown_run_needs_its_base(tmp_path, setup):
    data, runs, _ = setup
    spec = runs["sp-copy_top-d3-s1"]
    with pytest.raises(FileNotFoundError, match="sp-base-d2-s1"):
        train(spec, data, tmp_path / spec.run, callbacks=callbacks("lag", spec), progress=False)


def test_lag_choice_is_the_argmin_at_k(tmp_path):
    for run, loss in (("p0", 2.5), ("p1", 2.1), ("p2", 2.3)):
        (tmp_path / run).mkdir()
        pd.DataFrame({"step": [0, 4], "lag": [0, 4], "val_loss": [1.0, loss]}).to_parquet(tmp_path / run / "lag.parquet")
    assert choose_candidate(tmp_path, {"p0": [], "p1": [], "p2": []}, 4) == ("p1", 2.1)
    with pytest.raises(ValueError, match="no loss at lag 7"):
        choose_candidate(tmp_path, {"p0": []}, 7)
    with pytest.raises(FileNotFoundError, match="p9"):
        choose_candidate(tmp_path, {"p9": []}, 4)
