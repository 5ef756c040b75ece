import math

import numpy as np
import pandas as pd
import pytest

from traindyn.scaling.analysis import _sharpness_stats, ci95, fit_optimum


def test_fit_recovers_the_vertex_of_a_quadratic_in_log2_lr():
    lrs = [0.25, 0.5, 1, 2, 4, 8]
    losses = [(math.log2(lr) - 1.3) ** 2 + 0.4 for lr in lrs]  # optimum at 2**1.3
    fit = fit_optimum(lrs, losses)
    assert fit["best_lr"] == pytest.approx(2**1.3, rel=1e-9)
    assert fit["grid_best_lr"] == 2 and not fit["at_edge"] and fit["largest_stable_lr"] == 8


def test_diverged_runs_are_excluded_and_an_edge_optimum_is_flagged():
    lrs = [1, 2, 4, 8, 16]
    losses = [0.9, 0.7, 0.5, None, float("nan")]  # still falling when it diverges
    fit = fit_optimum(lrs, losses)
    assert fit["at_edge"] and fit["largest_stable_lr"] == 4
    assert 1 <= fit["best_lr"] <= 4  # clamped inside the fitted points
    assert fit_optimum([1, 2], [None, None])["best_lr"] is None


def test_ci95_is_the_t_interval():
    values = [1.0, 2.0, 4.0]
    out = ci95(values)
    sd = np.std(values, ddof=1)
    assert out["mean"] == pytest.approx(7 / 3)
    assert out["ci95"] == pytest.approx(4.302652729911275 * sd / math.sqrt(3))
    assert ci95([None, float("inf")])["n"] == 0 and ci95([2.0])["ci95"] is None


def test_sharpness_spread_and_ratio_against_a_hand_computed_table():
    rows = []
    for seed in (0, 1):
        for width, level in ((32, 2.0), (512, 1.0)):
            for step in (0, 50, 100):
                rows.append({"measure": "hessian", "rank": 0, "sweep": "width", "loss_kind": "xent",
                             "param": "ntk", "seed": seed, "width": width, "step": step,
                             "sharpness_base_lr_units": level * (1 + seed)})
    stats = _sharpness_stats(pd.DataFrame(rows), steps=100)
    # steps > 5 % of 100: 50 and 100; std over widths of log sharpness = |log 2 - log 1| / 2
    assert stats["sharpness_spread"]["ntk"]["mean"] == pytest.approx(math.log(2) / 2)
    assert stats["sharpness_ratio_small_over_large"]["ntk"]["mean"] == pytest.approx(2.0)
    assert stats["sharpness_spread"]["ntk"]["n"] == 2
