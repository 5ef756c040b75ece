"""The lag study's power statistics on synthetic tables: spread bands, rho(0) vs rho(k), LR-sweep edges, stacking."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from traindyn.grow.analysis import (
    _stacking,
    lr_sweep_optimum,
    rho_at_growth_vs_lag,
    spread_ratio_band,
    strategy_spread,
)
from traindyn.scaling.analysis import ci95

BOOT = {"bootstrap": 4000, "bootstrap_seed": 0}


def _final(values: dict[str, list[float]]) -> pd.DataFrame:
    return pd.DataFrame([{"seed": i, "strategy": s, "val_loss": v} for s, vs in values.items()
                         for i, v in enumerate(vs)])  # fmt: skip


def test_spread_ratio_band_lies_within_the_exhaustive_resampling_range():
    final = _final({"a": [1.0, 1.3, 0.9], "b": [1.5, 1.6, 1.2], "c": [1.1, 1.7, 1.0]})
    # every draw of 3 seeds with replacement (27): the bootstrap's quantiles must lie in their range
    wide = final.pivot_table(index="seed", columns="strategy", values="val_loss")
    ratios, paired = [], []
    for draw in itertools.product(range(3), repeat=3):
        pick = wide.iloc[list(draw)].reset_index(drop=True).rename_axis("seed").reset_index()
        s = strategy_spread(pick.melt(id_vars="seed", var_name="strategy", value_name="val_loss"))
        ratios.append(s["ratio"])
        paired.append(s["ratio_paired"])
    band = spread_ratio_band(final, 300, 0)
    finite = [r for r in ratios if math.isfinite(r)]
    assert min(finite) <= band["ratio_boot_lo"] <= strategy_spread(final)["ratio"] <= band["ratio_boot_hi"] <= max(finite)
    finite_p = [r for r in paired if math.isfinite(r)]
    assert min(finite_p) <= band["ratio_paired_boot_lo"] <= band["ratio_paired_boot_hi"] <= max(finite_p)
    assert spread_ratio_band(final.iloc[:3], 10, 0)["ratio_boot_lo"] is None  # one seed: no band


def test_spread_of_a_seed_shift_is_paired_noise_free():
    # b = a + 0.2 on every seed, seeds shifted by 1: unpaired ratio small, paired sd 0
    final = _final({"a": [1.0, 2.0, 3.0, 4.0], "b": [1.2, 2.2, 3.2, 4.2]})
    s = strategy_spread(final)
    assert s["ratio"] == pytest.approx(np.std([2.5, 2.7], ddof=1) / np.std([1, 2, 3, 4], ddof=1))
    assert s["paired_sd"] == pytest.approx(0.0, abs=1e-12) and not s["exceeds"]


def _corr(rho0: list[float], rhok: list[float], k: int = 50) -> pd.DataFrame:
    return pd.DataFrame([{"seed": i, "lag": lag, "spearman": r} for i, (a, b) in enumerate(zip(rho0, rhok, strict=True))
                         for lag, r in ((0, a), (k, b))])  # fmt: skip


def test_rho_at_growth_vs_lag_is_a_paired_difference():
    out = rho_at_growth_vs_lag(_corr([-0.5, -0.2, 0.0, 0.1], [0.9, 0.8, 1.0, 0.7]), 50, BOOT)
    diff = [1.4, 1.0, 1.0, 0.6]
    assert out["difference"]["mean"] == pytest.approx(np.mean(diff))
    assert out["difference"]["ci95"] == pytest.approx(ci95(diff)["ci95"])
    assert out["rho0"]["mean"] == pytest.approx(-0.15) and out["rho_lag"]["mean"] == pytest.approx(0.85)
    assert out["below"] is True and out["lag"] == 50
    assert out["difference"]["boot_lo"] <= np.mean(diff) <= out["difference"]["boot_hi"]
    # overlapping: a shift common to both is not a difference; noise around zero is "not shown"
    assert rho_at_growth_vs_lag(_corr([0.1, 0.5, 0.3], [0.4, 0.2, 0.3]), 50, BOOT)["below"] is None
    assert rho_at_growth_vs_lag(_corr([0.9, 0.8, 0.95], [0.1, 0.2, 0.0]), 50, BOOT)["below"] is False
    assert rho_at_growth_vs_lag(_corr([0.1], [0.4]), 7, BOOT)["difference"] is None  # no lag 7


@pytest.mark.parametrize(("losses", "edge"), [
    ([3.0, 2.5, 2.2, 2.1, 2.3, 2.6, 3.1], None),
    ([2.0, 2.1, 2.2, 2.3, 2.4, 2.5, 2.6], "low"),
    ([2.6, 2.5, 2.4, 2.3, 2.2, 2.1, 2.0], "high"),
    ([2.6, 2.5, 2.4, 2.3, 2.2, 2.1, math.nan], "high"),  # the largest LR diverged: the best stable is the edge
])  # fmt: skip
def test_lr_sweep_optimum_is_the_argmin_and_flags_an_edge(losses, edge):
    factors = [0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0]
    table = pd.DataFrame({"lr_factor": factors[::-1], "mean": losses[::-1]})  # order must not matter
    out = lr_sweep_optimum(table)
    finite = [(f, v) for f, v in zip(factors, losses, strict=True) if math.isfinite(v)]
    assert out["best_factor"] == min(finite, key=lambda fv: fv[1])[0]  # brute force
    assert out["at_edge"] == edge and out["interior"] == (edge is None)
    assert out["factors"] == [f for f, _ in finite] and out["means"] == [v for _, v in finite]
    if edge is None:
        assert out["octaves_to_edge"] == pytest.approx(3.0)


def _stack_tables(adaptive: list[float], fixed: dict[str, list[float]]):
    runs, lag = [], []
    for sched, vals in {"adaptive": adaptive, **fixed}.items():
        steps = 120 if sched.endswith("_pc") or sched == "adaptive" else 100
        for seed, v in enumerate(vals):
            run = f"{sched}-s{seed}"
            runs.append({"run": run, "role": "stage", "stage": 4, "steps": steps, "strategy": sched, "seed": seed})
            lag += [{"run": run, "lag": 0, "val_loss": 9.0, "strategy": sched, "seed": seed},
                    {"run": run, "lag": steps, "val_loss": v, "strategy": sched, "seed": seed}]
    return pd.DataFrame(runs), pd.DataFrame(lag)


def test_stacking_gives_paired_differences_and_verdicts():
    cfg = {"adaptive": {"start_depth": 2, "end_depth": 4, "start_steps": 50, "stage_steps": 25, "lag": 5}}
    a = [2.0, 2.1, 2.2]
    runs, lag = _stack_tables(a, {"stack_top": [2.1, 2.2, 2.31], "stack_middle": [1.9, 2.0, 2.09],
                                  "stack_scratch": [2.0, 2.2, 2.1], "stack_top_pc": a})  # fmt: skip
    out = _stacking(runs, lag, cfg)
    assert out["stack_top"]["verdict"] == "adaptive better" and out["stack_middle"]["verdict"] == "adaptive worse"
    assert out["stack_scratch"]["verdict"] == "no significant difference"
    assert out["stack_top_pc"]["verdict"] == "identical"
    assert out["stack_top"]["adaptive_minus_this"]["mean"] == pytest.approx(np.mean([-0.1, -0.1, -0.11]))
    # probe steps: (L - 1) k per stage, L = 2, 3 -> 5 + 10
    assert out["adaptive"]["total_steps"] == 50 + 2 * 25 + 15 and out["adaptive"]["probe_steps_counted"]
    assert out["stack_top"]["total_steps"] == 100 and not out["stack_top"]["probe_steps_counted"]
    assert out["stack_top_pc"]["total_steps"] == 115


def test_default_lr_sweep_brackets_one_octave_apart_and_a_one_sided_grid_is_refused():
    import yaml

    from traindyn.config import ConfigError, resolve

    raw = yaml.safe_load(open("config.yaml"))
    lag = resolve(raw)["lag"]
    grid = sorted([1.0, *(float(f) for f in lag["lr_sweep"]["factors"])])
    assert grid[0] <= 1 / 8 and grid[-1] >= 8
    assert np.allclose(np.diff(np.log2(grid)), 1.0)  # one octave apart, 1 (the pool run) included
    assert len(lag["adaptive"]["seeds"]) >= 3 and len(lag["seeds"]) >= 5
    raw["lag"]["lr_sweep"] = {**raw["lag"]["lr_sweep"], "factors": [2.0, 4.0]}
    with pytest.raises(ConfigError, match="both sides of 1"):
        resolve(raw)


def test_the_swept_strategy_must_be_in_the_pool():
    import yaml

    from traindyn.config import ConfigError, resolve

    raw = yaml.safe_load(open("config.yaml"))
    raw["lag"]["lr_sweep"] = {**raw["lag"]["lr_sweep"], "strategy": "random_middle"}
    with pytest.raises(ConfigError, match="lag.lr_sweep.strategy='random_middle' is not in lag.grow.strategies"):
        resolve(raw)
