# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Correlation Mode Decomposition of training trajectories
# Reads only the cmd study's tables (results/analysis/cmd/*.parquet, summary.json). Every
# number in a title is computed from those tables.

# %% tags=["parameters"]
analysis_dir = "results/analysis/cmd"
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

src, out = Path(analysis_dir), setup_style(figures_dir)
runs = pd.read_parquet(src / "runs.parquet")
errors = pd.read_parquet(src / "errors.parquet")
examples = pd.read_parquet(src / "examples.parquet")
corr = pd.read_parquet(src / "corr.parquet")
online = pd.read_parquet(src / "online.parquet")
modes = pd.read_parquet(src / "modes.parquet")
summary = json.loads((src / "summary.json").read_text())
MODELS = [m for m in ("mlp", "convnet", "gpt") if m in set(runs["model"])]
METHODS = {"sgd": "SGD", "ema": "EMA", "swa": "SWA", "cmd_posthoc": "CMD post-hoc", "cmd_online": "CMD online",
           "p_sgd": "P-SGD"}
COLORS = {"cmd": "C0", "pca": "C1", "dmd": "C2", "sgd": "k"}
PARAMS = {"sp": "SP", "ntk": "NTK", "mup": "μP"}


def save(fig, name):
    save_figure(fig, out, name, formats, dpi)


