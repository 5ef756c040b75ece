# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Learning-rate transfer across width and depth, and the coordinate check
# Reads only the scaling study's tables (runs.parquet, lr_transfer.parquet, summary.json,
# coord_check.parquet). Captions quote numbers computed from those tables.

# %% tags=["parameters"]
analysis_dir = "results/analysis/scaling"
figures_dir = "results/figures"
formats = ["png"]
dpi = 150

# %%
import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from traindyn.plotting import save_figure, setup_style
from traindyn.report.scaling import transfer_verdict

src, out = Path(analysis_dir), setup_style(figures_dir)
runs = pd.read_parquet(src / "runs.parquet")
transfer = pd.read_parquet(src / "lr_transfer.parquet")
summary = json.loads((src / "summary.json").read_text())
NAMES = {"sp": "SP", "ntk": "NTK", "mup": "μP"}


def save(fig, name):
    save_figure(fig, out, name, formats, dpi)


VERDICT = {"transfers": "transfers (within 1 octave)", "drifts": "drifts (< 1 octave, interval excludes 0)",
           "moves": "does not transfer (> 1 octave)", "unclear": "not established (interval past 1 octave)"}


def shift_text(entry):
    if entry["mean"] is None:
        return "shift n/a"
    ci = f" ± {entry['ci95']:.2f}" if entry["ci95"] is not None else ""
    text = f"shift {entry['mean']:+.2f}{ci} oct"
    edge = entry.get("optimum_at_edge_share")
    verdict = transfer_verdict(entry)
    if verdict == "edge":  # the fitted optimum is mostly the stability edge
        text += f"\noptimum at the edge in {edge:.0%}: an edge shift"
    elif verdict in VERDICT:
        text += f"\n{VERDICT[verdict]}, edge share {edge:.0%}"
    return text


def lr_panels(sub, panel_key, panel_values, panel_title, size_key, shifts, name, suptitle):
    fits = transfer[transfer["sweep"] == sub["sweep"].iloc[0]]  # the MLP and GPT sweeps share widths
    fig, axes = plt.subplots(1, len(panel_values), figsize=(4.2 * len(panel_values), 3.4), squeeze=False)
    sizes = sorted(sub[size_key].unique())
    palette = dict(zip(sizes, sns.color_palette("viridis", len(sizes)), strict=True))
    cap = np.nanmax(sub["final_train_loss"].to_numpy(dtype=float)) * 1.15
    for ax, value in zip(axes[0], panel_values, strict=True):
        cell = sub[sub[panel_key] == value]
        stable = cell[~cell["diverged"]]
        stats = stable.groupby([size_key, "lr"])["final_train_loss"].agg(["mean", "std", "count"]).reset_index()
        for size, s in stats.groupby(size_key):
            ax.plot(s["lr"], s["mean"], "o-", color=palette[size], label=f"{size_key[0]}={size}", ms=3)
            half = 1.96 * s["std"].fillna(0) / np.sqrt(s["count"])
            ax.fill_between(s["lr"], s["mean"] - half, s["mean"] + half, color=palette[size], alpha=0.2)
            best = fits[(fits[panel_key] == value) & (fits[size_key] == size)]["best_lr"].median()
            ax.axvline(best, color=palette[size], ls=":", lw=1)
        div = cell[cell["diverged"]].groupby([size_key, "lr"]).size().reset_index()
        for _, d in div.iterrows():
            ax.plot(d["lr"], cap, "x", color=palette[d[size_key]], ms=6)
        ax.set_xscale("log")
        ax.set(xlabel="base learning rate η0", ylabel="final training loss",
               title=f"{panel_title(value)}: {shift_text(shifts[str(value) if not isinstance(value, float) else f'{value:g}'])}")
        ax.set_ylim(top=cap * 1.05)
    axes[0][-1].legend(title=size_key, fontsize=7)
    fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout()
    save(fig, name)


# %% [markdown]
# ## Width: SP | NTK | μP

# %%
width_runs = runs[runs["sweep"] == "width"]
if len(width_runs):
    params = [p for p in ["sp", "ntk", "mup"] if p in set(width_runs["param"])]
    lr_panels(width_runs, "param", params, NAMES.get, "width", summary["lr_shift_octaves"],
              "scaling_lr_width",
              "Final training loss vs η0 per width (mean ± 95% CI over seeds; × = diverged; "
              "dotted = fitted optimum). Shift = log2(best η0 at widest / narrowest).")

