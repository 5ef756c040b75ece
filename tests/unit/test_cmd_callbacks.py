"""Online, embedded CMD and P-SGD running inside the training loop, checked against the trajectory."""

import numpy as np
import pandas as pd
import pytest
from conftest import Interrupted, interrupt_at

from traindyn.cmd import assign_and_fit
from traindyn.cmd.callbacks import EmbeddedCMDCallback, OnlineCMDCallback, PSGDCallback
from traindyn.train import RunSpec, Trajectory, train


def _spec(**kw):
    base = dict(study="cmd", run="r", dataset="digits", model={"arch": "mlp", "width": 16, "depth": 2},
                param="sp", base_width=16, depth_alpha=None, optimizer="sgd", lr=0.2, momentum=0.0,
                weight_decay=0.0, loss="xent", steps=40, batch_size=32, schedule="constant", warmup_steps=0,
                eval_every=20, eval_examples=64, checkpoint_every=0, loss_cap=50.0, seed=0,
                fixed_batch_size=64, snapshot_every=2)
    return RunSpec(**{**base, **kw})


@pytest.mark.parametrize("batch", [1, 3])
def test_online_cmd_in_training_equals_posthoc_on_the_trajectory(digits, tmp_path, batch):
    spec = _spec()
    cb = OnlineCMDCallback(every=2, warmup=5, k=200, m=4, seed=0, batch=batch)
    train(spec, digits, tmp_path / "run", callbacks=[cb], progress=False)
    traj = Trajectory(tmp_path / "run/trajectory")
    online = np.load(tmp_path / "run/cmd_online.npz")
    assert online["steps"].tolist() == traj.steps.tolist() == list(range(0, 41, 2))
    _, a, b = assign_and_fit(traj.weights, online["refs"], labels=online["labels"])
    assert np.abs(online["a"] - a).max() < 1e-8 and np.abs(online["b"] - b).max() < 1e-8
    assert not np.isnan(online["a"]).any()
    np.testing.assert_array_equal(online["ref_traj"], traj.weights[:, online["refs"]].astype(np.float64))
    # State: 2N + M T (+ 2M) floats, not N T.
    n, t, m = traj.n_params, len(traj), len(online["refs"])
    assert int(online["state_floats"]) == 2 * n + m * t + 2 * m < n * t
    updates = pd.read_parquet(tmp_path / "run/cmd_online.parquet")
    assert updates["snapshots"].sum() == t and (updates["snapshots"][~updates["warmup"]] <= batch).all()


def test_online_cmd_runs_with_training_not_from_saved_weights(digits, tmp_path):
    # The reference code replayed saved checkpoints; here nothing is saved and the fit is the same.
    with_traj = OnlineCMDCallback(every=2, warmup=5, k=200, m=4)
    without = OnlineCMDCallback(every=2, warmup=5, k=200, m=4)
    train(_spec(), digits, tmp_path / "a", callbacks=[with_traj], progress=False)
    train(_spec(snapshot_every=0), digits, tmp_path / "b", callbacks=[without], progress=False)
    assert not (tmp_path / "b/trajectory").exists() and not list((tmp_path / "b").glob("*.pt"))
    a, b = np.load(tmp_path / "a/cmd_online.npz"), np.load(tmp_path / "b/cmd_online.npz")
    np.testing.assert_array_equal(a["a"], b["a"])
    np.testing.assert_array_equal(a["labels"], b["labels"])


def test_embedded_parameters_stay_exactly_on_their_mode_line(digits, tmp_path):
    spec = _spec(momentum=0.9, lr=0.05)
    cb = EmbeddedCMDCallback(interval=2, percent=20, max_fraction=0.5, every=2, warmup=5, k=200, m=4)
    train(spec, digits, tmp_path / "run", callbacks=[cb], progress=False)
    traj = Trajectory(tmp_path / "run/trajectory")
    emb = np.load(tmp_path / "run/cmd_embedded.npz")
    frozen, refs, labels = emb["frozen"], emb["refs"], emb["labels"]
    n = traj.n_params
    assert 0.45 * n <= frozen.sum() <= 0.5 * n and not frozen[refs].any()
    table = pd.read_parquet(tmp_path / "run/cmd_embedded_frozen.parquet")
    assert table["trained"].is_monotonic_decreasing and table["trained"].iloc[-1] == n - frozen.sum()
    # From the last freezing point on, every frozen parameter is a * w_ref + b in float32, exactly.
    last = int(table.loc[table["frozen"].idxmax(), "step"])
    rows = np.flatnonzero(traj.steps >= last)
    w = traj.weights[rows]
    line = (emb["frozen_a"][frozen] * w[:, refs[labels[frozen]]].astype(np.float64)
            + emb["frozen_b"][frozen]).astype(np.float32)  # fmt: skip
    np.testing.assert_array_equal(w[:, frozen], line)
    # ... while the others still train.
    assert (np.abs(w[-1, ~frozen] - w[0, ~frozen]) > 0).mean() > 0.5


def test_psgd_moves_only_within_the_warmup_pca_subspace(digits, tmp_path):
    spec = _spec()
    cb = PSGDCallback(every=2, warmup=6, rank=3)
    train(spec, digits, tmp_path / "run", callbacks=[cb], progress=False)
    traj = Trajectory(tmp_path / "run/trajectory")
    v = cb.basis.astype(np.float64)  # (N, d)
    np.testing.assert_allclose(v.T @ v, np.eye(3), atol=1e-5)
    delta = traj.weights[6:].astype(np.float64) - traj.weights[5].astype(np.float64)
    resid = delta - (delta @ v) @ v.T
    assert np.linalg.norm(resid) < 1e-4 * np.linalg.norm(delta)
    assert np.linalg.norm(delta[-1]) > 0


def test_a_resumed_run_ends_with_the_same_online_and_embedded_fits(digits, tmp_path):
    spec = _spec(checkpoint_every=10)

    def callbacks(stop):
        return [OnlineCMDCallback(every=2, warmup=5, k=200, m=4),
                EmbeddedCMDCallback(interval=2, percent=20, max_fraction=0.5, every=2, warmup=5, k=200, m=4),
                interrupt_at(stop)]

    train(spec, digits, tmp_path / "whole", callbacks=callbacks(None), progress=False)
    with pytest.raises(Interrupted):
        train(spec, digits, tmp_path / "cut", callbacks=callbacks(25), progress=False)
    train(spec, digits, tmp_path / "cut", callbacks=callbacks(None), progress=False)
    for name in ("cmd_online", "cmd_embedded"):
        a, b = np.load(tmp_path / f"whole/{name}.npz"), np.load(tmp_path / f"cut/{name}.npz")
        assert set(a.files) == set(b.files)
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{name}.{key}")
