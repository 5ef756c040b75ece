"""The cmd study's aggregation: per-run fits -> tidy tables and summary.json (results/analysis/cmd/)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..scaling.analysis import ci95

__all__ = ["ACCURACY_METHODS", "aggregate_cmd", "modes_needed"]

# test_accuracy keys of summary.json, in table order
ACCURACY_METHODS = ["sgd", "ema", "swa", "cmd_posthoc", "cmd_online", "p_sgd"]


def modes_needed(errors: pd.DataFrame, threshold: float) -> float | None:
    """Smallest number of CMD modes whose relative error is at most ``threshold`` (None if none)."""
    ok = errors[(errors["method"] == "cmd") & (errors["error"] <= threshold)]
    return float(ok["dims"].min()) if len(ok) else None


def _write(path: Path, table: pd.DataFrame) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    table.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def _concat(run_dirs: list[Path], name: str) -> pd.DataFrame:
    parts = [pd.read_parquet(d / name) for d in run_dirs if (d / name).is_file()]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def _run_rows(fits: list[dict[str, Any]]) -> pd.DataFrame:
    rows = []
    for f in fits:
        for method, ev in f["eval"].items():
            name = {"psgd": "p_sgd", "embedded": "embedded"}.get(f["kind"], method) if method == "sgd" else method
            rows.append({"run": f["run"], "base_run": f["base_run"], "kind": f["kind"], "model": f["model_key"],
                         "arch": f["arch"], "param": f["param"], "width": f["width"], "seed": f["seed"],
                         "n_params": f["n_params"], "method": name,
                         "fraction": f.get("max_fraction"), "embedded_fraction": f.get("embedded_fraction"), **ev})  # fmt: skip
    return pd.DataFrame(rows)


def _accuracy(runs: pd.DataFrame, model: str) -> dict[str, Any]:
    sub = runs[runs["model"] == model]
    acc = {m: ci95(sub.loc[sub["method"] == m, "test_acc"].tolist()) for m in ACCURACY_METHODS}
    wide = sub[sub["method"].isin(ACCURACY_METHODS)].pivot_table(index="seed", columns="method", values="test_acc")
    paired = {}
    for m in ACCURACY_METHODS[1:]:
        if m in wide and "sgd" in wide:
            diff = (wide[m] - wide["sgd"]).dropna()
            paired[m] = ci95(diff.tolist())
    emb = sub[sub["method"] == "embedded"].groupby("fraction")
    embedded = {f"{f:g}": ci95(g["test_acc"].tolist()) for f, g in emb}
    return {"test_accuracy": acc, "minus_sgd": paired, "embedded": embedded}


def aggregate_cmd(run_dirs: list[Path], out_dir: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    """Aggregate the cmd study's runs (each with ``cmdfit.json``) into tables; return the summary.

    Tables: ``runs`` (one row per run and evaluated weights: val/test loss and accuracy),
    ``errors`` (relative reconstruction error per method and dimension), ``examples``,
    ``corr``, ``online`` (state and update time of online CMD), ``modes`` (width sweep).
    ``heldout_error`` in the summary: fitted on the first half, measured on the second.

    Args:
        run_dirs: Folders of every run of the study.
        out_dir: ``results/analysis/cmd``.
        cfg: The resolved ``cmd`` section.

    Raises:
        FileNotFoundError: If a run has not been fitted (``traindyn cmdfit``).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    missing = [str(d) for d in run_dirs if not (d / "cmdfit.json").is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} runs have no cmdfit.json, e.g. {missing[0]}: run traindyn cmdfit")
    fits = [json.loads((d / "cmdfit.json").read_text()) for d in run_dirs]
    info = pd.DataFrame([{k: f[k] for k in ("run", "kind", "model_key", "param", "width", "seed", "n_params")}
                         for f in fits]).rename(columns={"model_key": "model"})  # fmt: skip
    runs = _run_rows(fits)
    errors = _concat(run_dirs, "cmd_errors.parquet")
    errors = errors.merge(info, on="run") if len(errors) else errors
    examples, corr = _concat(run_dirs, "cmd_examples.parquet"), _concat(run_dirs, "cmd_corr.parquet")
    online = pd.DataFrame([{"run": f["run"], "model": f["model_key"], "seed": f["seed"], "n_params": f["n_params"],
                            "snapshots": f["snapshots"], "posthoc_fit_seconds": f["posthoc_fit_seconds"],
                            "max_abs_diff": f["online_vs_posthoc_max_abs_diff"], **f["online"]}
                           for f in fits if "online" in f])  # fmt: skip
    threshold, fixed = cfg["error_threshold"], cfg["modes"]
    modes_rows = []
    fitted = errors[errors["window"] == "fit"] if len(errors) else errors
    for run, e in (fitted[fitted["kind"] == "sweep"].groupby("run") if len(errors) else []):
        first = e.iloc[0]
        at = e[(e["method"] == "cmd") & (e["dims"] == fixed)]["error"]
        pca_at = e[(e["method"] == "pca") & (e["dims"] == fixed)]["error"]
        modes_rows.append({"run": run, "param": first["param"], "width": int(first["width"]), "seed": int(first["seed"]),
                           "modes_needed": modes_needed(e, threshold), "error_at_fixed_modes": float(at.iloc[0]),
                           "pca_error_at_fixed_modes": float(pca_at.iloc[0])})  # fmt: skip
    modes = pd.DataFrame(modes_rows)
    for name, table in (("runs", runs), ("errors", errors), ("examples", examples), ("corr", corr),
                        ("online", online), ("modes", modes)):  # fmt: skip
        _write(out_dir / f"{name}.parquet", table)
    return _summary(runs, errors, online, modes, cfg)


