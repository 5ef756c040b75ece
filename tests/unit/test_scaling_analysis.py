import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from traindyn.scaling.analysis import (
    _sharpness_stats,
    bootstrap_shift,
    ci95,
    fit_optimum,
    mean_curve_shift,
)


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


def test_sharpness_spread_across_depth_is_keyed_by_alpha():
    rows = []
    for seed in (0, 1):
        for alpha, ratio in ((0.0, 4.0), (0.5, 1.0)):
            for depth, level in ((2, ratio), (8, 1.0)):
                for step in (0, 50, 100):
                    rows.append({"measure": "preconditioned", "rank": 0, "sweep": "gpt-depth", "loss_kind": "xent",
                                 "param": "mup", "alpha": alpha, "seed": seed, "depth": depth, "step": step,
                                 "sharpness_base_lr_units": level})
    stats = _sharpness_stats(pd.DataFrame(rows), steps=100, measure="preconditioned", sweeps=("gpt-depth",),
                             prefix="preconditioned_sharpness", suffix="_depth_gpt", group="alpha", axis="depth")
    spread = stats["preconditioned_sharpness_spread_depth_gpt"]
    assert set(spread) == {"0", "0.5"}
    assert spread["0"]["mean"] == pytest.approx(math.log(4) / 2)  # std of {log 4, 0}
    assert spread["0.5"]["mean"] == pytest.approx(0.0)
    assert stats["preconditioned_sharpness_ratio_small_over_large_depth_gpt"]["0"]["mean"] == pytest.approx(4.0)


def test_gpt_depth_grid_alpha_zero_is_the_standard_gpt():
    from traindyn.config import load_config
    from traindyn.param import Parameterization
    from traindyn.scaling.grid import scaling_runs

    cfg = load_config([Path(__file__).parents[2] / "config.yaml"]).raw["scaling"]
    ds = cfg["gpt_sweep"]["depth_sweep"]
    runs = [s for s in scaling_runs(cfg).values() if s.extra["sweep"] == "gpt-depth"]
    assert len(runs) == len(ds["alphas"]) * len(ds["depths"]) * len(ds["lrs"]) * len(cfg["gpt_sweep"]["seeds"])
    assert len({s.run for s in runs}) == len(runs)
    for s in runs:
        assert s.optimizer == "adam" and s.param == "mup" and s.model["width"] == ds["width"]
        assert ("spectra" in s.extra) == (s.lr == ds["sharpness_lr"])
        p = Parameterization.from_name(s.param, s.base_width, s.depth_alpha)
        depth = s.model["depth"]
        if s.extra["alpha"] == 0:  # no branch scale and no depth LR factor
            assert s.depth_alpha is None and "-a0-" in s.run
            assert p.residual_scale(depth) == 1.0 and p.depth_lr_factor(depth, "adam") == 1.0
        else:  # depth-muP with Adam: branches L^-1/2, the blocks' LR L^(1/2 - 1)
            assert s.depth_alpha == 0.5
            assert p.residual_scale(depth) == pytest.approx(depth**-0.5)
            assert p.depth_lr_factor(depth, "adam") == pytest.approx(depth**-0.5)


def _planted_runs(optimum_small, optimum_large, seeds=(0, 1, 2, 3, 4), noise=0.0):
    rng = np.random.default_rng(0)
    rows = []
    for seed in seeds:
        for width, opt in ((32, optimum_small), (512, optimum_large)):
            for lr in (0.25, 0.5, 1, 2, 4, 8, 16):
                loss = (math.log2(lr) - math.log2(opt)) ** 2 * 0.1 + 0.4 + noise * rng.normal()
                rows.append({"width": width, "lr": lr, "seed": seed, "diverged": lr == 16 and seed == 0,
                             "final_train_loss": None if lr == 16 and seed == 0 else loss})
    return pd.DataFrame(rows)


def test_mean_curve_shift_recovers_a_planted_shift_and_drops_points_any_seed_diverged_at():
    assert mean_curve_shift(_planted_runs(2 ** 0.4, 2 ** 2.1), "width") == pytest.approx(1.7, abs=1e-9)
    # Seed 0 diverged at lr 16, so the mean curve stops at 8 and the vertex (2**3.7) is clamped
    # to 8; without seed 0 lr 16 is a stable point again and the vertex is found.
    runs = _planted_runs(2 ** 0.4, 2 ** 3.7)
    assert mean_curve_shift(runs, "width") == pytest.approx(3 - 0.4, abs=1e-9)
    assert mean_curve_shift(runs[runs["seed"] != 0], "width") == pytest.approx(3.3, abs=1e-9)


def test_bootstrap_interval_is_degenerate_without_noise_and_covers_the_shift_with_noise():
    exact = bootstrap_shift(_planted_runs(1.0, 4.0), "width", n_boot=50)
    assert exact["shift"] == pytest.approx(2.0) and exact["ci95"] == pytest.approx(0.0, abs=1e-9)
    noisy = bootstrap_shift(_planted_runs(1.0, 4.0, noise=0.02), "width", n_boot=200)
    assert noisy["lo"] <= noisy["shift"] <= noisy["hi"] and noisy["ci95"] > 0
    assert noisy["n_seeds"] == 5


def test_summary_markdown_quotes_the_summary_numbers():
    from traindyn.report.scaling import markdown

    entry = {"mean": 0.31, "ci95": 0.12, "optimum_at_edge_share": 0.2, "best_lr": {"32": 20.0, "512": 25.0},
             "largest_stable_lr": {"32": 80.0, "512": 40.0}, "width_small": 32, "width_large": 512,
             "mean_curve": {"shift": 0.3, "lo": 0.1, "hi": 0.5, "ci95": 0.2}}
    summary = {"n_runs": 10, "n_diverged": 2, "lr_shift_octaves": {"mup": entry},
               "sharpness_spread": {"mup": {"mean": 0.043, "ci95": 0.01}, "ntk_mse": {"mean": 0.2, "ci95": None}},
               "provenance": {"commit": "0123456789abcdef", "date": "2026-01-01 00:00 UTC", "cpu": "x", "cpus": 2}}
    text = markdown(summary)
    assert text.startswith("# Scaling study: results")
    assert "| μP | +0.31 ± 0.12 | +0.30 [+0.10, +0.50] | 0.20 | 20 / 25 | 80 / 40 |" in text
    assert "| μP | 0.043 ± 0.010 |" in text and "| NTK mse | 0.200 |" in text
    assert "commit 0123456789ab " in text
    # worded from the numbers: |0.31| + 0.12 <= 1 octave, 0.31 - 0.12 > 0, edge share 0.2 <= 0.25
    assert "μP +0.31 ± 0.12 octaves (edge share 0.20): drifts, by less than an octave" in text


def test_transfer_verdicts_follow_the_numbers():
    from traindyn.report.scaling import transfer_verdict

    def e(mean, ci, edge=0.0):
        return {"mean": mean, "ci95": ci, "optimum_at_edge_share": edge}

    assert transfer_verdict(e(0.11, 0.37)) == "transfers"
    assert transfer_verdict(e(-2.12, 0.14)) == "moves"
    assert transfer_verdict(e(0.59, 0.33)) == "drifts"
    assert transfer_verdict(e(0.56, 0.53)) == "unclear"
    assert transfer_verdict(e(0.0, 0.0, edge=1.0)) == "edge"
    assert transfer_verdict(e(None, None)) == "none"