# %% [markdown]
# ## GPT char-LM with Adam: SP | μP (| NTK)

# %%
gpt_runs = runs[runs["sweep"] == "gpt"]
if len(gpt_runs):
    params = [p for p in ["sp", "ntk", "mup"] if p in set(gpt_runs["param"])]
    lr_panels(gpt_runs, "param", params, NAMES.get, "width", summary["lr_shift_octaves_gpt"],
              "scaling_lr_gpt",
              "GPT char-LM (Shakespeare), Adam with μP's Adam rule: final training loss (nats/char) vs η0 "
              "per width (× = diverged). Shift = log2(best η0 at widest / narrowest).")

# %% [markdown]
# ## Depth: depth-μP with α = 0, 1/2, 1

# %%
depth_runs = runs[runs["sweep"] == "depth"]
if len(depth_runs):
    alphas = sorted(depth_runs["alpha"].unique())
    lr_panels(depth_runs, "alpha", alphas, lambda a: f"α = {a:g}", "depth",
              summary["depth_lr_shift_octaves"], "scaling_lr_depth",
              "Residual MLP, branch scale L^-α: final training loss vs η0 per depth L "
              "(× = diverged). Shift = log2(best η0 at deepest / shallowest).")

# %% [markdown]
# ## Depth: the GPT with Adam, depth-μP (α = 1/2) against the standard GPT (α = 0)

# %%
gpt_depth_runs = runs[runs["sweep"] == "gpt-depth"]
if len(gpt_depth_runs):
    alphas = sorted(gpt_depth_runs["alpha"].unique())
    lr_panels(gpt_depth_runs, "alpha", alphas,
              lambda a: "standard GPT (α = 0)" if a == 0 else f"depth-μP α = {a:g}", "depth",
              summary["depth_lr_shift_octaves_gpt"], "scaling_lr_depth_gpt",
              f"GPT char-LM (Shakespeare, width {int(gpt_depth_runs['width'].iloc[0])}, μP), Adam: final training "
              "loss vs η0 per depth L (× = diverged). α = 1/2: branches × L^-1/2, blocks' LR × L^-1/2; "
              "α = 0: neither. Shift = log2(best η0 at deepest / shallowest).")

# %% [markdown]
# ## Largest stable LR next to the fitted optimum

# %%
rows = []
for key, group in (("lr_shift_octaves", "param"), ("lr_shift_octaves_gpt", "param"),
                   ("depth_lr_shift_octaves", "alpha"), ("depth_lr_shift_octaves_gpt", "alpha")):
    for g, entry in summary.get(key, {}).items():
        for size, best in entry["best_lr"].items():
            rows.append({"sweep": key, group: g, "size": size, "fitted best η0": best,
                         "largest stable η0": entry["largest_stable_lr"][size]})
pd.DataFrame(rows)

# %% [markdown]
# ## Coordinate check

# %%
cc = pd.read_parquet(src / "coord_check.parquet")
last = cc[(cc["statistic"] == "delta_act_l1") & (cc["step"] == cc["step"].max())]
last = last.groupby(["param", "module", "width"])["value"].mean().reset_index()
params = [p for p in ["sp", "ntk", "mup"] if p in set(last["param"])]
fig, axes = plt.subplots(1, len(params), figsize=(4.2 * len(params), 3.4), sharey=True, squeeze=False)
for ax, p in zip(axes[0], params, strict=True):
    sns.lineplot(data=last[last["param"] == p], x="width", y="value", hue="module", marker="o", ax=ax)
    ax.set(xscale="log", yscale="log", title=NAMES[p], xlabel="width N",
           ylabel=f"mean |x_t − x_0| after {int(cc['step'].max())} steps")
    ax.legend(fontsize=6)
fig.suptitle("Coordinate check: change of each layer's output after a few SGD steps "
             "(flat in width under μP; grows under SP; vanishes under NTK)", fontsize=9)
fig.tight_layout()
save(fig, "scaling_coord_check")
