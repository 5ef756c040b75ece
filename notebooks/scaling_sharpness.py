# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Sharpness dynamics across width and depth
# Top Hessian eigenvalue (sharpness) in base-LR units λ·η/η0 with the edge-of-stability
# line 2/η0, the NTK's and the Gauss-Newton matrix's top eigenvalues, and the spread of
# sharpness across widths S(t). Reads only results/analysis/scaling/{spectra.parquet, summary.json}.

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

src, out = Path(analysis_dir), setup_style(figures_dir)
spectra = pd.read_parquet(src / "spectra.parquet")
summary = json.loads((src / "summary.json").read_text())
NAMES = {"sp": "SP", "ntk": "NTK", "mup": "μP"}
top = spectra[spectra["rank"] == 0]
width_runs = top[top["sweep"].isin(["width", "sharpness-mse"])]
params = [p for p in ["sp", "ntk", "mup"] if p in set(width_runs["param"])]


def save(fig, name):
    save_figure(fig, out, name, formats, dpi)


def fmt_ci(entry):
    if entry is None or entry["mean"] is None:
        return "n/a"
    return f"{entry['mean']:.3f}" + (f" ± {entry['ci95']:.3f}" if entry["ci95"] is not None else "")


def per_size(ax, data, size_key, y, eos=None):
    sizes = sorted(data[size_key].unique())
    palette = dict(zip(sizes, sns.color_palette("viridis", len(sizes)), strict=True))
    sns.lineplot(data=data, x="step", y=y, hue=size_key, palette=palette, errorbar=("ci", 95), ax=ax)
    if eos is not None:
        ax.axhline(eos, color="crimson", ls="--", lw=1, label="2/η0")
    ax.set_yscale("log")


# %% [markdown]
# ## Sharpness vs step per width (SP | NTK | μP), cross-entropy and MSE

# %%
losses = [loss for loss in ["xent", "mse"] if loss in set(width_runs["loss_kind"])]
fig, axes = plt.subplots(len(losses), len(params), figsize=(4.2 * len(params), 3.2 * len(losses)),
                         squeeze=False)
hess = width_runs[width_runs["measure"] == "hessian"]
for row, loss in enumerate(losses):
    for col, p in enumerate(params):
        cell = hess[(hess["param"] == p) & (hess["loss_kind"] == loss)]
        eta0 = float(cell["eta0"].iloc[0])
        per_size(axes[row][col], cell, "width", "sharpness_base_lr_units", eos=2 / eta0)
        key = p if loss == "xent" else f"{p}_{loss}"
        axes[row][col].set(title=f"{NAMES[p]}, {loss}, η0={eta0:g}: S = {fmt_ci(summary['sharpness_spread'].get(key))}",
                           ylabel="λmax(H) · η/η0")
fig.suptitle("Sharpness in base-LR units per width (mean and 95% CI over seeds); dashed: 2/η0. "
             "S = time-mean std over widths of log sharpness.", fontsize=9)
fig.tight_layout()
save(fig, "scaling_sharpness_width")

# %% [markdown]
# ## NTK top eigenvalue vs step per width

# %%
ntk = width_runs[(width_runs["measure"] == "ntk") & (width_runs["loss_kind"] == "xent")]
if len(ntk):
    # Raw muP NTK eigenvalues scale like 1/N, which its LR (eta0 N/N0) undoes: the second row
    # shows lambda * eta / eta0, the units in which the sharpness figure compares widths.
    fig, axes = plt.subplots(2, len(params), figsize=(4.2 * len(params), 6.2), squeeze=False)
    for col, p in enumerate(params):
        cell = ntk[ntk["param"] == p]
        per_size(axes[0][col], cell, "width", "eigenvalue")
        axes[0][col].set(title=f"{NAMES[p]}: raw", ylabel="λmax(NTK)")
        per_size(axes[1][col], cell, "width", "sharpness_base_lr_units")
        axes[1][col].set(title=f"{NAMES[p]}: base-LR units", ylabel="λmax(NTK) · η/η0")
    fig.suptitle("Top eigenvalue of the empirical NTK (J Jᵀ / n, summed over outputs) per width: "
                 "raw (top) and in base-LR units λ·η/η0 (bottom)", fontsize=9)
    fig.tight_layout()
    save(fig, "scaling_ntk_width")

# %% [markdown]
# ## Hessian vs Gauss-Newton top eigenvalue

# %%
pair = width_runs[width_runs["measure"].isin(["hessian", "gn"])].pivot_table(
    index=["run", "step", "param", "width", "loss_kind"], columns="measure", values="eigenvalue").reset_index()
if {"hessian", "gn"} <= set(pair.columns):
    g = sns.relplot(data=pair, x="gn", y="hessian", hue="width", col="param", style="loss_kind",
                    palette="viridis", height=3.2, facet_kws={"sharex": False, "sharey": False})
    for ax in g.axes.flat:
        lo, hi = ax.get_xlim()
        ax.plot([lo, hi], [lo, hi], color="gray", lw=0.8, ls=":")
        ax.set(xscale="log", yscale="log", xlabel="λmax(Gauss-Newton)", ylabel="λmax(Hessian)")
    g.figure.suptitle("Hessian vs Gauss-Newton top eigenvalue at every measurement (dotted: equality)",
                      fontsize=9, y=1.03)
    save(g.figure, "scaling_hessian_vs_gn")

