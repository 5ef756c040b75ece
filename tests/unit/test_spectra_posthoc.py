import pandas as pd
import pytest
import torch

from traindyn.config import load_config
from traindyn.data import prepare_dataset
from traindyn.spectra import SpectraCallback, spectra_over_snapshots
from traindyn.train import RunSpec, train


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "digits"
    prepare_dataset("digits", load_config([], ["data.max_train=256"]).data, out)
    return out


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
    from traindyn.train import RunData, build

    long, short = _spec(steps=10, schedule="constant"), _spec(steps=5, schedule="constant")
    train(long, digits, tmp_path / "long", progress=False)
    train(short, digits, tmp_path / "short", progress=False)
    assert sorted(p.name for p in (tmp_path / "long/snapshots").iterdir()) == [
        "step_000000.pt", "step_000005.pt", "step_000010.pt"]
    # Step 0 is the initialisation ...
    data = RunData(long, digits, torch.device("cpu"))
    model, _ = build(long, data.model_dims(), torch.device("cpu"))
    first = torch.load(tmp_path / "long/snapshots/step_000000.pt")
    assert all(torch.equal(first[k], v) for k, v in model.state_dict().items())
    # ... and step 5 of the long run is where a run that stops at step 5 ends, not later weights.
    mid = torch.load(tmp_path / "long/snapshots/step_000005.pt")
    end = torch.load(tmp_path / "short/snapshots/step_000005.pt")
    last = torch.load(tmp_path / "long/snapshots/step_000010.pt")
    assert all(torch.equal(mid[k], end[k]) for k in mid)
    assert not all(torch.equal(mid[k], last[k]) for k in mid)