def _summary(runs: pd.DataFrame, errors: pd.DataFrame, online: pd.DataFrame, modes: pd.DataFrame,
             cfg: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    enabled = [k for k, m in cfg["models"].items() if m["enabled"]]
    primary = cfg["primary"] if cfg["primary"] in enabled else (enabled[0] if enabled else None)
    sgd = errors[errors["kind"] == "sgd"] if len(errors) else errors
    main = sgd[sgd["window"] == "fit"] if len(sgd) else sgd
    by_model = {}
    for model in enabled:
        by_model[model] = {
            key: {m: {str(int(d)): float(g["error"].mean()) for d, g in e[e["method"] == m].groupby("dims")}
                  for m in ("cmd", "pca", "dmd")}
            for key, e in (("reconstruction_error", main[main["model"] == model]),
                           ("heldout_error", sgd[(sgd["model"] == model) & (sgd["window"] == "heldout")]))
        }  # fmt: skip
        by_model[model].update(_accuracy(runs, model))
    pca_never_worse = None
    if len(main):
        wide = main.pivot_table(index=["run", "dims"], columns="method", values="error")
        pca_never_worse = bool((wide["pca"] <= wide["cmd"] + 1e-12).all())
    p = by_model.get(primary, {"reconstruction_error": {}, "heldout_error": {}, "test_accuracy": {}, "minus_sgd": {},
                               "embedded": {}})  # fmt: skip
    modes_needed_table: dict[str, dict[str, Any]] = {}
    error_fixed: dict[str, dict[str, Any]] = {}
    if len(modes):
        for (param, width), g in modes.groupby(["param", "width"]):
            need = [v for v in g["modes_needed"] if v is not None and np.isfinite(v)]
            modes_needed_table.setdefault(param, {})[str(width)] = float(np.mean(need)) if len(need) == len(g) else None
            error_fixed.setdefault(param, {})[str(width)] = ci95(g["error_at_fixed_modes"].tolist())
    return {
        "primary_model": primary,
        "reconstruction_error": p["reconstruction_error"],
        "heldout_error": p["heldout_error"],
        "test_accuracy": {m: {k: v for k, v in s.items()} for m, s in p["test_accuracy"].items()},
        "cmd_minus_sgd_accuracy": p["minus_sgd"].get("cmd_posthoc", ci95([])),
        "cmd_online_minus_sgd_accuracy": p["minus_sgd"].get("cmd_online", ci95([])),
        "paired_minus_sgd_accuracy": p["minus_sgd"],
        "online_vs_posthoc_max_abs_diff": float(online["max_abs_diff"].max()) if len(online) else None,
        "embedded": {f: s["mean"] for f, s in p["embedded"].items()},
        "embedded_ci": p["embedded"],
        "modes_needed": modes_needed_table,
        "error_at_fixed_modes": error_fixed,
        "error_threshold": cfg["error_threshold"],
        "fixed_modes": cfg["modes"],
        "pca_never_worse_than_cmd": pca_never_worse,
        "online_state_floats_over_trajectory": (float((online["state_floats"] / online["trajectory_floats"]).mean())
                                                if len(online) else None),  # fmt: skip
        "online_update_seconds_per_snapshot": float(online["update_seconds_per_snapshot"].mean()) if len(online) else None,
        "posthoc_fit_seconds": float(online["posthoc_fit_seconds"].mean()) if len(online) else None,
        "by_model": by_model,
        "runs": int(runs["run"].nunique()) if len(runs) else 0,
    }