# %% [markdown]
# ## Spread of sharpness across widths, S(t)

# %%
h = hess[hess["sharpness_base_lr_units"] > 0].assign(log=lambda d: np.log(d["sharpness_base_lr_units"]))
spread = h.groupby(["param", "loss_kind", "seed", "step"])["log"].std(ddof=0).reset_index(name="S")
fig, ax = plt.subplots(figsize=(5.5, 3.4))
sns.lineplot(data=spread.assign(param=spread["param"].map(NAMES)), x="step", y="S", hue="param",
             style="loss_kind", errorbar=("ci", 95), ax=ax)
ax.set(ylabel="S(t) = std over widths of log sharpness", title="Super consistency: spread of sharpness across widths")
save(fig, "scaling_sharpness_spread")

# %% [markdown]
# ## GPT with Adam: Hessian and Adam-preconditioned sharpness per width

# %%
def adam_grid(data, panel_key, panels, panel_name, size_key, suffix, name, suptitle):
    """Rows: preconditioned and Hessian sharpness; columns: ``panels``; one curve per size."""
    measures = [m for m in ["preconditioned", "hessian"] if m in set(data["measure"])]
    fig, axes = plt.subplots(len(measures), len(panels), figsize=(4.2 * len(panels), 3.2 * len(measures)),
                             squeeze=False)
    for row, m in enumerate(measures):
        key = f"preconditioned_sharpness_spread{suffix}" if m == "preconditioned" else f"sharpness_spread{suffix}"
        for col, value in enumerate(panels):
            cell = data[(data[panel_key] == value) & (data["measure"] == m)]
            eta0 = float(cell["eta0"].iloc[0])
            # Adam's preconditioned sharpness settles near (2 + 2 beta1) / ((1 - beta1) eta) = 38 / eta
            per_size(axes[row][col], cell, size_key, "sharpness_base_lr_units",
                     eos=38 / eta0 if m == "preconditioned" else None)
            entry = summary.get(key, {}).get(value if isinstance(value, str) else f"{value:g}")
            axes[row][col].set(title=f"{panel_name(value)}, {m}, η0={eta0:g}: S = {fmt_ci(entry)}",
                               ylabel=("λmax(P⁻¹ᐟ²HP⁻¹ᐟ²)" if m == "preconditioned" else "λmax(H)") + " · η/η0")
    fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout()
    save(fig, name)


gpt = top[(top["sweep"] == "gpt") & top["measure"].isin(["hessian", "preconditioned"])]
if len(gpt):
    adam_grid(gpt, "param", [p for p in ["sp", "ntk", "mup"] if p in set(gpt["param"])], NAMES.get, "width", "_gpt",
              "scaling_sharpness_gpt", "GPT char-LM with Adam: sharpness in base-LR units per width (mean and 95% CI "
              "over seeds); dashed: Adam's stability threshold 38/η0 (β1 = 0.9)")

# %% [markdown]
# ## Sharpness vs step across depth (depth-μP)

# %%
depth = top[(top["sweep"] == "depth") & (top["measure"] == "hessian")]
if len(depth):
    alphas = sorted(depth["alpha"].unique())
    fig, axes = plt.subplots(1, len(alphas), figsize=(4.2 * len(alphas), 3.2), squeeze=False)
    for ax, a in zip(axes[0], alphas, strict=True):
        cell = depth[depth["alpha"] == a]
        per_size(ax, cell, "depth", "sharpness_base_lr_units", eos=2 / float(cell["eta0"].iloc[0]))
        ax.set(title=f"α = {a:g}", ylabel="λmax(H) · η/η0")
    fig.suptitle("Residual MLP, branch scale L^-α: sharpness per depth L; dashed: 2/η0", fontsize=9)
    fig.tight_layout()
    save(fig, "scaling_sharpness_depth")

# %% [markdown]
# ## GPT with Adam across depth: depth-μP (α = 1/2) against the standard GPT (α = 0)

# %%
gdepth = top[(top["sweep"] == "gpt-depth") & top["measure"].isin(["hessian", "preconditioned"])]
if len(gdepth):
    adam_grid(gdepth, "alpha", sorted(gdepth["alpha"].unique()),
              lambda a: "standard (α = 0)" if a == 0 else f"depth-μP α = {a:g}", "depth", "_depth_gpt",
              "scaling_sharpness_depth_gpt", "GPT char-LM with Adam (μP): sharpness in base-LR units per depth L "
              "(mean and 95% CI over seeds); S = std over depths of log sharpness; dashed: 38/η0")

# %%
pd.DataFrame({k: {p: fmt_ci(v) for p, v in summary[k].items()}
              for k in ["sharpness_spread", "sharpness_ratio_small_over_large", "sharpness_spread_gpt",
                        "preconditioned_sharpness_spread_gpt", "sharpness_spread_depth_gpt",
                        "preconditioned_sharpness_spread_depth_gpt"] if k in summary})
