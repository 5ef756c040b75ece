"""SpectraCallback in a minimal training loop: schedule, units, warm-start state and resume."""

import copy
import math
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.func import functional_call, hessian

from traindyn.spectra import SpectraCallback, parameter_vector, trainable_parameters, unflatten
from traindyn.train.callbacks import TrainState

torch.set_num_threads(1)
# torch.func.hessian (forward-mode AD) triggers a deprecation inside torch itself.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")


def make_state(opt="sgd", base_lr=0.05, scale=4.0):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    x, y = torch.randn(16, 4, dtype=torch.float64), torch.randint(0, 3, (16,))
    if opt == "sgd":  # one group at a muP-like scaled LR, eta = eta0 * scale
        optimizer = torch.optim.SGD(model.parameters(), lr=base_lr * scale)
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=base_lr)
    return TrainState(
        model=model, optimizer=optimizer, loss_fn=nn.functional.cross_entropy, device=torch.device("cpu"),
        run_dir=Path("."), base_lr=base_lr, total_steps=6, fixed_batch=(x, y),
    )


def train(state, callbacks, steps):
    x, y = state.fixed_batch
    for _ in range(steps):
        state.optimizer.zero_grad()
        loss = state.loss_fn(state.model(x), y)
        loss.backward()
        state.optimizer.step()
        state.step += 1
        for cb in callbacks:
            cb.on_step_end(state, loss.item())


def dense_top(state):
    named = trainable_parameters(state.model)
    x, y = state.fixed_batch

    def loss(theta):
        params = dict(zip([n for n, _ in named], unflatten(theta, [p for _, p in named]), strict=True))
        return state.loss_fn(functional_call(state.model, params, (x,)), y)

    return torch.linalg.eigvalsh(hessian(loss)(parameter_vector(state.model))).flip(0)


def test_schedule_rows_and_units():
    state = make_state()
    cb = SpectraCallback(every=2, measures=["hessian", "gn", "ntk"], k=2, n_ntk=8, tol=1e-10)
    cb.on_train_start(state)
    train(state, [cb], 4)
    rows = state.tables["spectra"]
    assert sorted({r["step"] for r in rows}) == [0, 2, 4]
    assert len(rows) == 3 * 3 * 2
    last = [r for r in rows if r["step"] == 4 and r["measure"] == "hessian"]
    top = dense_top(state)
    for r in last:
        assert r["eigenvalue"] == pytest.approx(float(top[r["rank"]]), rel=1e-8)
        assert r["lr"] == pytest.approx(0.2)
        assert r["sharpness_base_lr_units"] == pytest.approx(r["eigenvalue"] * 4.0)
        assert r["converged"] and r["n_matvec"] >= 2
    gn = {r["rank"]: r["eigenvalue"] for r in rows if r["step"] == 4 and r["measure"] == "gn"}
    assert gn[0] >= gn[1] > 0
    sd = cb.state_dict()
    # the top k = 2 Ritz vectors and the guard pair's: the next measurement's start
    assert sd["eigenvectors"]["hessian"].shape == (3, sum(p.numel() for p in state.model.parameters()))
    assert sd["eigenvectors"]["ntk"].shape == (3, 8)


def test_schedule_lr_source():
    state = make_state()
    state.lr_factor = 0.5
    cb = SpectraCallback(every=1, measures=["hessian"], lr_source="schedule")
    cb.on_train_start(state)
    (row,) = state.tables["spectra"]
    assert row["lr"] == pytest.approx(0.025)
    assert row["sharpness_base_lr_units"] == pytest.approx(row["eigenvalue"] * 0.5)


def test_resume_is_identical():
    def callback():
        return SpectraCallback(every=2, measures=["hessian", "ntk", "trace"], k=2, n_ntk=8, tol=1e-3)

    full = make_state()
    cb = callback()
    cb.on_train_start(full)
    train(full, [cb], 6)

    first = make_state()
    cb1 = callback()
    cb1.on_train_start(first)
    train(first, [cb1], 4)
    checkpoint = copy.deepcopy(
        {"model": first.model.state_dict(), "opt": first.optimizer.state_dict(), "cb": cb1.state_dict()}
    )
    resumed = make_state()
    resumed.model.load_state_dict(checkpoint["model"])
    resumed.optimizer.load_state_dict(checkpoint["opt"])
    resumed.step = 4
    cb2 = callback()
    cb2.load_state_dict(checkpoint["cb"])
    cb2.on_train_start(resumed)  # step 4 was measured before the checkpoint: no duplicate
    train(resumed, [cb2], 2)
    for table in ("spectra", "hessian_trace"):
        assert first.tables[table] + resumed.tables[table] == full.tables[table]


def test_preconditioned_needs_adam_and_starts_after_first_step():
    state = make_state("adam")
    cb = SpectraCallback(every=1, measures=["preconditioned", "hessian"])
    cb.on_train_start(state)
    assert {r["measure"] for r in state.tables["spectra"]} == {"hessian"}
    train(state, [cb], 1)
    assert {r["measure"] for r in state.tables["spectra"] if r["step"] == 1} == {"hessian", "preconditioned"}
    with pytest.raises(ValueError, match="needs Adam"):
        SpectraCallback(every=1, measures=["preconditioned"]).on_train_start(make_state("sgd"))


