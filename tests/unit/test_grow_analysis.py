"""The lag study's statistics against scipy.stats and hand-made tables; its grid and checks."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from traindyn.config import resolve
from traindyn.grow.analysis import (
    base_plateau,
    bootstrap_ci,
    kendall,
    lag_correlations,
    spearman,
    strategy_spread,
)
from traindyn.grow.grid import dependencies, lag_runs
from traindyn.grow.study import checks

TABLES = [
    ([1.0, 2.0, 3.0, 4.0, 5.0], [5.0, 6.0, 7.0, 8.0, 7.5]),
    ([0.3, 0.1, 0.2, 0.9, 0.5, 0.5], [1.0, 3.0, 2.0, 0.5, 0.7, 0.6]),  # ties on one side
    ([2.0, 2.0, 1.0, 3.0], [1.0, 1.0, 2.0, 2.0]),  # ties on both sides
    (list(np.random.default_rng(0).normal(size=9)), list(np.random.default_rng(1).normal(size=9))),
]


@pytest.mark.parametrize(("x", "y"), TABLES)
def test_rank_correlations_match_scipy(x, y):
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    assert kendall(x, y) == pytest.approx(stats.kendalltau(x, y).statistic, abs=1e-12)


def test_constant_side_gives_nan():
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3])) and math.isnan(kendall([1, 1, 1], [1, 2, 3]))


def _table():
    # two seeds, three strategies; at k=0 the order is reversed, at k=10 it is right
    rows = []
    for seed, shift in ((0, 0.0), (1, 0.01)):
        for strategy, (l0, l10, lT) in {"a": (3.0, 2.2, 2.0), "b": (2.5, 2.3, 2.1), "c": (2.0, 2.4, 2.3)}.items():
            for lag, v in ((0, l0), (10, l10), (50, lT)):
                rows.append({"seed": seed, "strategy": strategy, "lag": lag, "val_loss": v + shift})
    return pd.DataFrame(rows)


def test_lag_correlations_top1_and_regret_on_a_hand_made_table():
    corr = lag_correlations(_table(), final_lag=50).set_index(["seed", "lag"])
    assert corr.loc[(0, 0), "spearman"] == pytest.approx(-1.0)
    assert corr.loc[(0, 0), "kendall"] == pytest.approx(-1.0)
    assert corr.loc[(0, 0), "picked"] == "c" and not corr.loc[(0, 0), "top1"]
    assert corr.loc[(0, 0), "regret"] == pytest.approx(0.3)
    assert corr.loc[(1, 10), "spearman"] == pytest.approx(1.0) and corr.loc[(1, 10), "top1"]
    assert corr.loc[(1, 10), "regret"] == pytest.approx(0.0)
    assert set(corr["candidates"]) == {3}


def test_bootstrap_ci_brackets_the_mean_and_is_degenerate_for_a_constant():
    lo, hi = bootstrap_ci([0.1, 0.5, 0.9, 0.4], 2000, 0)
    assert lo < 0.475 < hi
    assert bootstrap_ci([0.3, 0.3, 0.3], 100, 0) == (pytest.approx(0.3), pytest.approx(0.3))
    assert bootstrap_ci([0.3], 100, 0) == (None, None)


def test_strategy_spread_against_hand_computed_values():
    final = pd.DataFrame({"seed": [0, 1, 0, 1], "strategy": ["a", "a", "b", "b"], "val_loss": [1.0, 1.2, 2.0, 2.2]})
    s = strategy_spread(final)
    assert s["spread"] == pytest.approx(np.std([1.1, 2.1], ddof=1))
    assert s["seed_sd"] == pytest.approx(np.std([1.0, 1.2], ddof=1))
    assert s["exceeds"] and s["best"] == "a" and s["best_gap"] == pytest.approx(1.0)
    assert s["paired_sd"] == pytest.approx(0.0, abs=1e-12)  # b = a + 1 on every seed
    noisy = final.assign(val_loss=[1.0, 2.0, 1.1, 2.1])
    out = strategy_spread(noisy)
    assert not out["exceeds"]
    # a seed shift common to both strategies: large seed sd, no strategy x seed residual
    assert out["paired_sd"] == pytest.approx(0.0, abs=1e-12)
    crossed = final.assign(val_loss=[1.0, 1.2, 1.2, 1.0])  # residuals +-0.1: sd = sqrt(4 * 0.01 / 1)
    assert strategy_spread(crossed)["paired_sd"] == pytest.approx(0.2)


def test_base_plateau_flags_an_undertrained_base():
    curve = pd.DataFrame({"step": [0, 100, 200, 300, 400], "value": [4.0, 3.0, 2.5, 2.4, 2.39]})
    assert not base_plateau(curve, 400, 0.25, 0.02)["undertrained"]
    falling = curve.assign(value=[4.0, 3.0, 2.5, 2.2, 2.0])
    out = base_plateau(falling, 400, 0.25, 0.02)
    assert out["undertrained"] and out["relative_fall"] == pytest.approx(0.1) and out["from_step"] == 300


def _cfg(**lag):
    raw = yaml.safe_load(open("config.yaml"))
    raw["lag"] = {**raw.get("lag", {}), **lag}
    return resolve(raw)


def test_grid_ids_data_order_and_dependencies():
    cfg = _cfg()
    runs = lag_runs(cfg["lag"])
    seeds, strategies = cfg["lag"]["seeds"], cfg["lag"]["grow"]["strategies"]
    L, b = cfg["lag"]["base"]["depth"], cfg["lag"]["grow"]["added"]
    assert f"sp-base-d{L}-s0" in runs and f"sp-{strategies[0]}-d{L + b}-s{seeds[-1]}" in runs
    for seed in seeds:
        grown = [s for s in runs.values() if s.seed == seed and s.extra.get("group") == "pool" and s.param == "sp"]
        assert len(grown) == len(strategies)
        # the same data order for every strategy of a seed: the sampler is seeded by spec.seed only
        assert {(s.seed, s.batch_size, s.context, s.dataset) for s in grown} == {(seed, grown[0].batch_size,
                                                                                  grown[0].context, "shakespeare")}
        for s in grown:
            assert dependencies(s) == ([] if s.extra["strategy"] == "scratch" else [f"sp-base-d{L}-s{seed}"])
            assert s.extra["lag"]["lags"][0] == 0 and s.extra["lag"]["lags"][-1] == s.steps
            assert s.schedule == "cosine" and s.optimizer == cfg["lag"]["training"]["optimizer"]
    stage = runs[f"sp-adaptive-d{cfg['lag']['adaptive']['start_depth'] + 2}-s{cfg['lag']['adaptive']['seeds'][0]}"]
    deps = dependencies(stage)
    assert deps[0].startswith("sp-adaptive-") and all("-p" in d for d in deps[1:])
    first = runs[f"sp-adaptive-d{cfg['lag']['adaptive']['start_depth'] + 1}-s{cfg['lag']['adaptive']['seeds'][0]}"]
    assert dependencies(first)[0].startswith("sp-stack_base-")
    assert len(deps[1:]) == cfg["lag"]["adaptive"]["start_depth"] + 1


def test_checks_name_the_keys():
    from traindyn.config import ConfigError

    assert checks(_cfg()) == []
    with pytest.raises(ConfigError) as err:
        _cfg(base={"depth": 4}, grow={"strategies": ["stack", "copy_top", "scratch"], "added": 2},
             lr_sweep={"factors": [1.0]}, adaptive={"lag": 500})
    problems = str(err.value)
    assert "lag.grow.strategies" in problems and "rank" in problems and "doubles the depth" in problems
    assert "lag.lr_sweep.factors" in problems and "lag.adaptive.lag" in problems
    assert lag_runs(_cfg(enabled=False)["lag"]) == {}
    # at b = L copy top, copy middle and the stack are one plan (012012): ranking it twice is an error
    with pytest.raises(ConfigError) as err:
        _cfg(base={"depth": 3}, grow={"strategies": ["stack", "copy_middle", "interleave", "random_top"], "added": 3},
             lr_sweep={"strategy": "stack"})
    assert "'stack' and 'copy_middle' build the same model at lag.base.depth=3, lag.grow.added=3" in str(err.value)
    assert checks(_cfg(base={"depth": 4}, grow={"strategies": ["copy_top", "copy_middle", "random_top"], "added": 2},
                       lr_sweep={"strategy": "copy_top"})) == []  # fmt: skip
