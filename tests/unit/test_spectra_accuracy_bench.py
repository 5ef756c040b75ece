"""The pipeline-accuracy benchmark's bookkeeping: its float64 operators and its miss counts."""

import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
A = pytest.importorskip("spectra_accuracy")
W = pytest.importorskip("spectra_workload")

torch.set_num_threads(1)


@pytest.mark.parametrize("measure", ["hessian", "gn", "ntk"])
def test_float64_operator_is_the_float32_one_in_double(measure):
    from traindyn.spectra import gauss_newton_operator, hessian_operator, ntk_operator  # noqa: PLC0415

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    gen = torch.Generator().manual_seed(1)
    batch = (torch.randn(10, 6, generator=gen), torch.randint(0, 3, (10,), generator=gen))
    loss_fn = nn.functional.cross_entropy
    op64 = W.float64_operator(model, loss_fn, batch, measure, n_ntk=4)
    assert op64.dtype == torch.float64
    if measure == "ntk":
        op32 = ntk_operator(model, batch[0][:4])
    else:
        op32 = (hessian_operator if measure == "hessian" else gauss_newton_operator)(model, loss_fn, batch)
    assert op64.dim == op32.dim
    v = torch.randn(op32.dim, generator=gen)
    torch.testing.assert_close(op64(v.double()).float(), op32(v), rtol=1e-4, atol=1e-5)
    assert next(model.parameters()).dtype == torch.float32  # the model itself is untouched


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
