# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Heads' modular NTK: heatmaps, trajectories with MAT's gate, and CV across heads vs width
# Reads only the mat study's tables (lambda.parquet, cv.parquet, summary.json). Every number
# in a title is computed from those tables.

# %% tags=["parameters"]
analysis_dir = "results/analysis/mat"
figures_dir = "results/figures"
formats = ["png"]
dpi = 150

# %%
import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from traindyn.plotting import save_figure, setup_style

src, out = Path(analysis_dir), setup_style(figures_dir)
lam = pd.read_parquet(src / "lambda.parquet")
cv = pd.read_parquet(src / "cv.parquet")
summary = json.loads((src / "summary.json").read_text())
NAMES = {"sp": "SP", "mup": "μP"}


def save(fig, name):
    save_figure(fig, out, name, formats, dpi)


def ci_text(entry, fmt="{:.2f}"):
    if entry is None or entry.get("mean") is None:
        return "n/a"
    ci = f" ± {fmt.format(entry['ci95'])}" if entry.get("ci95") is not None else ""
    return fmt.format(entry["mean"]) + ci


# %% [markdown]
# ## Layer x head heatmaps of lambda_max and effective rank (full runs, mean over seeds)

# %%
main = lam[lam["variant"] != "cv"]
for model in sorted(main["model"].unique()):
    full = main[(main["model"] == model) & (main["variant"] == "full")]
    steps = sorted(full["step"].unique())
    shown = sorted({steps[0], steps[len(steps) // 2], steps[-1]})
    fig, axes = plt.subplots(2, len(shown), figsize=(3.3 * len(shown), 6.4), squeeze=False)
    fig.subplots_adjust(hspace=0.45)
    for row, (stat, label) in enumerate((("lambda_max", "λ_max (class-trace)"), ("erank", "effective rank"))):
        grid_all = full.groupby(["step", "layer", "head"])[stat].mean()
        vmin, vmax = float(grid_all.min()), float(grid_all.max())
        for ax, step in zip(axes[row], shown, strict=True):
            grid = grid_all.loc[step].unstack("head")
            im = ax.imshow(grid.to_numpy(), cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto")
            ax.grid(False)
            ax.set_xticks(range(grid.shape[1]))
            ax.set_yticks(range(grid.shape[0]))
            ax.set_xlabel("head")
            ax.set_ylabel("layer")
            ax.set_title(f"{label}, step {step}", fontsize=9)
        fig.colorbar(im, ax=list(axes[row]), shrink=0.8)
    cv_entry = summary["lambda_max_cv_across_heads"].get(model)
    fig.suptitle(f"{model.upper()}: heads' λ_max and effective rank (full training); "
                 f"CV of λ_max across heads {ci_text(cv_entry)}", fontsize=10)
    save(fig, f"mat_heads_{model}")

# %% [markdown]
# ## Per-head lambda_max trajectories, MAT's threshold and each head's on/off state (seed 0)

# %%
for model in sorted(main["model"].unique()):
    runs = main[(main["model"] == model) & (main["variant"] == "mat")]
    seed = runs["seed"].min()
    run = runs[runs["seed"] == seed]
    layers = sorted(run["layer"].unique())
    fig, axes = plt.subplots(1, len(layers), figsize=(3.2 * len(layers), 3.2), squeeze=False, sharey=True)
    share_off = 1 - run.groupby("step")["active"].mean()
    for ax, layer in zip(axes[0], layers, strict=True):
        cell = run[run["layer"] == layer]
        for head, h in cell.groupby("head"):
            (line,) = ax.plot(h["step"], h["smoothed"], "-", lw=1, label=f"head {head}")
            on, off = h[h["active"]], h[~h["active"]]
            ax.plot(on["step"], on["smoothed"], "o", color=line.get_color(), ms=4)
            ax.plot(off["step"], off["smoothed"], "o", mfc="white", color=line.get_color(), ms=4)
        thr = cell.groupby("step")["threshold"].first()
        ax.plot(thr.index, thr.to_numpy(), "k--", lw=1, label="threshold")
        ax.set_yscale("log")
        ax.set_title(f"layer {layer}", fontsize=9)
        ax.set_xlabel("step")
    axes[0][0].set_ylabel("EMA λ_max (filled: trains, open: skipped)")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(f"{model.upper()} MAT (seed {seed}): heads skipped at the last re-selection "
                 f"{100 * float(share_off.iloc[-1]):.0f}%, mean over re-selections {100 * float(share_off.mean()):.0f}%",
                 fontsize=10)  # fmt: skip
    save(fig, f"mat_trajectories_{model}")

# %% [markdown]
# ## Beyond the paper: CV of lambda_max across heads vs width, SP vs muP

# %%
cvr = cv[cv["variant"] == "cv"]
if len(cvr):
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.4))
    per_run = cvr.groupby(["param", "width", "run"])["cv"].mean().reset_index()
    parts = []
    for param, cell in per_run.groupby("param"):
        stats = cell.groupby("width")["cv"].agg(["mean", "std", "count"]).reset_index()
        half = 1.96 * stats["std"].fillna(0) / np.sqrt(stats["count"])
        ax1.errorbar(stats["width"], stats["mean"], yerr=half, marker="o", capsize=3, label=NAMES.get(param, param))
        parts.append(f"{NAMES.get(param, param)} " + ", ".join(
            f"w{int(w)}: {m:.2f}" for w, m in zip(stats["width"], stats["mean"], strict=True)))
    ax1.set_xscale("log", base=2)
    ax1.set_xlabel("width d_model")
    ax1.set_ylabel("CV of λ_max across heads (mean over steps)")
    ax1.legend()
    for (param, width), cell in cvr.groupby(["param", "width"]):
        curve = cell.groupby("step")["cv"].mean()
        ax2.plot(curve.index, curve.to_numpy(), "-o" if param == "mup" else "--s", ms=3,
                 label=f"{NAMES.get(param, param)} w{int(width)}")  # fmt: skip
    ax2.set_xlabel("step")
    ax2.set_ylabel("CV across heads")
    ax2.legend(fontsize=7)
    fig.suptitle("GPT heads' λ_max spread: " + "; ".join(parts), fontsize=9)
    save(fig, "mat_cv_width")
