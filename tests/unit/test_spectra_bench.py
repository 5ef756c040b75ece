"""Smoke test of the spectra benchmark's comparison functions on a tiny model (not the benchmark)."""

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
W = pytest.importorskip("spectra_workload")

torch.set_num_threads(1)


def tiny():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 4))
    gen = torch.Generator().manual_seed(1)
    batch = (torch.randn(32, 12, generator=gen), torch.randint(0, 4, (32,), generator=gen))
    states = {}
    for step in (0, 1, 2):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
        states[step] = {k: v.clone() for k, v in model.state_dict().items()}
    return model, batch, states


def test_methods_meet_the_target_against_the_dense_hessian():
    pytest.importorskip("scipy")
    model, batch, states = tiny()
    loss_fn = nn.functional.cross_entropy
    refs = [W.reference(W._load(model, w), loss_fn, batch) for w in states.values()]
    # The float64 reference is the dense Hessian's top eigenvalue.
    W._load(model, states[2])
    params = [p for p in model.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in params]).double()
    sizes = [p.numel() for p in params]

    def loss_of(theta):
        chunks = [c.view(p.shape) for c, p in zip(theta.split(sizes), params, strict=True)]
        out = torch.func.functional_call(model.double(), dict(zip([n for n, _ in model.named_parameters()],
                                                                 chunks, strict=True)), (batch[0].double(),))
        return loss_fn(out, batch[1])

    dense = torch.autograd.functional.hessian(loss_of, flat)
    model.float()
    assert refs[2][0] == pytest.approx(float(torch.linalg.eigvalsh(dense)[-1]), rel=1e-9)
    ours = W.run_ours(model, loss_fn, batch, states, refs, W.CALLBACK_WARM)
    assert ours["all_within_target"] and ours["products"] == sum(ours["per_state_products"])
    # The products' time is inside the Lanczos time, which is inside the total.
    assert 0 < ours["product_seconds"] < ours["lanczos_seconds"] <= ours["seconds"]
    arpack = W.run_arpack(model, loss_fn, "xent", batch, states, refs, ncv=5, backend="traindyn", warm=False)
    assert arpack["all_within_target"] and arpack["tol"] in W.ARPACK_TOLS
    ratios = W._ratios({f"ours (warm={W.CALLBACK_WARM})": ours, "arpack eigsh (traindyn-operator, ncv=5, cold)": arpack})
    assert ratios["arpack_traindyn_operator_products_over_ours"] == arpack["products"] / ours["products"]


def test_guard_sweep_loosens_only_the_guard_and_restores_it():
    model, batch, states = tiny()
    loss_fn = nn.functional.cross_entropy
    refs = [W.reference(W._load(model, w), loss_fn, batch) for w in states.values()]
    module = sys.modules[W.lanczos.__module__]
    kept = module.GUARD_FACTOR
    default = W.run_ours(model, loss_fn, batch, states, refs, "top")
    loose = W.run_ours_guard(model, loss_fn, batch, states, refs, float("inf"))
    assert module.GUARD_FACTOR == kept
    # Without the guard pair's condition the stop can only come sooner.
    assert all(a <= b for a, b in zip(loose["per_state_products"], default["per_state_products"], strict=True))


def test_single_arpack_setting_is_the_cheapest_that_meets_the_target_everywhere():
    pytest.importorskip("scipy")
    import bench_spectra  # noqa: PLC0415

    model, batch, states = tiny()
    loss_fn = nn.functional.cross_entropy
    refs = [W.reference(W._load(model, w), loss_fn, batch) for w in states.values()]
    grid = W.run_arpack_settings(model, loss_fn, "xent", batch, states, refs, settings=[(4, 3e-2), (5, 1e-2)])
    assert set(grid) == {"ncv=4, tol=0.03", "ncv=5, tol=0.01"}
    assert all(g["products"] == sum(g["per_state_products"]) for g in grid.values())
    # Two trajectories: a setting counts only if it meets the target on both.
    met = {"products": 10, "seconds": 1.0, "all_within_target": True}
    cheap = {"products": 5, "seconds": 0.5, "all_within_target": True}
    missed = {"products": 3, "seconds": 0.3, "all_within_target": False}
    trajectories = [{"arpack_settings": {"a": met, "b": cheap}}, {"arpack_settings": {"a": met, "b": missed}}]
    best = bench_spectra.best_single_setting(trajectories)
    assert best["setting"] == "a" and best["products"] == 20 and best["per_trajectory_products"] == [10, 10]
    assert bench_spectra.best_single_setting([{"arpack_settings": {"b": missed}}]) is None


def test_ours_with_arpacks_stop_is_tuned_on_arpacks_ladder():
    pytest.importorskip("scipy")
    import bench_spectra  # noqa: PLC0415

    model, batch, states = tiny()
    loss_fn = nn.functional.cross_entropy
    refs = [W.reference(W._load(model, w), loss_fn, batch) for w in states.values()]
    grid = W.run_ours_residual_settings(model, loss_fn, batch, states, refs)
    assert list(grid) == [f"tol={t:g}" for t in W.ARPACK_TOLS]
    # From the same (cold) start a tighter residual test never stops sooner; later states
    # start from each run's own previous vector, so only the first state compares.
    first = [g["per_state_products"][0] for g in grid.values()]
    assert first == sorted(first)
    picked = W.loosest_working(grid)
    first_ok = next(name for name, g in grid.items() if g["all_within_target"])
    assert picked["all_within_target"] and f"tol={picked['tol']:g}" == first_ok
    assert picked["products"] == grid[first_ok]["products"]
    assert W.loosest_working({"tol=0.1": {"all_within_target": False}}) == {"tol": None, "all_within_target": False}
    best = bench_spectra.best_single_setting([{"ours_residual_settings": grid}], key="ours_residual_settings")
    assert best["products"] == min(g["products"] for g in grid.values() if g["all_within_target"])
