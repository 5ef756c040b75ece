"""The pipeline-accuracy benchmark's bookkeeping: its float64 operators and its miss counts."""

import math
import re
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
A = pytest.importorskip("spectra_accuracy")
W = pytest.importorskip("spectra_workload")

torch.set_num_threads(1)


@pytest.mark.parametrize("measure", ["hessian", "gn", "ntk", "preconditioned"])
def test_float64_operator_is_the_float32_one_in_double(measure):
    from traindyn.spectra import (  # noqa: PLC0415
        adam_preconditioner,
        gauss_newton_operator,
        hessian_operator,
        ntk_operator,
        preconditioned_hessian_operator,
    )

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    gen = torch.Generator().manual_seed(1)
    batch = (torch.randn(10, 6, generator=gen), torch.randint(0, 3, (10,), generator=gen))
    loss_fn = nn.functional.cross_entropy
    kwargs = {"n_ntk": 4}
    if measure == "preconditioned":  # Adam's denominator after two steps, as _Capture keeps it
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(2):
            opt.zero_grad()
            loss_fn(model(batch[0]), batch[1]).backward()
            opt.step()
        kwargs = {"preconditioner": adam_preconditioner(model, opt)}
    op64 = W.float64_operator(model, loss_fn, batch, measure, **kwargs)
    assert op64.dtype == torch.float64
    if measure == "ntk":
        op32 = ntk_operator(model, batch[0][:4])
    elif measure == "preconditioned":
        op32 = preconditioned_hessian_operator(model, loss_fn, batch, opt)
    else:
        op32 = (hessian_operator if measure == "hessian" else gauss_newton_operator)(model, loss_fn, batch)
    assert op64.dim == op32.dim
    v = torch.randn(op32.dim, generator=gen)
    torch.testing.assert_close(op64(v.double()).float(), op32(v), rtol=1e-4, atol=1e-5)
    assert next(model.parameters()).dtype == torch.float32  # the model itself is untouched


def test_capture_keeps_adams_denominator_at_the_measured_steps():
    from traindyn.spectra import adam_preconditioner  # noqa: PLC0415
    from traindyn.train.callbacks import TrainState  # noqa: PLC0415

    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    state = TrainState(model=model, optimizer=opt, loss_fn=nn.functional.cross_entropy, device=torch.device("cpu"),
                       run_dir=Path("."), base_lr=1e-2, total_steps=4,
                       fixed_batch=(torch.randn(8, 4), torch.randint(0, 2, (8,))))
    capture = W._Capture(every=2)
    capture.on_train_start(state)  # step 0: no Adam state yet
    for _ in range(4):
        opt.zero_grad()
        state.loss_fn(model(state.fixed_batch[0]), state.fixed_batch[1]).backward()
        opt.step()
        state.step += 1
        capture.on_step_end(state, 0.0)
    assert sorted(capture.states) == [0, 2, 4] and sorted(capture.preconditioners) == [2, 4]
    torch.testing.assert_close(capture.preconditioners[4], adam_preconditioner(model, opt))


def test_second_seed_set_replaces_the_measured_seeds():
    default = A.spectra_runs("*")
    other = A.spectra_runs("*", seeds=[3, 4])
    assert {s.seed for s in default} == {0, 1, 2} and {s.seed for s in other} == {3, 4}
    # The same runs at other seeds, the GPT sweep (Hessian and preconditioned Hessian) included.
    def unseeded(runs):
        return {re.sub(r"-s\d+(?=-|$)", "", s.run) for s in runs}

    assert unseeded(default) == unseeded(other) and len(other) * 3 == len(default) * 2
    gpt = [s for s in other if s.extra["sweep"] == "gpt"]
    assert gpt and all("preconditioned" in s.extra["spectra"]["measures"] for s in gpt)


def test_summarise_counts_misses_against_the_reference_and_skips_diverged_states():
    rows = [
        {"run": "a", "step": 0, "measure": "hessian", "ours": 1.0, "ours_products": 5, "ours_converged": True,
         "ref": 1.0005, "ref2": 0.9, "ours_err": 0.0005 / 1.0005, "arpack": 1.0, "arpack_products": 7,
         "arpack_err": 0.0005 / 1.0005},
        {"run": "a", "step": 50, "measure": "hessian", "ours": 0.9, "ours_products": 3, "ours_converged": True,
         "ref": 1.0, "ref2": 0.9, "ours_err": 0.1, "arpack": 1.0, "arpack_products": 9, "arpack_err": 0.0},
        {"run": "a", "step": 100, "measure": "hessian", "ours": math.nan, "ours_products": 0,
         "ours_converged": False},
    ]
    out = A.summarise(rows)["hessian"]
    assert out["measurements"] == 2 and out["ours_misses"] == 1 and out["arpack_misses"] == 0
    assert out["ours_products"] == 8 and out["arpack_products"] == 16 and out["products_arpack_over_ours"] == 2.0
    assert out["ours_worst_rel_err"] == pytest.approx(0.1)
    assert [m["step"] for m in out["ours_missed"]] == [50]