def test_diverged_model_gives_nan_rows():
    state = make_state()
    with torch.no_grad():
        state.model[0].weight.fill_(float("nan"))
    cb = SpectraCallback(every=1, measures=["hessian", "ntk"], n_ntk=4)
    cb.on_train_start(state)
    rows = state.tables["spectra"]
    assert len(rows) == 2 and all(math.isnan(r["eigenvalue"]) and not r["converged"] for r in rows)
    state.diverged_at, state.step = 1, 1
    cb.on_step_end(state, float("nan"))
    assert len(state.tables["spectra"]) == 2


def test_invalid_arguments_listed_together():
    with pytest.raises(ValueError, match="every must be.*measures must be.*k must be"):
        SpectraCallback(every=0, measures=["sharpness"], k=0)
    with pytest.raises(ValueError, match="n_ntk=99 exceeds"):
        SpectraCallback(every=1, measures=["ntk"], n_ntk=99).on_train_start(make_state())


def test_warm_start_keeps_the_top_after_the_top_two_eigenvalues_swap():
    # The callback's start after a swap between two measurements: the old top vector is now
    # the second eigenvector (3.5% below the first, as at step 350 of sp-w512-d2-lr0.08-s2).
    from traindyn.spectra import lanczos
    from traindyn.spectra.callback import start_vectors

    gen = torch.Generator().manual_seed(0)
    n = 400
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    bulk = 0.5 * torch.rand(n - 4, generator=gen, dtype=torch.float64)
    before = torch.cat([torch.tensor([1.0, 0.965, 0.8, 0.7], dtype=torch.float64), bulk])
    after = torch.cat([torch.tensor([0.965, 1.0, 0.8, 0.7], dtype=torch.float64), bulk])
    a1, a2 = (q @ torch.diag(d) @ q.T for d in (before, after))
    first = lanczos(lambda v: a1 @ v, dim=n, tol=1e-9, max_iter=150)  # an accurate top vector
    assert first.next_eigenvector is not None
    kept = start_vectors(first)
    torch.testing.assert_close(kept, torch.stack([first.eigenvectors[0], first.next_eigenvector]))
    v0 = kept.sum(0)  # the start lanczos forms from the kept rows
    # The new top eigenvector (the old second) is half the start; the old top vector alone
    # holds almost none of it, and only the guard pair's convergence stands between such a
    # start and the second eigenvalue.
    new_top = q[:, 1]
    assert abs(float(v0 @ new_top)) / float(v0.norm()) > 0.6
    assert abs(float(first.eigenvectors[0] @ new_top)) < 1e-3
    res = lanczos(lambda v: a2 @ v, dim=n, v0=kept, tol=1e-3, max_iter=100)
    assert abs(float(res.eigenvalues[0]) - 1.0) <= 1e-3


def test_every_measure_is_verified(monkeypatch):
    # The callback (and ``traindyn spectra``, which runs it over snapshots) measures every
    # operator by ``lanczos`` with its default: each converged warm run is followed by the
    # verification run on the deflated operator (unless the Krylov space was the whole space).
    import sys  # noqa: PLC0415

    from traindyn.spectra import lanczos  # noqa: PLC0415

    module = sys.modules[lanczos.__module__]
    runs = []
    real = module._lanczos_run

    def recorded(matvec, dim, *args, **kwargs):
        res, tail = real(matvec, dim, *args, **kwargs)
        runs.append(("check" if kwargs.get("floor") is not None else "warm", dim, res.n_matvec, res.converged))
        return res, tail

    monkeypatch.setattr(module, "_lanczos_run", recorded)
    state = make_state("adam")
    x, y = state.fixed_batch
    state.fixed_batch = (torch.cat([x, x + 0.1]), torch.cat([y, y]))  # 32 samples: a 32 x 32 NTK
    cb = SpectraCallback(every=1, measures=["hessian", "gn", "ntk", "preconditioned"], n_ntk=32, tol=1e-3)
    cb.on_train_start(state)
    train(state, [cb], 1)
    rows = [r for r in state.tables["spectra"] if r["step"] == 1]
    assert {r["measure"] for r in rows} == {"hessian", "gn", "ntk", "preconditioned"}
    assert all(r["converged"] for r in rows)
    # Every warm run that converged short of its dimension is followed by a check run.
    for i, (kind, dim, n, converged) in enumerate(runs):
        if kind == "warm" and converged and n < dim - 2:
            assert runs[i + 1][0] == "check"
    assert sum(kind == "check" for kind, *_ in runs) >= 4
    for r in rows:  # the verified answer is the dense top eigenvalue
        if r["measure"] == "hessian":
            assert r["eigenvalue"] == pytest.approx(float(dense_top(state)[0]), rel=1e-3)
