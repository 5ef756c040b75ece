"""Aggregation of the mat study: tidy tables of runs, curves, lambda_max, cost to target, summary.json."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..scaling.analysis import ci95
from .policy import coefficient_of_variation

__all__ = ["aggregate_mat", "cost_curve", "to_target"]

VARIANTS = ("full", "mat", "random", "inverse", "temporal")


def cost_curve(steps: pd.DataFrame, metrics: pd.DataFrame) -> pd.DataFrame:
    """Validation loss against cumulative FLOPs and seconds at every evaluation step.

    A step costs its GEMM FLOPs and its wall time; a measurement adds its FLOPs and
    seconds where ``charged`` (the variants whose gate needs it). The one step timed
    under ``FlopCounterMode`` (NaN seconds) is given the run's median step time.

    Args:
        steps: The run's ``mat_steps`` table.
        metrics: The run's ``metrics.parquet``.

    Returns:
        Columns ``step``, ``val_loss``, ``cum_flops``, ``cum_seconds``.
    """
    s = steps.sort_values("step")
    seconds = s["seconds"].fillna(s["seconds"].median())
    charged = s["charged"].astype(bool)
    flops = s["flops"] + np.where(charged, s["measure_flops"], 0)
    wall = seconds + np.where(charged, s["measure_seconds"], 0.0)
    cum = pd.DataFrame({"step": s["step"].to_numpy(), "cum_flops": flops.cumsum().to_numpy(dtype=float),
                        "cum_seconds": wall.cumsum().to_numpy(dtype=float)})  # fmt: skip
    cum = pd.concat([pd.DataFrame({"step": [0], "cum_flops": [0.0], "cum_seconds": [0.0]}), cum])
    val = metrics[metrics["metric"] == "val_loss"][["step", "value"]].rename(columns={"value": "val_loss"})
    return val.merge(cum, on="step", how="left").sort_values("step").reset_index(drop=True)


def to_target(curve: pd.DataFrame, target: float) -> dict[str, Any]:
    """FLOPs and seconds at the first evaluation whose validation loss is at most ``target``."""
    hit = curve[curve["val_loss"] <= target]
    if hit.empty:
        return {"reached": False, "step_to_target": None, "flops_to_target": None, "seconds_to_target": None}
    row = hit.iloc[0]
    return {"reached": True, "step_to_target": int(row["step"]), "flops_to_target": float(row["cum_flops"]),
            "seconds_to_target": float(row["cum_seconds"])}  # fmt: skip


def _read(d: Path, name: str) -> pd.DataFrame:
    path = d / f"{name}.parquet"
    return pd.read_parquet(path) if path.is_file() else pd.DataFrame()


def _cv_rows(lam: pd.DataFrame) -> pd.DataFrame:
    return (lam.groupby("step")
            .agg(cv=("lambda_max", coefficient_of_variation), cv_cos=("lambda_max_cos", coefficient_of_variation))
            .reset_index())  # fmt: skip


def _saved(per_seed: pd.DataFrame, col: str, variant: str) -> dict[str, Any]:
    """Per-seed paired % saved of ``col`` by ``variant`` against full."""
    wide = per_seed.pivot_table(index="seed", columns="variant", values=col, aggfunc="first")
    if variant not in wide or "full" not in wide:
        return ci95([])
    vals = [100.0 * (1.0 - v / f) if (v is not None and f and math.isfinite(v) and math.isfinite(f)) else None
            for v, f in zip(wide[variant], wide["full"], strict=True)]  # fmt: skip
    return ci95(vals)


def _model_summary(runs: pd.DataFrame, targets: pd.DataFrame, cv: pd.DataFrame) -> dict[str, Any]:
    variants = [v for v in VARIANTS if v in set(runs["variant"])]
    merged = runs.merge(targets[["run", "flops_to_target", "seconds_to_target", "reached"]], on="run")
    out: dict[str, Any] = {"target_val_loss": float(targets["target"].iloc[0])}
    for key, col in (("flops_to_target", "flops_to_target"), ("wall_to_target", "seconds_to_target"),
                     ("final_val_loss", "final_val_loss"), ("final_val_acc", "final_val_acc"),
                     ("final_test_loss", "test_loss"), ("final_test_acc", "test_acc"),
                     ("active_fraction", "active_fraction"), ("total_flops", "total_flops"),
                     ("total_seconds", "total_seconds")):  # fmt: skip
        out[key] = {v: ci95(list(merged[merged["variant"] == v][col].astype(float))) for v in variants}
    out["reached_target"] = {v: int(merged[merged["variant"] == v]["reached"].sum()) for v in variants}
    out["seeds"] = {v: int((merged["variant"] == v).sum()) for v in variants}
    out["flops_saved_pct_vs_full"] = {v: _saved(merged, "flops_to_target", v) for v in variants if v != "full"}
    out["wall_saved_pct_vs_full"] = {v: _saved(merged, "seconds_to_target", v) for v in variants if v != "full"}
    wide = merged.pivot_table(index="seed", columns="variant", values="final_val_loss", aggfunc="first")
    if "mat" in wide and "random" in wide:
        out["final_val_loss_mat_minus_random"] = ci95(list(wide["mat"] - wide["random"]))
    full_cv = cv[cv["variant"] == "full"].groupby("run")["cv"].mean()
    out["lambda_max_cv_across_heads"] = ci95(list(full_cv))
    return out


def aggregate_mat(run_dirs: list[Path], out_dir: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    """Finished runs -> runs / curves / lambda / cv / to_target parquet; returns the summary.

    Args:
        run_dirs: Folders of the study's runs (``final.json`` and the MAT tables).
        out_dir: ``results/analysis/mat``.
        cfg: The resolved ``mat`` section (``target.slack``).

    Returns:
        The summary (``traindyn.studies.aggregate`` writes it as ``summary.json`` and ``summary.md``).
    """
    rows, curves, lambdas, cvs = [], [], [], []
    for d in map(Path, run_dirs):
        final = json.loads((d / "final.json").read_text())
        spec = final["spec"]
        key = {"run": final["run"], "model": spec["extra"]["model_name"], "variant": spec["extra"]["variant"],
               "seed": spec["seed"], "param": spec["param"], "width": spec["model"]["width"]}  # fmt: skip
        steps, lam, test, check = (_read(d, n) for n in ("mat_steps", "mat_lambda", "mat_test", "mat_flopcheck"))
        curve = cost_curve(steps, pd.read_parquet(d / "metrics.parquet"))
        curves.append(curve.assign(**key))
        lambdas.append(lam.drop(columns="run").assign(**key))
        cvs.append(_cv_rows(lam).assign(**key))
        charged = steps["charged"].astype(bool)
        rows.append({**key, "diverged": final["diverged"], "final_val_loss": final.get("final_val_loss"),
                     "final_val_acc": final.get("final_val_acc"),
                     "test_loss": float(test["test_loss"].iloc[0]) if len(test) else None,
                     "test_acc": float(test["test_acc"].iloc[0]) if len(test) else None,
                     "train_flops": float(steps["flops"].sum()),
                     "measure_flops": float(steps["measure_flops"].sum()),
                     "total_flops": float(curve["cum_flops"].iloc[-1]),
                     "train_seconds": float(steps["seconds"].fillna(steps["seconds"].median()).sum()),
                     "measure_seconds": float(steps["measure_seconds"].sum()),
                     "total_seconds": float(curve["cum_seconds"].iloc[-1]),
                     "charged": bool(charged.any()),
                     "active_fraction": float((steps["active"] / steps["modules"]).mean()),
                     "flop_rel_error": float(check["rel_error"].max()) if len(check) else None})  # fmt: skip
    runs = pd.DataFrame(rows)
    curves_df, lambda_df, cv_df = (pd.concat(x, ignore_index=True) for x in (curves, lambdas, cvs))
    targets = []
    main = runs[runs["variant"] != "cv"]
    for model, cell in main.groupby("model"):
        full = cell[cell["variant"] == "full"]["final_val_loss"].astype(float)
        target = (1 + cfg["target"]["slack"]) * float(full.mean())
        for run in cell["run"]:
            targets.append({"run": run, "model": model, "target": target,
                            **to_target(curves_df[curves_df["run"] == run], target)})  # fmt: skip
    targets_df = pd.DataFrame(targets)
    by_model = {m: _model_summary(main[main["model"] == m], targets_df[targets_df["model"] == m],
                                  cv_df[cv_df["model"] == m]) for m in sorted(set(main["model"]))}  # fmt: skip
    primary = "gpt" if "gpt" in by_model else next(iter(by_model), None)
    cv_runs = cv_df[cv_df["variant"] == "cv"].groupby(["param", "width", "run"])["cv"].mean().reset_index()
    cv_by_param = {p: {str(int(w)): float(c["cv"].mean()) for w, c in cell.groupby("width")}
                   for p, cell in cv_runs.groupby("param")}  # fmt: skip
    errors = runs["flop_rel_error"].dropna()
    pm = by_model.get(primary, {})
    summary = {
        "lambda_max_cv_across_heads": {m: {k: s["lambda_max_cv_across_heads"][k] for k in ("mean", "ci95")}
                                       for m, s in by_model.items()},
        "flops_to_target": pm.get("flops_to_target", {}),
        "flops_saved_pct_vs_full": pm.get("flops_saved_pct_vs_full", {}),
        "wall_saved_pct_vs_full": pm.get("wall_saved_pct_vs_full", {}),
        "final_val_loss": pm.get("final_val_loss", {}),
        "flop_counter_rel_error": float(errors.max()) if len(errors) else None,
        "cv_by_param": cv_by_param,
        "primary_model": primary,
        "by_model": by_model,
        "runs": len(runs),
    }  # fmt: skip
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tables = {"runs": runs, "curves": curves_df, "lambda": lambda_df, "cv": cv_df, "to_target": targets_df}
    for name, table in tables.items():
        tmp = out_dir / f".{name}.parquet.tmp"
        table.to_parquet(tmp, index=False)
        os.replace(tmp, out_dir / f"{name}.parquet")
    return summary
