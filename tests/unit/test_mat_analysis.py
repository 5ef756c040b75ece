"""The mat study's cost accounting on hand-made tables: cumulative FLOPs/seconds and cost to target."""

import math

import pandas as pd
import pytest

from traindyn.mat.analysis import cost_curve, to_target


def _steps(charged):
    return pd.DataFrame({
        "step": [1, 2, 3, 4], "flops": [10, 10, 8, 8], "seconds": [1.0, float("nan"), 1.0, 3.0],
        "measure_flops": [100, 0, 100, 0], "measure_seconds": [0.5, 0.0, 0.5, 0.0], "charged": [charged] * 4,
    })  # fmt: skip


def _metrics():
    return pd.DataFrame({"step": [0, 2, 4, 4], "metric": ["val_loss", "val_loss", "val_loss", "train_loss"],
                         "value": [3.0, 2.0, 1.5, 9.0]})  # fmt: skip


def test_cost_curve_charges_measurements_only_when_charged():
    free = cost_curve(_steps(False), _metrics())
    assert list(free["step"]) == [0, 2, 4] and list(free["val_loss"]) == [3.0, 2.0, 1.5]
    assert list(free["cum_flops"]) == [0, 20, 36]
    # the NaN step (timed under FlopCounterMode) gets the median step time, 1.0
    assert list(free["cum_seconds"]) == pytest.approx([0, 2.0, 6.0])
    paid = cost_curve(_steps(True), _metrics())
    assert list(paid["cum_flops"]) == [0, 120, 236]
    assert list(paid["cum_seconds"]) == pytest.approx([0, 2.5, 7.0])


def test_to_target_takes_the_first_evaluation_at_or_below_target():
    curve = cost_curve(_steps(False), _metrics())
    assert to_target(curve, 2.0) == {"reached": True, "step_to_target": 2, "flops_to_target": 20.0,
                                     "seconds_to_target": pytest.approx(2.0)}  # fmt: skip
    miss = to_target(curve, 1.0)
    assert miss["reached"] is False and miss["flops_to_target"] is None
    assert not math.isnan(to_target(curve, 10.0)["flops_to_target"])
