"""The cmd study's grid, cross-key checks and callbacks, and its modes-needed rule."""

import pandas as pd
import pytest

from traindyn.cmd.analysis import modes_needed
from traindyn.config import ConfigError, load_config
from traindyn.studies import callbacks, study_runs


def test_runs_are_named_by_their_grid_point_and_carry_a_trajectory():
    cfg = load_config(["config.yaml"], []).raw
    runs = study_runs(cfg, "cmd")
    assert {"mlp-sp-w128-d2-lr0.1-s0", "mlp-sp-w128-d2-lr0.1-s0-psgd", "mlp-sp-w128-d2-lr0.1-s2-emb0.5",
            "gpt-sp-w64-d2-lr1-s1", "sweep-ntk-w512-d2-lr10-s0"} <= set(runs)
    assert all(s.snapshot_every > 0 and s.steps % s.snapshot_every == 0 for s in runs.values())
    assert len({s.seed for s in runs.values() if s.extra["kind"] == "sgd"}) >= 3
    kinds = {r: [type(cb).__name__ for cb in callbacks("cmd", s)] for r, s in runs.items()}
    assert kinds["mlp-sp-w128-d2-lr0.1-s0"] == ["OnlineCMDCallback"]
    assert kinds["mlp-sp-w128-d2-lr0.1-s0-psgd"] == ["PSGDCallback"]
    assert kinds["mlp-sp-w128-d2-lr0.1-s0-emb0.25"] == ["EmbeddedCMDCallback"]
    assert kinds["sweep-mup-w32-d2-lr10-s0"] == []
    assert runs["sweep-mup-w512-d2-lr10-s0"].base_width == 32


@pytest.mark.parametrize("override, message", [
    ("cmd.models.mlp.stride=7", "not a multiple of its stride"),
    ("cmd.modes=3", "not in cmd.modes_sweep"),
    ("cmd.models.gpt.dataset=fashion-mnist", "does not fit dataset"),
    ("cmd.warmup=60", "leave nothing after cmd.warmup"),
    ("cmd.modes_sweep=[1,2,8,64]", "DMD's rank"),
    ("cmd.k=1", "cmd.k"),
])
def test_bad_cmd_configs_are_named(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(["config.yaml"], [override])


def test_a_dataset_that_is_not_prepared_is_named():
    with pytest.raises(ConfigError, match=r"cmd.models.mlp.dataset is 'mnist'"):
        load_config(["config.yaml"], ["cmd.models.mlp.dataset=mnist", "data.datasets=[fashion-mnist, shakespeare]"])


def test_modes_needed_is_the_smallest_m_under_the_threshold():
    e = pd.DataFrame({"method": ["cmd"] * 4 + ["pca"], "dims": [1, 2, 4, 8, 1], "error": [0.5, 0.2, 0.09, 0.05, 0.01]})
    assert modes_needed(e, 0.1) == 4 and modes_needed(e, 0.01) is None