def plain_log(ax, axis, ticks=None):
    """Log axis with plain tick labels (and no overlapping minor labels)."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    target = ax.xaxis if axis == "x" else ax.yaxis
    if ticks is not None:
        (ax.set_xticks if axis == "x" else ax.set_yticks)(list(ticks))
    target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    target.set_minor_formatter(NullFormatter())


def ci_text(entry, scale=100, unit=" pp"):
    if entry is None or entry.get("mean") is None:
        return "n/a"
    ci = f" ± {entry['ci95'] * scale:.2f}" if entry.get("ci95") is not None else ""
    return f"{entry['mean'] * scale:+.2f}{ci}{unit}"


# %% [markdown]
# ## Sorted |corr| of the sampled parameters: blocks = modes

# %%
first = corr.groupby("run").head(1)["run"].tolist()
shown = [r for m in MODELS for r in first if r.startswith(f"{m}-")][: len(MODELS)]
fig, axes = plt.subplots(1, len(shown), figsize=(3.6 * len(shown), 3.3), squeeze=False)
for ax, run in zip(axes[0], shown, strict=True):
    c = corr[corr["run"] == run]
    side = int(c["i"].max()) + 1
    mat = np.zeros((side, side))
    mat[c["i"], c["j"]] = c["corr"]
    im = ax.imshow(mat, cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    cuts = np.flatnonzero(np.diff(c[c["j"] == 0].sort_values("i")["mode_i"].to_numpy())) + 0.5
    for x in cuts:
        ax.axhline(x, color="w", lw=0.4)
        ax.axvline(x, color="w", lw=0.4)
    ax.set_title(f"{run}\n{len(cuts) + 1} modes", fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="|corr|")
fig.suptitle("Sampled parameters' |Pearson correlation|, ordered by mode", y=1.02)
save(fig, "cmd_corr")

# %% [markdown]
# ## Reconstruction error vs modes (time-varying dimensions) and vs stored numbers

# %%
main = errors[(errors["kind"] == "sgd") & (errors["window"] == "fit")]
held = errors[(errors["kind"] == "sgd") & (errors["window"] == "heldout")]
fig, axes = plt.subplots(len(MODELS), 3, figsize=(12.6, 3.0 * len(MODELS)), squeeze=False)
for row, model in zip(axes, MODELS, strict=True):
    e = main[main["model"] == model]
    hs = held[held["model"] == model].groupby(["method", "dims"])["error"].mean().reset_index()
    for method, s in hs.groupby("method"):
        row[2].plot(s["dims"], s["error"], "o-", ms=3, label=method.upper(), color=COLORS[method])
    row[2].set(xscale="log", yscale="log", xlabel="time-varying dimensions",
               title=f"{model}: fit on 1st half, error on 2nd")
    if len(hs):
        plain_log(row[2], "x", sorted(hs["dims"].unique()))
    n = int(e["n_params"].iloc[0])
    stats = e.groupby(["method", "dims"]).agg(error=("error", "mean"), sd=("error", "std"),
                                              stored=("stored", "mean")).reset_index()
    for method, s in stats.groupby("method"):
        row[0].errorbar(s["dims"], s["error"], yerr=s["sd"].fillna(0), marker="o", ms=3, label=method.upper(),
                        color=COLORS[method], capsize=2)
        row[1].plot(s["stored"] / n, s["error"], "o-", ms=3, label=method.upper(), color=COLORS[method])
    row[0].set(xscale="log", yscale="log", xlabel="time-varying dimensions (M, d, r)",
               ylabel="relative error", title=f"{model}: error vs dimensions")
    row[1].set(xscale="log", yscale="log", xlabel="stored numbers / N",
               title=f"{model}: error vs storage (N = {n:,})")
    plain_log(row[0], "x", sorted(e["dims"].unique()))
    plain_log(row[1], "x")
    row[0].legend(fontsize=7)
pca_ok = summary["pca_never_worse_than_cmd"]
fig.suptitle("Error normalised by the trajectory's variance around its temporal mean; "
             f"PCA never worse than CMD at equal dimensions: {pca_ok}", y=1.0, fontsize=9)
fig.tight_layout()
save(fig, "cmd_error")

# %% [markdown]
# ## Example single-weight trajectories

# %%
run0 = sorted(examples["run"].unique(), key=lambda r: (not r.startswith(summary["primary_model"] or ""), r))[0]
ex = examples[examples["run"] == run0]
params = sorted(ex["param"].unique())
fig, axes = plt.subplots(1, len(params), figsize=(3.6 * len(params), 3.0), squeeze=False)
for ax, p in zip(axes[0], params, strict=True):
    for method, style in (("sgd", "k-"), ("cmd", "C0--"), ("pca", "C1:"), ("dmd", "C2-.")):
        s = ex[(ex["param"] == p) & (ex["method"] == method)]
        ax.plot(s["step"], s["value"], style, label=method.upper(), lw=1.2)
    ax.set(xlabel="step", title=f"weight {p} (mode {int(ex[ex['param'] == p]['mode'].iloc[0])})")
axes[0][0].set_ylabel("value")
axes[0][0].legend(fontsize=7)
fig.suptitle(f"{run0}: SGD and its reconstructions at M = {summary['fixed_modes']}", y=1.03)
save(fig, "cmd_examples")

# %% [markdown]
# ## Test accuracy: SGD, EMA, SWA, CMD post-hoc, CMD online, P-SGD (95% CI over seeds)

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 0.8 + 0.6 * (len(METHODS) + 1)), gridspec_kw={"width_ratios": [3, 2]})
cells, rows = [], []
for method, label in METHODS.items():
    line = []
    for model in MODELS:
        acc = summary["by_model"][model]["test_accuracy"][method]
        diff = summary["by_model"][model]["minus_sgd"].get(method)
        text = "n/a" if acc["mean"] is None else f"{100 * acc['mean']:.2f}" + (
            f" ± {100 * acc['ci95']:.2f}" if acc["ci95"] is not None else "")
        if diff and method != "sgd":
            text += f"\n({ci_text(diff)})"
        line.append(text)
    cells.append(line)
    rows.append(label)
axes[0].axis("off")
table = axes[0].table(cellText=cells, rowLabels=rows, colLabels=MODELS, loc="center", cellLoc="center")
table.scale(1, 2.4)
table.auto_set_font_size(False)
table.set_fontsize(7)
axes[0].set_title("test accuracy % (mean ± CI); in brackets: paired difference vs SGD", fontsize=8)
paired = runs[runs["method"].isin(METHODS)].pivot_table(index=["model", "seed"], columns="method", values="test_acc")
diffs = (paired.drop(columns="sgd").sub(paired["sgd"], axis=0) * 100).reset_index().melt(
    id_vars=["model", "seed"], var_name="method", value_name="diff").dropna()
sns.stripplot(data=diffs, x="diff", y="method", hue="model", dodge=True, ax=axes[1], size=4,
              order=[m for m in METHODS if m != "sgd"])
axes[1].axvline(0, color="k", lw=0.8)
axes[1].set(xlabel="test accuracy − SGD (pp), per seed", ylabel="")
cmd_diff = summary["cmd_minus_sgd_accuracy"]
fig.suptitle(f"{summary['primary_model']}: CMD post-hoc − SGD = {ci_text(cmd_diff)} (paired over seeds)", fontsize=9)
fig.tight_layout()
save(fig, "cmd_accuracy")

# %% [markdown]
# ## Online CMD: memory and time against storing the trajectory and refitting

# %%
o = online.groupby("model").mean(numeric_only=True).reindex(MODELS)
fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.0))
x = np.arange(len(o))
axes[0].bar(x - 0.2, o["trajectory_floats"] * 4 / 1e6, 0.4, label="trajectory N·T")
axes[0].bar(x + 0.2, o["state_floats"] * 8 / 1e6, 0.4, label="online state 2N + M·T (float64)")
axes[0].set(xticks=x, xticklabels=o.index, ylabel="MB", yscale="log", title="memory (trajectory in float32)")
axes[0].legend(fontsize=7, loc="lower left")
axes[1].bar(x - 0.2, o["posthoc_fit_seconds"], 0.4, label="post-hoc fit on all T")
axes[1].bar(x + 0.2, o["update_seconds_per_snapshot"], 0.4, label="online update per snapshot")
axes[1].set(xticks=x, xticklabels=o.index, ylabel="seconds", yscale="log", title="time")
axes[1].legend(fontsize=7, loc="lower left")
fig.suptitle(f"online state = {100 * summary['online_state_floats_over_trajectory']:.1f}% of the trajectory; "
             f"online vs post-hoc a, b: max |diff| = {summary['online_vs_posthoc_max_abs_diff']:.1e}", fontsize=9)
fig.tight_layout()
save(fig, "cmd_online")

# %% [markdown]
# ## Embedded CMD: accuracy and trained parameters vs fraction embedded

# %%
emb = runs[runs["method"].isin(["embedded", "sgd"]) & runs["kind"].isin(["embedded", "sgd"])].copy()
emb["fraction"] = np.where(emb["kind"] == "sgd", 0.0, emb["embedded_fraction"])
emb = emb[emb["model"].isin(emb.loc[emb["kind"] == "embedded", "model"].unique())]
if len(emb[emb["kind"] == "embedded"]):
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.0))
    for model, g in emb.groupby("model"):
        s = g.groupby(g["fraction"].round(2)).agg(acc=("test_acc", "mean"), sd=("test_acc", "std"),
                                                   n=("n_params", "first")).reset_index()
        axes[0].errorbar(s["fraction"], 100 * s["acc"], yerr=100 * s["sd"].fillna(0), marker="o", label=model,
                         capsize=2)
        axes[1].plot(s["fraction"], s["n"] * (1 - s["fraction"]), "o-", label=model)
    axes[0].set(xlabel="fraction of parameters embedded at the end", ylabel="test accuracy %",
                title="accuracy (mean ± sd over seeds)")
    axes[1].set(xlabel="fraction embedded", ylabel="parameters still trained", title="trained parameters")
    axes[0].legend(fontsize=7)
    text = ", ".join(f"{f}: {100 * v:.2f}%" for f, v in summary["embedded"].items() if v is not None)
    fig.suptitle(f"{summary['primary_model']} test accuracy by largest fraction embedded: {text}", fontsize=9)
    fig.tight_layout()
    save(fig, "cmd_embedded")

# %% [markdown]
# ## CMD across parameterizations: modes needed and error at fixed M vs width

# %%
if len(modes):
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.0))
    for param, g in modes.groupby("param"):
        s = g.groupby("width").agg(need=("modes_needed", "mean"), err=("error_at_fixed_modes", "mean"),
                                   pca=("pca_error_at_fixed_modes", "mean")).reset_index()
        line = axes[0].plot(s["width"], s["need"], "o-", label=PARAMS.get(param, param))[0]
        axes[1].plot(s["width"], s["err"], "o-", color=line.get_color(), label=f"{PARAMS.get(param, param)} CMD")
        axes[1].plot(s["width"], s["pca"], "x:", color=line.get_color(), label=f"{PARAMS.get(param, param)} PCA")
    axes[0].set(xscale="log", yscale="log", xlabel="width", ylabel="modes needed",
                title=f"modes for relative error ≤ {summary['error_threshold']} (missing: not reached)")
    axes[1].set(xscale="log", yscale="log", xlabel="width", ylabel="relative error",
                title=f"error at M = {summary['fixed_modes']}")
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=6, ncol=2)
    widths = sorted(modes["width"].unique())
    for ax in axes:
        plain_log(ax, "x", widths)
    plain_log(axes[0], "y", sorted(errors.loc[errors["method"] == "cmd", "dims"].unique()))
    widest = max(widths)
    at = modes[modes["width"] == widest].groupby("param")["error_at_fixed_modes"].mean()
    need = summary["modes_needed"]
    n_ntk, n_mup = need.get("ntk", {}).get(str(widest)), need.get("mup", {}).get(str(widest))
    if n_ntk is None or n_mup is None:
        verdict = "modes needed not reached by NTK or μP: not compared"
    elif n_ntk < n_mup:
        verdict = f"NTK needs fewer modes than μP ({n_ntk:g} vs {n_mup:g})"
    else:
        verdict = f"NTK does not need fewer modes than μP ({n_ntk:g} vs {n_mup:g})"
    fig.suptitle(f"width {widest}: {verdict}; error at M = {summary['fixed_modes']}: "
                 + ", ".join(f"{PARAMS.get(p, p)} {v:.3f}" for p, v in at.items()), fontsize=9)
    fig.tight_layout()
    save(fig, "cmd_modes_width")
