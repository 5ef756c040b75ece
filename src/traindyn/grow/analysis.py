"""Aggregation of the lag study: rank statistics of l(k) vs l(T), selection quality, stacking, summary.json."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..scaling.analysis import ci95

__all__ = ["aggregate_lag", "base_plateau", "bootstrap_ci", "kendall", "lag_correlations", "lr_sweep_optimum",
           "paired_order_holds", "rho_at_growth_vs_lag", "spearman", "spread_ratio_band", "strategy_spread"]  # fmt: skip


def _ranks(x: np.ndarray) -> np.ndarray:
    return pd.Series(x).rank(method="average").to_numpy()


def spearman(x, y) -> float:
    """Spearman rho: the Pearson correlation of average ranks (NaN when either side is constant)."""
    rx, ry = _ranks(np.asarray(x, float)), _ranks(np.asarray(y, float))
    if rx.std() == 0 or ry.std() == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def kendall(x, y) -> float:
    """Kendall tau-b: concordant minus discordant pairs over sqrt of untied pairs on each side."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    dx = np.sign(x[:, None] - x[None, :])[np.triu_indices(len(x), 1)]
    dy = np.sign(y[:, None] - y[None, :])[np.triu_indices(len(y), 1)]
    denom = math.sqrt(float((dx != 0).sum()) * float((dy != 0).sum()))
    return float((dx * dy).sum() / denom) if denom else math.nan


