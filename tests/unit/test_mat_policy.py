"""MAT's gating policies on hand-made lambda_max sequences."""

import pytest

from traindyn.mat.policy import (
    InversePolicy,
    MatchedRandomPolicy,
    TemporalStopPolicy,
    ThresholdPolicy,
    coefficient_of_variation,
    keep_per_layer,
)

LAYERS = {"a0": 0, "a1": 0, "b0": 1, "b1": 1}


def test_threshold_warmup_ema_reentry_and_one_per_layer():
    p = ThresholdPolicy(LAYERS, alpha=1.0, ema=0.5, warmup_steps=10)
    assert p.select(0, {"a0": 4, "a1": 1, "b0": 2, "b1": 1}) == set(LAYERS)  # warm-up: all on
    assert p.threshold == pytest.approx(2.0)
    # EMA: a0 (4+4)/2=4, a1 (1+1)/2=1, b0 (2+0)/2=1, b1 (1+1)/2=1; mean 1.75
    on = p.select(10, {"a0": 4, "a1": 1, "b0": 0, "b1": 1})
    assert p.smoothed == {"a0": 4.0, "a1": 1.0, "b0": 1.0, "b1": 1.0}
    assert p.threshold == pytest.approx(1.75)
    assert on == {"a0", "b0"}  # layer 1 has none above: its best (ties by name) stays on
    # b1 rises: EMA b1 = (1 + 9)/2 = 5 -> above the mean again (re-entry)
    on = p.select(20, {"a0": 4, "a1": 1, "b0": 1, "b1": 9})
    assert "b1" in on and "a0" in on and "a1" not in on


def test_alpha_scales_the_threshold():
    lam = {"a0": 3, "a1": 2, "b0": 2, "b1": 1}
    assert ThresholdPolicy(LAYERS, alpha=0.5, ema=0.0).select(0, lam) == set(LAYERS)
    assert ThresholdPolicy(LAYERS, alpha=1.4, ema=0.0).select(0, lam) == {"a0", "b0"}


def test_inverse_trains_the_low_lambda_modules():
    p = InversePolicy(LAYERS, alpha=1.0, ema=0.0)
    assert p.select(0, {"a0": 4, "a1": 1, "b0": 3, "b1": 0}) == {"a1", "b1"}
    # a layer with everything above keeps its lowest module on
    assert p.select(1, {"a0": 4, "a1": 4, "b0": 0, "b1": 0}) == {"a0", "b0", "b1"}


def test_temporal_stop_freezes_once_change_stays_small_and_keeps_one_per_layer():
    p = TemporalStopPolicy(LAYERS, tol=0.1, patience=2, warmup_steps=0)
    seq = [  # a0 settles at 2 (d = 1), a1 keeps moving, b0 and b1 both settle
        {"a0": 1.0, "a1": 1.0, "b0": 1.0, "b1": 1.0},
        {"a0": 2.0, "a1": 2.0, "b0": 3.0, "b1": 3.0},
        {"a0": 2.0, "a1": 4.0, "b0": 3.0, "b1": 3.0},
        {"a0": 2.05, "a1": 8.0, "b0": 3.0, "b1": 3.0},
    ]
    outs = [p.select(10 * i, lam) for i, lam in enumerate(seq)]
    assert outs[2] == set(LAYERS)  # one calm step is not enough
    assert outs[3] == {"a1", "b1"}  # a0 calm twice; b0 frozen first, b1 is its layer's last
    assert p.select(40, {"a0": 9.0, "a1": 8.0, "b0": 3.0, "b1": 3.0}) == {"a1", "b1"}  # no re-entry


def test_temporal_warmup_delays_freezing():
    p = TemporalStopPolicy(LAYERS, tol=0.5, patience=1, warmup_steps=25)
    for step in (0, 10, 20):
        assert p.select(step, dict.fromkeys(LAYERS, 1.0)) == set(LAYERS)


def test_matched_random_matches_counts_and_keeps_one_per_layer():
    counts = {0: 4, 10: 2, 20: 3}
    p = MatchedRandomPolicy(LAYERS, counts, seed=3)
    seen = []
    for step in (0, 5, 10, 15, 20):
        on = p.select(step, None)
        seen.append(on)
        assert {LAYERS[m] for m in on} == {0, 1}
    assert [len(s) for s in seen] == [4, 4, 2, 2, 3]
    assert seen[2] == seen[3]  # no re-selection between reference steps
    again = MatchedRandomPolicy(LAYERS, counts, seed=3)
    assert [again.select(s, None) for s in (0, 5, 10, 15, 20)] == seen


def test_policy_state_round_trip():
    p = ThresholdPolicy(LAYERS, ema=0.5)
    p.select(0, {"a0": 1, "a1": 2, "b0": 3, "b1": 4})
    q = ThresholdPolicy(LAYERS, ema=0.5)
    q.load_state_dict(p.state_dict())
    lam = {"a0": 4, "a1": 3, "b0": 2, "b1": 1}
    assert p.select(10, lam) == q.select(10, lam) and p.smoothed == q.smoothed
    r = MatchedRandomPolicy(LAYERS, {0: 2, 10: 3}, seed=1)
    r.select(0, None)
    s = MatchedRandomPolicy(LAYERS, {0: 2, 10: 3}, seed=9)
    s.load_state_dict(r.state_dict())
    assert r.select(10, None) == s.select(10, None)


def test_keep_per_layer_and_cv():
    assert keep_per_layer(set(), {"a0": 1, "a1": 2, "b0": 5, "b1": 0}, LAYERS, 1) == {"a1", "b0"}
    assert coefficient_of_variation([1.0, 1.0]) == 0.0
    assert coefficient_of_variation([1.0, 3.0]) == pytest.approx(0.5)
