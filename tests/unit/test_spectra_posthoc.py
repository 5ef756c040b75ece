import numpy as np
import pandas as pd
import pytest
import torch
from conftest import Interrupted, interrupt_at

from traindyn.spectra import SpectraCallback, spectra_over_snapshots
from traindyn.train import RunSpec, train


def _spec(**kw):
    base = dict(study="t", run="r", dataset="digits", model={"arch": "mlp", "width": 16, "depth": 2},
                param="mup", base_width=16, depth_alpha=None, optimizer="sgd", lr=1.0, momentum=0.0,
                weight_decay=0.0, loss="xent", steps=20, batch_size=32, schedule="cosine", warmup_steps=4,
                eval_every=10, eval_examples=64, checkpoint_every=0, loss_cap=50.0, seed=3,
                fixed_batch_size=64, snapshot_every=5)
    return RunSpec(**{**base, **kw})


def test_posthoc_over_snapshots_reproduces_the_training_callback(digits, tmp_path):
    torch.set_default_dtype(torch.float32)
    spec = _spec()
    settings = dict(every=5, measures=["hessian", "gn", "ntk"], n_ntk=16, tol=1e-8, max_iter=60)
    train(spec, digits, tmp_path / "run", callbacks=[SpectraCallback(**settings, seed=spec.seed)],
          progress=False)
    during = pd.read_parquet(tmp_path / "run/spectra.parquet")
    after = spectra_over_snapshots(spec, digits, tmp_path / "run", SpectraCallback(**settings, seed=spec.seed),
                                   out=tmp_path / "posthoc.parquet")
    keys = ["step", "measure", "rank"]
    merged = during.merge(after, on=keys, suffixes=("_train", "_post"))
    assert len(merged) == len(during) == 5 * 3
    rel = (merged["eigenvalue_train"] - merged["eigenvalue_post"]).abs() / merged["eigenvalue_train"].abs()
    assert rel.max() < 1e-5, merged[keys + ["eigenvalue_train", "eigenvalue_post"]]
    # the LR in base-LR units follows the schedule the same way
    assert (merged["lr_train"] - merged["lr_post"]).abs().max() < 1e-12


def test_missing_snapshots_are_named(digits, tmp_path):
    spec = _spec(snapshot_every=0)
    train(spec, digits, tmp_path / "run", progress=False)
    with pytest.raises(FileNotFoundError, match="snapshots missing"):
        spectra_over_snapshots(spec, digits, tmp_path / "run", SpectraCallback(every=5))


def test_snapshots_are_the_weights_at_those_steps(digits, tmp_path):
    from traindyn.train import RunData, Trajectory, build

    long, short = _spec(steps=10, schedule="constant"), _spec(steps=5, schedule="constant")
    train(long, digits, tmp_path / "long", progress=False)
    train(short, digits, tmp_path / "short", progress=False)
    traj = Trajectory(tmp_path / "long/trajectory")
    assert traj.steps.tolist() == [0, 5, 10] and traj.weights.dtype == np.float32
    # Step 0 is the initialisation; only trainable parameters are kept, in named_parameters order.
    data = RunData(long, digits, torch.device("cpu"))
    model, _ = build(long, data.model_dims(), torch.device("cpu"))
    params = dict(model.named_parameters())
    assert traj.names == list(params) and traj.n_params == sum(p.numel() for p in params.values())
    first = traj.tensors(traj.weights[0])
    assert all(torch.equal(first[k], v) for k, v in params.items())
    # ... and step 5 of the long run is where a run that stops at step 5 ends, not later weights.
    end = Trajectory(tmp_path / "short/trajectory")
    assert np.array_equal(traj.weights[traj.row(5)], end.weights[end.row(5)])
    assert not np.array_equal(traj.weights[1], traj.weights[2])


def test_a_resumed_run_continues_its_trajectory_at_the_right_row(digits, tmp_path):
    from traindyn.train import Trajectory

    whole = _spec(steps=20, schedule="constant", checkpoint_every=10)
    train(whole, digits, tmp_path / "whole", progress=False)

    # killed after the checkpoint at 10, before the end
    with pytest.raises(Interrupted):
        train(whole, digits, tmp_path / "cut", callbacks=[interrupt_at(13)], progress=False)
    assert Trajectory(tmp_path / "cut/trajectory").steps.tolist() == [0, 5, 10]
    train(whole, digits, tmp_path / "cut", callbacks=[interrupt_at(None)], progress=False)
    a, b = Trajectory(tmp_path / "whole/trajectory"), Trajectory(tmp_path / "cut/trajectory")
    assert b.steps.tolist() == [0, 5, 10, 15, 20]
    assert np.array_equal(a.weights, b.weights)


def test_buffers_are_not_in_the_trajectory(tmp_path):
    from traindyn.train import Trajectory, TrajectoryWriter

    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    model[0].bias.requires_grad_(False)
    writer = TrajectoryWriter(tmp_path / "t", model, capacity=3, stride=2)
    writer.write(0)
    with torch.no_grad():
        model[0].weight.add_(1.0)
    writer.write(2)
    writer.close()
    traj = Trajectory(tmp_path / "t")
    assert traj.names == ["0.weight", "1.weight", "1.bias"]  # no frozen bias, no running stats
    assert len(traj) == 2 and traj.n_params == 12 + 4 + 4
    assert np.allclose(traj.weights[1, :12] - traj.weights[0, :12], 1.0)
    with pytest.raises(ValueError, match="has no row"):
        TrajectoryWriter(tmp_path / "u", model, capacity=3, stride=2).write(3)
