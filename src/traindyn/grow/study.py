"""The lag study's entry in the registry (``traindyn.studies``): runs, checks, callbacks, aggregate."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..train.spec import RunSpec

__all__ = ["aggregate", "callbacks", "checks", "runs"]


def runs(cfg: dict[str, Any]) -> dict[str, RunSpec]:
    """Every run of the lag study, keyed by run id."""
    from .grid import lag_runs

    return lag_runs(cfg["lag"])


def callbacks(spec: RunSpec) -> list:
    """Grow from the base (grown runs), record l(k) (all but bases), save the final weights."""
    from .callbacks import GrowFromBase, LagEval, SaveWeights

    out: list = []
    if "grow" in spec.extra:
        out.append(GrowFromBase(spec.extra["grow"], spec.seed))
    if "lag" in spec.extra:
        out.append(LagEval(spec.extra["lag"]["lags"], spec.extra["lag"]["examples"]))
    out.append(SaveWeights(spec.to_dict(), optimizer=spec.extra.get("save", {}).get("optimizer", False)))
    return out


def aggregate(run_dirs: list[Path], out_dir: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    """Runs -> runs / lag / curves / stages parquet and summary.json."""
    from .analysis import aggregate_lag

    return aggregate_lag(run_dirs, out_dir, cfg["lag"])


def checks(cfg: dict[str, Any]) -> list[str]:
    """Cross-key problems of the ``lag`` section (called only when it passed the schema)."""
    from .plans import depth_plan

    lag, problems = cfg["lag"], []
    if lag["dataset"] not in cfg["data"]["datasets"]:
        problems.append(f"lag.dataset is {lag['dataset']!r} but data.datasets {cfg['data']['datasets']} "
                        "does not prepare it: add it to data.datasets")  # fmt: skip
    if lag["dataset"] not in ("shakespeare", "wikitext2"):
        problems.append(f"lag.dataset={lag['dataset']!r}: the lag study grows a GPT, so it needs a text "
                        "dataset (shakespeare or wikitext2)")  # fmt: skip
    m, g, L = lag["model"], lag["grow"], lag["base"]["depth"]
    if m["width"] % m["n_heads"]:
        problems.append(f"lag.model.n_heads={m['n_heads']} does not divide lag.model.width={m['width']}")
    for key, names in (("lag.grow.strategies", g["strategies"]), ("lag.depth_mup.strategies",
                                                                   lag["depth_mup"]["strategies"])):  # fmt: skip
        plans: dict[str, str] = {}
        for s in names:
            if s in ("net2wider", "scratch"):
                continue
            try:
                plan = repr(depth_plan(s, L, g["added"]))
            except ValueError as err:
                problems.append(f"{key}: {err} (lag.base.depth={L}, lag.grow.added={g['added']})")
                continue
            if plan in plans:  # e.g. copy_top and stack when added == base_depth
                problems.append(f"{key}: {plans[plan]!r} and {s!r} build the same model at lag.base.depth={L}, "
                                f"lag.grow.added={g['added']}: keep one of them")  # fmt: skip
            plans.setdefault(plan, s)
    ranked = [s for s in g["strategies"] if s != "scratch"]
    if len(ranked) < 3:
        problems.append(f"lag.grow.strategies ranks {len(ranked)} growth strategies: rank correlations "
                        "need at least 3 (scratch is a control, not ranked)")  # fmt: skip
    for s in g["moments"]:
        if s in ("net2wider", "scratch"):
            problems.append(f"lag.grow.moments: {s!r} has no grown Adam moments (depth strategies only)")
    if 1.0 in [float(f) for f in lag["lr_sweep"]["factors"]]:
        problems.append("lag.lr_sweep.factors contains 1: the base LR is the pool run itself; drop it")
    if lag["lr_sweep"]["enabled"]:
        factors = [float(f) for f in lag["lr_sweep"]["factors"]]
        if not (min(factors) < 1 < max(factors)):
            problems.append(f"lag.lr_sweep.factors {factors} must lie on both sides of 1 (the pool's own LR), "
                            "else the sweep's best factor cannot be interior to its grid")  # fmt: skip
        swept = lag["lr_sweep"]["strategy"]
        pools = [("lag.grow.strategies", g["strategies"])]
        if lag["depth_mup"]["enabled"]:
            pools.append(("lag.depth_mup.strategies", lag["depth_mup"]["strategies"] or g["strategies"]))
        for key, names in pools:
            if swept not in names:
                problems.append(f"lag.lr_sweep.strategy={swept!r} is not in {key}: the sweep's factor 1 is that "
                                "pool's run, so the grid would miss the base LR")  # fmt: skip
        missing = sorted(set(lag["lr_sweep"]["seeds"]) - set(lag["seeds"]))
        if missing:
            problems.append(f"lag.lr_sweep.seeds {missing} are not in lag.seeds")
    if lag["depth_mup"]["enabled"] and not set(lag["depth_mup"]["seeds"]) <= set(lag["seeds"]):
        problems.append("lag.depth_mup.seeds must be a subset of lag.seeds (paired comparisons)")
    a = lag["adaptive"]
    if a["enabled"]:
        if a["end_depth"] <= a["start_depth"]:
            problems.append(f"lag.adaptive.end_depth={a['end_depth']} must exceed start_depth={a['start_depth']}")
        if a["lag"] >= a["stage_steps"]:
            problems.append(f"lag.adaptive.lag={a['lag']} must be below lag.adaptive.stage_steps={a['stage_steps']}")
        if a["lag"] < lag["training"]["warmup_steps"]:
            problems.append(f"lag.adaptive.lag={a['lag']} ends inside the re-warmup "
                            f"(lag.training.warmup_steps={lag['training']['warmup_steps']}): probes would see no full LR")
    if any(k > g["steps"] for k in lag["lags"]):
        problems.append(f"lag.lags {[k for k in lag['lags'] if k > g['steps']]} exceed the post-growth "
                        f"budget lag.grow.steps={g['steps']}")  # fmt: skip
    if lag["training"]["warmup_steps"] >= g["steps"] or lag["base"]["warmup_steps"] >= lag["base"]["steps"]:
        problems.append("lag warm-up (lag.training.warmup_steps / lag.base.warmup_steps) must be shorter "
                        "than its run (lag.grow.steps / lag.base.steps)")  # fmt: skip
    if not math.isfinite(lag["training"]["lr"]):
        problems.append("lag.training.lr must be finite")
    return problems
