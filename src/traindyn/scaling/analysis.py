"""Aggregation of the scaling study: per-run table, LR-transfer fits, summary.json."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["aggregate_scaling", "ci95", "fit_optimum"]


def ci95(values: list[float]) -> dict[str, float | int | None]:
    """Mean and 95% t-interval half-width over seeds (None where undefined)."""
    from scipy import stats

    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if len(v) == 0:
        return {"mean": None, "ci95": None, "n": 0}
    if len(v) == 1:
        return {"mean": float(v[0]), "ci95": None, "n": 1}
    half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return {"mean": float(v.mean()), "ci95": float(half), "n": int(len(v))}


def fit_optimum(lrs: list[float], losses: list[float]) -> dict[str, Any]:
    """Best LR from a quadratic fit in log2(LR) around the grid minimum.

    Diverged runs (NaN/inf loss) are excluded. The fit uses the minimum and its two
    neighbours (the three lowest-LR or highest-LR points when the minimum is at an edge);
    the vertex is kept inside the fitted points, so an edge minimum is reported as such.

    Returns:
        ``best_lr`` (fitted), ``grid_best_lr``, ``at_edge`` (the minimum is at the largest
        or smallest stable LR) and ``largest_stable_lr``.
    """
    pts = sorted((lr, loss) for lr, loss in zip(lrs, losses, strict=True)
                 if loss is not None and math.isfinite(loss))  # fmt: skip
    if not pts:
        return {"best_lr": None, "grid_best_lr": None, "at_edge": None, "largest_stable_lr": None}
    x = np.log2([p[0] for p in pts])
    y = np.asarray([p[1] for p in pts])
    i = int(np.argmin(y))
    out = {"grid_best_lr": float(2 ** x[i]), "at_edge": i in (0, len(x) - 1),
           "largest_stable_lr": float(2 ** x[-1])}  # fmt: skip
    if len(x) < 3:
        return {**out, "best_lr": out["grid_best_lr"]}
    lo = min(max(i - 1, 0), len(x) - 3)
    xs, ys = x[lo : lo + 3], y[lo : lo + 3]
    a, b, _ = np.polyfit(xs, ys, 2)
    vertex = -b / (2 * a) if a > 0 else x[i]
    return {**out, "best_lr": float(2 ** float(np.clip(vertex, xs[0], xs[-1])))}


def _run_table(run_dirs: list[Path]) -> pd.DataFrame:
    rows = []
    for d in run_dirs:
        final = json.loads((d / "final.json").read_text())
        spec = final["spec"]
        rows.append({
            "run": final["run"], "sweep": spec["extra"]["sweep"], "param": spec["param"],
            # The sweep's own alpha where it has one (the GPT's alpha 0 is the standard GPT,
            # whose depth_alpha is None), else the spec's.
            "alpha": spec["extra"].get("alpha", spec["depth_alpha"]), "width": spec["model"]["width"],
            "depth": spec["model"]["depth"], "lr": spec["lr"], "seed": spec["seed"],
            "loss_kind": spec["loss"], "steps": spec["steps"], "diverged": final["diverged"],
            "diverged_at": final["diverged_at"],
            "final_train_loss": final.get("final_train_loss"),
            "final_val_loss": final.get("final_val_loss"),
            "final_val_acc": final.get("final_val_acc"),
        })  # fmt: skip
    return pd.DataFrame(rows)


def _transfer(runs: pd.DataFrame, sweep: str, group: str, axis: str) -> pd.DataFrame:
    rows = []
    sub = runs[runs["sweep"] == sweep]
    for (g, size, seed), cell in sub.groupby([group, axis, "seed"], dropna=False):
        losses = [None if d else v for d, v in zip(cell["diverged"], cell["final_train_loss"], strict=True)]
        rows.append({"sweep": sweep, group: g, axis: size, "seed": seed,
                     **fit_optimum(list(cell["lr"]), losses)})  # fmt: skip
    return pd.DataFrame(rows)


def _shifts(transfer: pd.DataFrame, group: str, axis: str, runs: pd.DataFrame | None = None) -> dict[str, Any]:
    out = {}
    for g, cell in transfer.groupby(group):
        small, large = cell[axis].min(), cell[axis].max()
        per_seed = []
        for _, s in cell.groupby("seed"):
            a = s[s[axis] == small]["best_lr"].iloc[0]
            b = s[s[axis] == large]["best_lr"].iloc[0]
            per_seed.append(math.log2(b / a) if a and b else None)
        stable = cell.groupby(axis)["largest_stable_lr"].min()
        best = cell.groupby(axis)["best_lr"].median()
        out[_key(g)] = {**ci95(per_seed), "per_seed": per_seed, f"{axis}_small": int(small),
                        f"{axis}_large": int(large),
                        "best_lr": {str(int(k)): float(v) for k, v in best.items()},
                        "largest_stable_lr": {str(int(k)): float(v) for k, v in stable.items()},
                        "optimum_at_edge_share": float(cell["at_edge"].mean())}  # fmt: skip
        if runs is not None:
            out[_key(g)]["mean_curve"] = bootstrap_shift(runs[runs[group] == g], axis)
    return out


def _loss_table(cell: pd.DataFrame, axis: str) -> pd.DataFrame:
    # (size, lr) x seed final train loss, +inf where the run diverged
    loss = cell["final_train_loss"].where(~cell["diverged"].astype(bool), np.inf)
    return cell.assign(loss=loss).pivot_table(index=[axis, "lr"], columns="seed", values="loss")


def _table_shift(table: pd.DataFrame, axis: str, seeds: list) -> float | None:
    mean = table[list(seeds)].mean(axis=1)  # inf where any averaged seed diverged
    sizes = table.index.get_level_values(axis)
    best = []
    for size in (sizes.min(), sizes.max()):
        curve = mean.xs(size, level=axis)
        best.append(fit_optimum(list(curve.index), [float(v) if math.isfinite(v) else None for v in curve])["best_lr"])
    return math.log2(best[1] / best[0]) if best[0] and best[1] else None


def mean_curve_shift(cell: pd.DataFrame, axis: str, seeds: list | None = None) -> float | None:
    """LR shift (octaves, largest over smallest ``axis``) fitted to the seed-mean loss curve.

    Args:
        cell: Runs of one group (parameterization or alpha) with columns ``axis``, ``lr``,
            ``seed``, ``diverged`` and ``final_train_loss``.
        axis: ``"width"`` or ``"depth"``.
        seeds: The seeds to average (repeats allowed: a bootstrap resample); default all.

    Returns:
        log2(best LR at the largest size / at the smallest), where a grid point counts as
        diverged when any of the averaged seeds diverged there; None if either fit fails.
    """
    table = _loss_table(cell, axis)
    return _table_shift(table, axis, list(table.columns) if seeds is None else seeds)


def bootstrap_shift(cell: pd.DataFrame, axis: str, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """The mean-curve LR shift with a percentile bootstrap over seeds.

    Seeds are resampled with replacement ``n_boot`` times and the shift refitted to each
    resample's mean curve: this interval reflects how the curve's optimum moves with the
    seeds, where the per-seed t-interval reflects the spread of each seed's own optimum.

    Returns:
        ``shift`` (all seeds), ``lo`` / ``hi`` (2.5 / 97.5 percentiles), ``ci95``
        (half-width of that interval) and ``n_seeds``.
    """
    table = _loss_table(cell, axis)
    seeds = list(table.columns)
    shift = _table_shift(table, axis, seeds)
    rng = np.random.default_rng(seed)
    cache: dict[tuple, float | None] = {}  # 5 seeds have only 126 distinct resamples
    boots = []
    for _ in range(n_boot):
        draw = tuple(sorted(rng.choice(seeds, len(seeds))))
        if draw not in cache:
            cache[draw] = _table_shift(table, axis, list(draw))
        boots.append(cache[draw])
    boots = np.asarray([b for b in boots if b is not None], dtype=float)
    if shift is None or len(seeds) < 2 or len(boots) == 0:
        return {"shift": shift, "lo": None, "hi": None, "ci95": None, "n_seeds": len(seeds)}
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return {"shift": float(shift), "lo": float(lo), "hi": float(hi), "ci95": float((hi - lo) / 2),
            "n_seeds": len(seeds)}  # fmt: skip


def _key(g) -> str:
    if isinstance(g, float):
        return f"{g:g}"
    return str(g)


def _spectra_table(run_dirs: list[Path], runs: pd.DataFrame) -> pd.DataFrame:
    frames = [pd.read_parquet(d / "spectra.parquet") for d in run_dirs if (d / "spectra.parquet").is_file()]
    if not frames:
        return pd.DataFrame()
    keys = runs[["run", "sweep", "param", "alpha", "width", "depth", "lr", "seed", "loss_kind"]]
    keys = keys.rename(columns={"lr": "eta0"})  # the spectra's own `lr` is the current eta
    return pd.concat(frames, ignore_index=True).merge(keys, on="run")


def _sharpness_stats(spectra: pd.DataFrame, steps: int, measure: str = "hessian",
                     sweeps: tuple[str, ...] = ("width", "sharpness-mse"), prefix: str = "sharpness",
                     suffix: str = "", group: str = "param", axis: str = "width") -> dict[str, Any]:  # fmt: skip
    """Spread and ratio of sharpness across widths (or depths), per loss and parameterization (or alpha).

    S(t) = std over widths of log sharpness (base-LR units), averaged over t > 5% of
    training; the ratio is the time-mean sharpness at the smallest width over the
    largest. Both as mean and 95% CI over seeds.

    Args:
        spectra: The spectra table.
        steps: Training steps of the runs.
        measure: ``hessian`` or ``preconditioned`` (Adam's P^-1/2 H P^-1/2).
        sweeps: The sweeps whose runs are compared.
        prefix: Key prefix: ``{prefix}_spread{suffix}`` and ``{prefix}_ratio_small_over_large{suffix}``.
        suffix: Key suffix (``_gpt`` for the GPT sweep, ``_depth_gpt`` for its depth sweep).
        group: The column the entries are keyed by (``param``, or ``alpha`` for a depth sweep).
        axis: The column the spread is taken across (``width`` or ``depth``).
    """
    out: dict[str, Any] = {}
    top = spectra[(spectra["measure"] == measure) & (spectra["rank"] == 0)
                  & spectra["sweep"].isin(list(sweeps))]  # fmt: skip
    top = top[top["step"] > 0.05 * steps]
    for (loss, g), cell in top.groupby(["loss_kind", group]):
        spreads, ratios = [], []
        for _, s in cell.groupby("seed"):
            logs = np.log(s["sharpness_base_lr_units"].where(s["sharpness_base_lr_units"] > 0))
            per_step = s.assign(log=logs).groupby("step")["log"].std(ddof=0)
            spreads.append(float(per_step.mean()))
            by_size = s.groupby(axis)["sharpness_base_lr_units"].mean()
            ratios.append(float(by_size.loc[by_size.index.min()] / by_size.loc[by_size.index.max()]))
        key = _key(g) if loss == "xent" else f"{_key(g)}_{loss}"
        out.setdefault(f"{prefix}_spread{suffix}", {})[key] = ci95(spreads)
        out.setdefault(f"{prefix}_ratio_small_over_large{suffix}", {})[key] = ci95(ratios)
    return out


def aggregate_scaling(run_dirs: list[Path], out_dir: Path) -> dict[str, Any]:
    """Write ``runs``, ``curves``, ``lr_transfer`` and ``spectra`` parquet tables; return the summary.

    Args:
        run_dirs: Folders of finished runs (each with final.json and metrics.parquet).
        out_dir: ``results/analysis/scaling``.

    Returns:
        The summary (``traindyn.studies.aggregate`` writes it as ``summary.json`` and ``summary.md``).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = _run_table(run_dirs)
    curves = pd.concat([pd.read_parquet(d / "metrics.parquet") for d in run_dirs], ignore_index=True)
    transfer = pd.concat([_transfer(runs, "width", "param", "width"), _transfer(runs, "gpt", "param", "width"),
                          _transfer(runs, "depth", "alpha", "depth"), _transfer(runs, "gpt-depth", "alpha", "depth")],
                         ignore_index=True)  # fmt: skip
    summary: dict[str, Any] = {"n_runs": int(len(runs)), "n_diverged": int(runs["diverged"].sum())}
    width = transfer[transfer["sweep"] == "width"]  # the MSE spectra runs are no LR sweep
    if len(width):
        summary["lr_shift_octaves"] = _shifts(width, "param", "width", runs[runs["sweep"] == "width"])
    gpt = transfer[transfer["sweep"] == "gpt"]
    if len(gpt):
        summary["lr_shift_octaves_gpt"] = _shifts(gpt, "param", "width", runs[runs["sweep"] == "gpt"])
    depth = transfer[transfer["sweep"] == "depth"]
    if len(depth):
        summary["depth_lr_shift_octaves"] = _shifts(depth, "alpha", "depth", runs[runs["sweep"] == "depth"])
    gpt_depth = transfer[transfer["sweep"] == "gpt-depth"]
    if len(gpt_depth):
        summary["depth_lr_shift_octaves_gpt"] = _shifts(gpt_depth, "alpha", "depth",
                                                        runs[runs["sweep"] == "gpt-depth"])  # fmt: skip
    spectra = _spectra_table(run_dirs, runs)
    if len(spectra):
        mlp = runs[~runs["sweep"].isin(["gpt", "gpt-depth"])]
        if len(mlp):
            summary.update(_sharpness_stats(spectra, int(mlp["steps"].iloc[0])))
        gpt_runs = spectra[spectra["sweep"] == "gpt"]
        if len(gpt_runs):
            gpt_steps = int(runs.loc[runs["run"] == gpt_runs["run"].iloc[0], "steps"].iloc[0])
            summary.update(_sharpness_stats(spectra, gpt_steps, "hessian", ("gpt",), suffix="_gpt"))
            summary.update(_sharpness_stats(spectra, gpt_steps, "preconditioned", ("gpt",),
                                            prefix="preconditioned_sharpness", suffix="_gpt"))  # fmt: skip
        gpt_depth_runs = spectra[spectra["sweep"] == "gpt-depth"]
        if len(gpt_depth_runs):
            steps = int(runs.loc[runs["run"] == gpt_depth_runs["run"].iloc[0], "steps"].iloc[0])
            for measure, prefix in (("hessian", "sharpness"), ("preconditioned", "preconditioned_sharpness")):
                summary.update(_sharpness_stats(spectra, steps, measure, ("gpt-depth",), prefix=prefix,
                                                suffix="_depth_gpt", group="alpha", axis="depth"))  # fmt: skip
    for name, table in (("runs", runs), ("curves", curves), ("lr_transfer", transfer),
                        ("spectra", spectra)):  # fmt: skip
        tmp = out_dir / f".{name}.parquet.tmp"
        table.to_parquet(tmp, index=False)
        tmp.replace(out_dir / f"{name}.parquet")
    return summary