def bootstrap_ci(values, n: int, seed: int) -> tuple[float | None, float | None]:
    """Percentile 95% interval of the mean over resamples (with replacement) of ``values``."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], float)
    if len(v) < 2:
        return None, None
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), (n, len(v)))].mean(axis=1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def lag_correlations(table: pd.DataFrame, final_lag: int) -> pd.DataFrame:
    """Per seed and lag: rho and tau of l(k) vs l(T) across strategies, LAG's pick, top-1 and regret.

    Args:
        table: Long table with ``seed``, ``strategy``, ``lag``, ``val_loss`` (the ranked pool).
        final_lag: T; its loss is l(T).

    Returns:
        One row per (seed, lag): ``spearman``, ``kendall``, ``picked``, ``top1`` (the pick is
        the best at T), ``regret`` (l_T(picked) - min l_T) and ``candidates``.
    """
    rows = []
    for seed, cell in table.groupby("seed"):
        wide = cell.pivot_table(index="strategy", columns="lag", values="val_loss")
        if final_lag not in wide:
            continue
        final = wide[final_lag]
        for lag in wide.columns:
            col = wide[lag].dropna()
            lt = final.loc[col.index]
            picked = col.idxmin()
            rows.append({"seed": seed, "lag": int(lag), "spearman": spearman(col, lt), "kendall": kendall(col, lt),
                         "picked": picked, "top1": bool(picked == lt.idxmin()),
                         "regret": float(lt[picked] - lt.min()), "candidates": int(len(col))})  # fmt: skip
    return pd.DataFrame(rows)


def strategy_spread(final: pd.DataFrame) -> dict[str, Any]:
    """Whether the spread of strategy means exceeds the seed noise.

    Args:
        final: ``seed``, ``strategy``, ``val_loss`` (l(T)).

    Returns:
        ``spread`` (sd across strategies of their mean), ``seed_sd`` (pooled sd across
        seeds within a strategy), ``ratio``, ``exceeds`` (ratio > 1), ``paired_sd`` (sd of
        the strategy x seed residual: the noise within a seed's ranking), ``ratio_paired``,
        ``best_gap`` (second best mean minus the best) and ``best_gap_over_seed_sd``.
    """
    means = final.groupby("strategy")["val_loss"].mean().sort_values()
    var = final.groupby("strategy")["val_loss"].var(ddof=1).dropna()
    seed_sd = float(math.sqrt(var.mean())) if len(var) else math.nan
    spread = float(means.std(ddof=1)) if len(means) > 1 else math.nan
    gap = float(means.iloc[1] - means.iloc[0]) if len(means) > 1 else math.nan
    ratio = spread / seed_sd if seed_sd and math.isfinite(seed_sd) else math.nan
    # The noise a per-seed ranking sees: the strategy x seed residual (a seed that is worse
    # for every strategy moves the seed sd, not the ranking).
    wide = final.pivot_table(index="strategy", columns="seed", values="val_loss").dropna(axis=1)
    resid = wide.sub(wide.mean(axis=1), axis=0).sub(wide.mean(axis=0), axis=1) + wide.to_numpy().mean()
    dof = (wide.shape[0] - 1) * (wide.shape[1] - 1)
    paired = float(math.sqrt((resid.to_numpy() ** 2).sum() / dof)) if dof > 0 else math.nan
    return {"spread": spread, "seed_sd": seed_sd, "ratio": ratio, "exceeds": bool(ratio > 1),
            "paired_sd": paired, "ratio_paired": spread / paired if paired else math.nan,
            "best": str(means.index[0]), "best_gap": gap,
            "best_gap_over_seed_sd": gap / seed_sd if seed_sd else math.nan}  # fmt: skip


def paired_order_holds(spread: dict[str, Any]) -> bool:
    """Whether the strategies' order within a seed is above noise.

    True when the paired ratio of ``strategy_spread`` is at least 1 (the low end of its
    ``spread_ratio_band`` when there is one).
    """
    low = spread.get("ratio_paired_boot_lo")
    value = low if low is not None else spread.get("ratio_paired")
    return value is not None and value >= 1


def spread_ratio_band(final: pd.DataFrame, n: int, seed: int) -> dict[str, float | None]:
    """Percentile 95% bands of ``strategy_spread``'s ratio and paired ratio over resampled seeds.

    Seeds are drawn with replacement (a seed keeps all its strategies, so the pairing
    stays); each draw is relabelled so a repeated seed counts as another seed. With few
    seeds a repeated seed shrinks the within-strategy sd, so the band leans high: read it
    as the ratio's spread, not as a test.
    """
    wide = final.pivot_table(index="seed", columns="strategy", values="val_loss").dropna()
    if len(wide) < 2 or wide.shape[1] < 2:
        return {"ratio_boot_lo": None, "ratio_boot_hi": None, "ratio_paired_boot_lo": None,
                "ratio_paired_boot_hi": None}  # fmt: skip
    rng = np.random.default_rng(seed)
    ratios, paired = [], []
    for _ in range(n):
        pick = wide.iloc[rng.integers(0, len(wide), len(wide))].reset_index(drop=True)
        long = pick.rename_axis("seed").reset_index().melt(id_vars="seed", var_name="strategy", value_name="val_loss")
        out = strategy_spread(long)
        ratios.append(out["ratio"])
        paired.append(out["ratio_paired"])

    def band(v):
        v = np.asarray([x for x in v if math.isfinite(x)], float)
        return (float(np.quantile(v, 0.025)), float(np.quantile(v, 0.975))) if len(v) else (None, None)

    (lo, hi), (plo, phi) = band(ratios), band(paired)
    return {"ratio_boot_lo": lo, "ratio_boot_hi": hi, "ratio_paired_boot_lo": plo, "ratio_paired_boot_hi": phi}


def base_plateau(curve: pd.DataFrame, steps: int, window: float, threshold: float) -> dict[str, Any]:
    """Relative fall of the base's val loss over the last ``window`` of training.

    Args:
        curve: ``step``, ``value`` of ``val_loss``.
        steps: The base's steps.
        window: Fraction of training at the end checked.
        threshold: Above this relative fall the base is undertrained.
    """
    curve = curve.sort_values("step")
    start = curve[curve["step"] <= steps * (1 - window)].iloc[-1]
    end = curve.iloc[-1]
    fall = float((start["value"] - end["value"]) / end["value"])
    return {"from_step": int(start["step"]), "loss_at_window": float(start["value"]), "final_loss": float(end["value"]),
            "relative_fall": fall, "undertrained": bool(fall > threshold)}  # fmt: skip


def rho_at_growth_vs_lag(corr: pd.DataFrame, lag: int, boot: dict[str, int]) -> dict[str, Any]:
    """Is the loss at growth a worse predictor than the loss at ``lag``? Paired by seed.

    Args:
        corr: ``lag_correlations`` rows (``seed``, ``lag``, ``spearman``).
        lag: The lag compared with k = 0 (the lag at threshold, or the last lag before T).
        boot: ``bootstrap`` resamples and ``bootstrap_seed``.

    Returns:
        ``lag``, ``rho0`` and ``rho_lag`` (mean, t-interval, bootstrap band), ``difference``
        (rho(lag) - rho(0) per seed: mean, t-interval, bootstrap band) and ``below``: True
        when the difference's t-interval lies above 0, False when it lies below, None when
        it holds 0 (or there are too few seeds).
    """
    wide = corr.pivot_table(index="seed", columns="lag", values="spearman")
    if 0 not in wide or lag not in wide:
        return {"lag": lag, "rho0": None, "rho_lag": None, "difference": None, "below": None}

    def entry(values) -> dict[str, Any]:
        vals = [float(v) for v in values if math.isfinite(v)]
        lo, hi = bootstrap_ci(vals, boot["bootstrap"], boot["bootstrap_seed"])
        return {**ci95(vals), "boot_lo": lo, "boot_hi": hi}

    diff = entry((wide[lag] - wide[0]).dropna())
    below = None
    if diff["ci95"] is not None and math.isfinite(diff["ci95"]):
        lo, hi = diff["mean"] - diff["ci95"], diff["mean"] + diff["ci95"]
        below = True if lo > 0 else False if hi < 0 else None
    return {"lag": int(lag), "rho0": entry(wide[0].dropna()), "rho_lag": entry(wide[lag].dropna()),
            "difference": diff, "below": below}  # fmt: skip


def lr_sweep_optimum(table: pd.DataFrame) -> dict[str, Any]:
    """Best post-growth LR factor of a sweep and whether it sits at the edge of the grid.

    Args:
        table: ``lr_factor`` and ``mean`` (final loss over seeds) of one parameterization;
            non-finite means (diverged) are skipped.

    Returns:
        ``best_factor``, ``factors`` (the finite grid, ascending), ``means`` (per factor),
        ``at_edge`` (``"low"`` or ``"high"`` when the best is the smallest or largest finite
        factor, else None), ``interior`` and ``octaves_to_edge`` (log2 distance from the best
        to the nearer end of the grid).
    """
    t = table[np.isfinite(table["mean"].astype(float))].sort_values("lr_factor")
    if t.empty:
        return {"best_factor": None, "factors": [], "means": [], "at_edge": None, "interior": False,
                "octaves_to_edge": None}  # fmt: skip
    factors = [float(f) for f in t["lr_factor"]]
    best = float(t.loc[t["mean"].astype(float).idxmin(), "lr_factor"])
    edge = "low" if best == factors[0] else "high" if best == factors[-1] else None
    octaves = min(math.log2(best / factors[0]), math.log2(factors[-1] / best))
    return {"best_factor": best, "factors": factors, "means": [float(m) for m in t["mean"]],
            "at_edge": edge, "interior": edge is None, "octaves_to_edge": float(octaves)}  # fmt: skip


def _read(run_dirs: list[Path]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    runs, lags, curves, growth = [], [], [], []
    for d in run_dirs:
        final = json.loads((d / "final.json").read_text())
        spec = final["spec"]
        ex = spec["extra"]
        tag = spec["param"] if spec["depth_alpha"] is None else f"{spec['param']}-a{spec['depth_alpha']:g}"
        key = {"run": final["run"], "param": tag, "role": ex["role"], "group": ex.get("group", ex["role"]),
               "strategy": ex["strategy"], "seed": spec["seed"], "stage": ex.get("stage"),
               "depth": spec["model"]["depth"], "lr": spec["lr"], "steps": spec["steps"]}  # fmt: skip
        runs.append({**key, "diverged": final["diverged"], "final_val_loss": final.get("final_val_loss")})
        if (d / "lag.parquet").is_file():
            lags.append(pd.read_parquet(d / "lag.parquet").drop(columns="run").assign(**key))
        if (d / "growth.parquet").is_file():
            growth.append(pd.read_parquet(d / "growth.parquet").drop(columns=["run", "strategy"]).assign(**key))
        m = pd.read_parquet(d / "metrics.parquet")
        keep = (m["metric"] == "val_loss") | ((m["metric"] == "train_loss_batch") & (m["step"] % 10 == 0))
        curves.append(m[keep].drop(columns="run").assign(**key))
    cat = lambda fs: pd.concat(fs, ignore_index=True) if fs else pd.DataFrame()  # noqa: E731
    return pd.DataFrame(runs), cat(lags), cat(curves), cat(growth)


def _by_lag(corr: pd.DataFrame, column: str, boot: dict[str, int]) -> dict[str, Any]:
    out = {}
    for lag, cell in corr.groupby("lag"):
        vals = [float(v) for v in cell[column]]
        lo, hi = bootstrap_ci(vals, boot["bootstrap"], boot["bootstrap_seed"])
        out[str(int(lag))] = {**ci95(vals), "boot_lo": lo, "boot_hi": hi}
    return out


def _stacking(runs: pd.DataFrame, lag: pd.DataFrame, cfg: dict[str, Any]) -> dict[str, Any]:
    """Final loss per stacking schedule (last stage), paired differences and total steps.

    Total steps count the first stage's model, every stage, and for adaptive stacking its
    selection cost (c - 1) k per stage (the chosen candidate's k steps are its stage's).
    """
    from .grid import stack_schedules

    stage = runs[runs["role"] == "stage"]
    if stage.empty:
        return {}
    last = stage[stage["stage"] == stage["stage"].max()][["run", "steps"]].rename(columns={"steps": "T_run"})
    finals = lag.merge(last, on="run")
    finals = finals[finals["lag"] == finals["T_run"]]
    per = {s: c.set_index("seed")["val_loss"] for s, c in finals.groupby("strategy")}
    a = cfg["adaptive"]
    overhead = sum(stack_schedules(cfg).values())
    plain = a["start_steps"] + a["stage_steps"] * (a["end_depth"] - a["start_depth"])
    out = {}
    for sched, vals in per.items():
        counted = sched == "adaptive" or sched.endswith("_pc")
        entry = {**ci95(list(vals)), "total_steps": int(plain + (overhead if counted else 0)),
                 "probe_steps_counted": counted}  # fmt: skip
        if sched != "adaptive" and "adaptive" in per:
            diff = ci95(list((per["adaptive"] - vals).dropna()))
            entry["adaptive_minus_this"] = diff
            entry["verdict"] = _verdict(diff)
        out[sched] = entry
    return out


def _verdict(diff: dict[str, Any]) -> str | None:
    """Adaptive minus a fixed schedule: which is better by its 95% t-interval (None: too few seeds)."""
    if diff.get("ci95") is None or not math.isfinite(diff["ci95"]):
        return None
    if diff["ci95"] == 0 and diff["mean"] == 0:
        return "identical"
    lo, hi = diff["mean"] - diff["ci95"], diff["mean"] + diff["ci95"]
    return "adaptive worse" if lo > 0 else "adaptive better" if hi < 0 else "no significant difference"


def _clean(obj: Any) -> Any:
    """NaN and inf -> None, so summary.json is strict JSON."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def _write(out_dir: Path, name: str, table: pd.DataFrame) -> None:
    tmp = out_dir / f".{name}.parquet.tmp"
    table.to_parquet(tmp, index=False)
    tmp.replace(out_dir / f"{name}.parquet")


def aggregate_lag(run_dirs: list[Path], out_dir: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    """Write the lag study's tables; return its summary (NaN as None: strict JSON).

    Tables: ``runs``, ``lag`` (l(k) of every run), ``curves`` (val loss and sampled batch
    loss), ``growth`` (what each grown run did, adaptive choices included),
    ``correlations`` (per param, seed and lag), ``lag_summary`` (per param and lag),
    ``final_loss``, ``stacking``, ``base_plateau``, ``lr_sweep``.

    Args:
        run_dirs: Finished runs of the study.
        out_dir: ``results/analysis/lag``.
        cfg: The resolved ``lag`` section.

    Returns:
        The summary (``traindyn.studies.aggregate`` writes it as ``summary.json`` and ``summary.md``).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    runs, lag, curves, growth = _read(run_dirs)
    T, an = cfg["grow"]["steps"], cfg["analysis"]
    summary: dict[str, Any] = {"n_runs": int(len(runs)), "n_diverged": int(runs["diverged"].sum()), "T": T}
    # base plateau
    b = cfg["base"]
    plateau = []
    for run, cell in curves[(curves["strategy"] == "base") & (curves["metric"] == "val_loss")].groupby("run"):
        steps = int(runs.set_index("run").loc[run, "steps"])
        plateau.append({"run": run, "param": cell["param"].iloc[0], "seed": int(cell["seed"].iloc[0]),
                        **base_plateau(cell, steps, b["plateau_window"], b["plateau_threshold"])})  # fmt: skip
    plateau = pd.DataFrame(plateau)
    summary["base_undertrained"] = sorted(plateau.loc[plateau["undertrained"], "run"]) if len(plateau) else []
    summary["base_relative_fall"] = ci95(list(plateau["relative_fall"])) if len(plateau) else None
    # LAG over the ranked pool (scratch is the control)
    pool = lag[(lag["group"] == "pool") & (lag["strategy"] != "scratch")]
    corr = pd.concat([lag_correlations(c, T).assign(param=p) for p, c in pool.groupby("param")], ignore_index=True)
    sp = corr[corr["param"] == "sp"]
    summary["spearman_by_lag"] = _by_lag(sp, "spearman", an)
    summary["kendall_by_lag"] = _by_lag(sp, "kendall", an)
    summary["regret_by_lag"] = _by_lag(sp, "regret", an)
    summary["top1_by_lag"] = _by_lag(sp.assign(top1=sp["top1"].astype(float)), "top1", an)
    summary["spearman_by_lag_by_param"] = {p: _by_lag(c, "spearman", an) for p, c in corr.groupby("param")}
    summary["lag_at_threshold"] = {}
    for p, by in summary["spearman_by_lag_by_param"].items():
        hit = [int(k) for k, v in by.items() if v["mean"] is not None and v["mean"] >= an["rho_threshold"]]
        summary["lag_at_threshold"][p] = {"threshold": an["rho_threshold"], "lag": min(hit) if hit else None}
    # the loss at growth against the loss at the lag (the threshold's below T, else the last before T)
    summary["rho_at_growth_vs_lag"] = {}
    for p, c in corr.groupby("param"):
        hit = summary["lag_at_threshold"][p]["lag"]
        before = sorted(int(k) for k in c["lag"].unique() if 0 < int(k) < T)
        k = hit if hit not in (None, 0, T) else (before[-1] if before else None)  # rho(T) = 1 by definition
        if k is not None:
            summary["rho_at_growth_vs_lag"][p] = rho_at_growth_vs_lag(c, k, an)
    cands = int(sp["candidates"].max()) if len(sp) else 0
    summary["selection_cost_steps"] = {str(k): (cands - 1) * int(k) for k in sorted(sp["lag"].unique())}
    final = lag[(lag["group"] == "pool") & (lag["lag"] == T)]
    summary["final_loss"] = {s: ci95(list(c["val_loss"])) for s, c in final[final["param"] == "sp"].groupby("strategy")}
    summary["final_loss_by_param"] = {p: {s: ci95(list(c2["val_loss"])) for s, c2 in c.groupby("strategy")}
                                      for p, c in final.groupby("param")}  # fmt: skip
    # bootstrap draws of seeds: fewer than the rho bands' (each recomputes the whole spread)
    n_band = min(an["bootstrap"], 500)
    summary["strategy_spread_over_seed_sd"] = {}
    for p, c in final.groupby("param"):
        ranked = c[c["strategy"] != "scratch"]
        summary["strategy_spread_over_seed_sd"][p] = {**strategy_spread(ranked),
                                                      **spread_ratio_band(ranked, n_band, an["bootstrap_seed"])}  # fmt: skip
    summary["loss_at_growth"] = {s: ci95(list(c["val_loss"])) for s, c in
                                 pool[(pool["param"] == "sp") & (pool["lag"] == 0)].groupby("strategy")}  # fmt: skip
    # moments ablation: paired against the same strategy with a fresh optimizer
    mom = lag[(lag["group"] == "moments") & (lag["lag"] == T)]
    summary["moments_ablation"] = {}
    for s, c in mom.groupby("strategy"):
        fresh = final[(final["param"] == "sp") & (final["strategy"] == s.removesuffix("-moments"))]
        diff = c.set_index("seed")["val_loss"] - fresh.set_index("seed")["val_loss"]
        summary["moments_ablation"][s] = {**ci95(list(c["val_loss"])), "minus_fresh": ci95(list(diff.dropna()))}
    # post-growth LR sweep
    sweep = lag[lag["group"].isin(["lr", "pool"]) & (lag["lag"] == T)]
    sweep = sweep[sweep["strategy"] == cfg["lr_sweep"]["strategy"]]
    sweep = sweep[sweep["seed"].isin(cfg["lr_sweep"]["seeds"])].assign(
        lr_factor=lambda t: (t["lr"] / cfg["training"]["lr"]).round(6))
    lr_table = sweep.groupby(["param", "lr_factor"])["val_loss"].agg(["mean", "std", "count"]).reset_index()
    if cfg["lr_sweep"]["enabled"]:  # else the table holds only the pool's own LR: not a sweep
        summary["post_growth_lr"] = {p: lr_sweep_optimum(c) for p, c in lr_table.groupby("param")}
    else:
        summary["post_growth_lr"], lr_table = {}, lr_table.iloc[:0]
    summary["post_growth_best_lr_factor"] = {p: o["best_factor"] for p, o in summary["post_growth_lr"].items()}
    summary["post_growth_lr_factors"] = {p: o["factors"] for p, o in summary["post_growth_lr"].items()}
    summary["post_growth_lr_at_edge"] = {p: o["at_edge"] for p, o in summary["post_growth_lr"].items()}
    gone = runs[(runs["group"] == "lr") & runs["diverged"]]
    for p, o in summary["post_growth_lr"].items():  # a diverged factor: the edge is then the stability edge
        o["diverged_factors"] = sorted({round(float(lr) / cfg["training"]["lr"], 6) for lr in
                                        gone.loc[gone["param"] == p, "lr"]})  # fmt: skip
    summary["adaptive_vs_fixed"] = _stacking(runs, lag, cfg)
    lag_summary = pd.DataFrame([{"param": p, "statistic": stat, "lag": int(k), **v}
                                for stat in ("spearman", "kendall", "regret", "top1")
                                for p, c in corr.groupby("param")
                                for k, v in _by_lag(c.assign(top1=c["top1"].astype(float)), stat, an).items()])
    final_table = final.groupby(["param", "strategy"])["val_loss"].apply(lambda v: pd.Series(ci95(list(v)))).unstack()
    for name, table in (("runs", runs), ("lag", lag), ("curves", curves), ("growth", growth),
                        ("correlations", corr), ("lag_summary", lag_summary),
                        ("final_loss", final_table.reset_index()), ("base_plateau", plateau),
                        ("lr_sweep", lr_table)):  # fmt: skip
        _write(out_dir, name, table)
    return _clean(summary)
