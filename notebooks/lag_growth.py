# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Landscape-aware growing: which growth ends best, and how early can we tell?
# Reads only the lag study's tables (results/analysis/lag/*.parquet, summary.json). Every
# number in a title is computed from those tables.

# %% tags=["parameters"]
analysis_dir = "results/analysis/lag"
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

from traindyn.grow.analysis import paired_order_holds
from traindyn.plotting import save_figure, setup_style

src, out = Path(analysis_dir), setup_style(figures_dir)
lag = pd.read_parquet(src / "lag.parquet")
lag_summary = pd.read_parquet(src / "lag_summary.parquet")
final_loss = pd.read_parquet(src / "final_loss.parquet")
growth = pd.read_parquet(src / "growth.parquet")
lr_sweep = pd.read_parquet(src / "lr_sweep.parquet")
summary = json.loads((src / "summary.json").read_text())
T = summary["T"]
pool = lag[(lag["group"] == "pool") & (lag["param"] == "sp")]
strategies = sorted(pool["strategy"].unique())
palette = dict(zip(strategies, sns.color_palette("tab10", len(strategies)), strict=True))


def save(fig, name):
    save_figure(fig, out, name, formats, dpi)


def num(x, digits=4):
    return "n/a" if x is None else f"{x:.{digits}f}"


def fmt(entry, digits=2):
    if entry is None or entry.get("mean") is None:
        return "n/a"
    ci = f" ± {entry['ci95']:.{digits}f}" if entry.get("ci95") is not None else ""
    return f"{entry['mean']:.{digits}f}{ci}"


rho = summary["spearman_by_lag"]
undertrained = summary["base_undertrained"]


def band(entry, digits=2):
    """``mean ± t-CI [bootstrap band]`` of a by-lag entry."""
    text = fmt(entry, digits)
    if entry and entry.get("boot_lo") is not None:
        text += f" [{entry['boot_lo']:.{digits}f}, {entry['boot_hi']:.{digits}f}]"
    return text


def growth_vs_lag(param="sp"):
    """The paper's claim, worded from the numbers: is rho(0) below rho at the lag?"""
    g = summary.get("rho_at_growth_vs_lag", {}).get(param)
    if not g or g.get("difference") is None:
        return "rho(0) vs rho(k): n/a"
    verdict = {True: "rho(0) BELOW rho(k) (paper's claim holds)",
               False: "rho(0) ABOVE rho(k) (paper's claim fails)",
               None: "rho(0) NOT clearly below rho(k) (paper's claim not shown)"}[g["below"]]
    return f"rho(k={g['lag']}) - rho(0) = {fmt(g['difference'])}: {verdict}"


def power_line(s):
    """The spread-over-seed-sd check, worded from the numbers."""
    if s.get("ratio") is None:
        return "strategy spread / seed sd: n/a"
    rb = f" [{s['ratio_boot_lo']:.2f}, {s['ratio_boot_hi']:.2f}]" if s.get("ratio_boot_lo") is not None else ""
    pb = (f" [{s['ratio_paired_boot_lo']:.2f}, {s['ratio_paired_boot_hi']:.2f}]"
          if s.get("ratio_paired_boot_lo") is not None else "")
    if s["ratio"] >= 1:
        verdict = "final ranking above seed noise"
    elif paired_order_holds(s):
        verdict = "spread BELOW the seed sd; within a seed the order holds"
    else:
        verdict = "final ranking mostly SEED NOISE"
    return (f"spread/seed sd = {num(s['ratio'], 2)}{rb} (paired by seed {num(s.get('ratio_paired'), 2)}{pb}): "
            f"{verdict}")
base_note = "base past plateau" if not undertrained else f"UNDERTRAINED base: {', '.join(undertrained)}"

# %% [markdown]
# ## Loss after growth per strategy, and loss at growth vs final loss

# %%
fig, ax = plt.subplots(figsize=(5.5, 3.6))
for s, cell in pool.groupby("strategy"):
    m = cell.groupby("lag")["val_loss"].agg(["mean", "std"]).reset_index()
    ax.plot(m["lag"].clip(lower=0.5), m["mean"], "o-", ms=3, color=palette[s], label=s)
grown = pool[pool["strategy"] != "scratch"].groupby(["strategy", "lag"])["val_loss"].mean()
if len(grown):  # scratch starts at ln(vocab): keep the grown strategies readable
    ax.set_ylim(grown.min() - 0.02, grown.max() + 0.05)
    scratch_end = pool[(pool["strategy"] == "scratch") & (pool["lag"] == T)]["val_loss"].mean()
    ax.text(0.02, 0.97, f"scratch (off scale) ends at {scratch_end:.3f}", transform=ax.transAxes, va="top", fontsize=6)
ax.set(xscale="log", xlabel="steps since growth k (0 plotted at 0.5)", ylabel="held-out loss l(k) (nats/char)",
       title=f"SP, mean over {pool['seed'].nunique()} seeds; {base_note}")
ax.legend(fontsize=6, ncol=2)
save(fig, "lag_curves")

fig, ax = plt.subplots(figsize=(4.6, 3.6))
wide = pool.pivot_table(index=["seed", "strategy"], columns="lag", values="val_loss").reset_index()
for s, cell in wide.groupby("strategy"):
    ax.errorbar(cell[0].mean(), cell[T].mean(), xerr=cell[0].std(), yerr=cell[T].std(), fmt="o", color=palette[s],
                label=s, ms=4, capsize=2)
ax.set(xlabel="loss right after growth l(0)", ylabel=f"final loss l(T={T})",
       title=f"Spearman rho(0) = {fmt(rho['0'])} (mean ± 95% CI over seeds)")
ax.legend(fontsize=6)
save(fig, "lag_init_vs_final")

# %% [markdown]
# ## l(k) vs l(T) for a few k; rho(k) and tau(k) with bootstrap bands

# %%
lags = sorted(int(k) for k in rho)
shown = [lags[0], lags[len(lags) // 3], lags[2 * len(lags) // 3]]
fig, axes = plt.subplots(1, len(shown), figsize=(4 * len(shown), 3.3), squeeze=False)
for ax, k in zip(axes[0], shown, strict=True):
    for s, cell in wide.groupby("strategy"):
        ax.scatter(cell[k], cell[T], color=palette[s], s=12, label=s)
    ax.set(xlabel=f"l(k={k})", ylabel=f"l(T={T})", title=f"k={k}: rho = {fmt(rho[str(k)])}")
axes[0][0].legend(fontsize=5)
save(fig, "lag_lk_vs_final")

fig, ax = plt.subplots(figsize=(5.2, 3.5))
sp_sum = lag_summary[lag_summary["param"] == "sp"]
for stat, color in (("spearman", "C0"), ("kendall", "C1")):
    c = sp_sum[sp_sum["statistic"] == stat].sort_values("lag")
    x = c["lag"].clip(lower=0.5)
    ax.plot(x, c["mean"], "o-", color=color, label=f"{stat} (mean over seeds)")
    ax.fill_between(x, c["boot_lo"].astype(float), c["boot_hi"].astype(float), color=color, alpha=0.2)
thr = summary["lag_at_threshold"]["sp"]
ax.axhline(thr["threshold"], ls=":", color="gray")
ax.axhline(0, color="k", lw=0.5)
if thr["lag"] is not None:
    ax.axvline(max(thr["lag"], 0.5), ls="--", color="C0", lw=0.8)
ax.set(xscale="log", xlabel="lag k (0 plotted at 0.5)", ylabel="rank correlation with l(T)", ylim=(-1.05, 1.05))
first = (f"first k with mean rho >= {thr['threshold']}: {thr['lag']} ({thr['lag'] / T:.0%} of T = {T})"
         if thr["lag"] is not None else f"mean rho never reaches {thr['threshold']} within T = {T}")
ax.set_title(f"{first}; rho(0) = {band(rho['0'])}\n{growth_vs_lag()}\n"
             f"{power_line(summary['strategy_spread_over_seed_sd']['sp'])}; bands: bootstrap 95% over seeds",
             fontsize=7)
ax.legend(fontsize=7)
save(fig, "lag_rho")

# %% [markdown]
# ## Selection: top-1 accuracy and regret vs k

# %%
spread = summary["strategy_spread_over_seed_sd"]["sp"]
fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
for ax, stat, label in ((axes[0], "top1", "top-1 accuracy"), (axes[1], "regret", "regret l_T(pick) - min l_T")):
    c = sp_sum[sp_sum["statistic"] == stat].sort_values("lag")
    ax.errorbar(c["lag"].clip(lower=0.5), c["mean"], yerr=c["ci95"].astype(float).fillna(0), fmt="o-", capsize=2)
    ax.set(xscale="log", xlabel="lag k (0 plotted at 0.5)", ylabel=label)
if spread["seed_sd"] is not None:
    axes[1].axhline(spread["seed_sd"], ls=":", color="gray", label=f"seed sd {num(spread['seed_sd'])}")
    axes[1].legend(fontsize=7)
cost = summary["selection_cost_steps"]
axes[0].set_title(f"selection cost (candidates-1)*k: {cost[str(lags[-1])]} steps at k={lags[-1]}")
axes[1].set_title("regret, mean ± 95% CI over seeds")
save(fig, "lag_selection")

# %% [markdown]
# ## Final loss per strategy (mean ± 95% CI over seeds)

# %%
tab = final_loss[final_loss["param"] == "sp"].sort_values("mean")
fig, ax = plt.subplots(figsize=(5.5, 0.5 + 0.28 * len(tab)))
ax.axis("off")
cells = [[s, f"{m:.4f}", "n/a" if c is None or np.isnan(c) else f"{c:.4f}", int(n)]
         for s, m, c, n in zip(tab["strategy"], tab["mean"], tab["ci95"], tab["n"], strict=True)]
ax.table(cells, colLabels=["strategy", f"l(T={T}) mean", "95% CI ±", "seeds"], loc="center")
verdict = "exceeds" if spread["exceeds"] else "does NOT exceed"
ax.set_title(f"spread of strategy means {num(spread['spread'])} {verdict} the seed sd {num(spread['seed_sd'])}\n"
             f"{power_line(spread)}\n"
             f"(strategy x seed residual sd {num(spread['paired_sd'])}: the noise within a seed's ranking)\n"
             f"best {spread['best']}, gap to 2nd {num(spread['best_gap'])} = {num(spread['best_gap_over_seed_sd'], 2)} seed sd",
             fontsize=8)
save(fig, "lag_final_table")

# %% [markdown]
# ## SP vs depth-muP: rho(k) and the post-growth LR

# %%
lr_opt = summary.get("post_growth_lr", {})
if len(summary["spearman_by_lag_by_param"]) > 1 or lr_opt:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.9), gridspec_kw={"wspace": 0.3})
    for i, (p, c) in enumerate(lag_summary[lag_summary["statistic"] == "spearman"].groupby("param")):
        c = c.sort_values("lag")
        x = c["lag"].clip(lower=0.5)
        thr_p = summary["lag_at_threshold"][p]["lag"]
        axes[0].plot(x, c["mean"], "o-", color=f"C{i}", label=f"{p} (k at threshold: {thr_p})")
        axes[0].fill_between(x, c["boot_lo"].astype(float), c["boot_hi"].astype(float), color=f"C{i}", alpha=0.2)
    axes[0].set(xscale="log", xlabel="lag k (0 plotted at 0.5)", ylabel="Spearman rho(k)", ylim=(-1.05, 1.05))
    gvl = summary.get("rho_at_growth_vs_lag", {})
    axes[0].set_title("\n".join(f"{p}: rho(k={g['lag']}) - rho(0) = {fmt(g['difference'])}"
                                 for p, g in gvl.items()), fontsize=7)
    axes[0].legend(fontsize=7)
    edges = []
    for i, (p, c) in enumerate(lr_sweep.groupby("param")):
        o = lr_opt[p]
        where = f"AT THE {o['at_edge'].upper()} EDGE of the grid: not an optimum" if o["at_edge"] else "interior"
        if o.get("diverged_factors"):
            where += "; diverged at x" + ", x".join(f"{f:g}" for f in o["diverged_factors"])
        edges.append(f"{p}: best x{o['best_factor']:g} ({where})")
        axes[1].errorbar(c["lr_factor"], c["mean"], yerr=c["std"].fillna(0), fmt="o-", color=f"C{i}", capsize=2,
                         label=f"{p}: best x{o['best_factor']:g}")
        axes[1].plot([o["best_factor"]], [c.set_index("lr_factor").loc[o["best_factor"], "mean"]], "*", ms=12,
                     color=f"C{i}", mec="k")
    if edges:
        axes[1].set(xscale="log", xlabel="post-growth LR / base LR", ylabel=f"l(T={T})")
        factors = sorted(lr_sweep["lr_factor"].unique())
        axes[1].set_xticks(factors, [f"{f:g}" for f in factors], minor=False)
        axes[1].minorticks_off()
        axes[1].legend(fontsize=7)
        bars = "error bars: seed sd" if lr_sweep["count"].max() > 1 else "1 seed: no error bars"
        axes[1].set_title(f"post-growth LR sweep ({bars})\n" + "\n".join(edges), fontsize=7)
    else:
        axes[1].axis("off")
        axes[1].text(0.5, 0.5, "post-growth LR sweep disabled", ha="center", transform=axes[1].transAxes)
    save(fig, "lag_rho_by_param")

# %% [markdown]
# ## Adaptive gradual stacking against fixed schedules at equal steps

# %%
avf = summary["adaptive_vs_fixed"]
if avf:
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.4))
    chosen = growth[growth["strategy"] == "adaptive"] if "chosen" in growth else growth.iloc[:0]
    if len(chosen):
        pos = chosen["chosen"].str.extract(r"-p(\d+)-")[0].astype(int)
        axes[0].scatter(chosen["stage"], pos, c=chosen["seed"], cmap="viridis", s=30)
        for d in sorted(chosen["stage"].unique()):
            axes[0].plot([d - 0.3, d + 0.3], [d - 2] * 2, color="gray", lw=0.8)  # copy top = the last position
    axes[0].set(xlabel="blocks after the stage", ylabel="duplicated block (gray: copy top)",
                title="adaptive stacking's choice per stage (colour: seed)")
    names = list(avf)
    means = [avf[n]["mean"] for n in names]
    errs = [avf[n]["ci95"] or 0 for n in names]
    axes[1].barh(names, means, xerr=errs, color=["C3" if n == "adaptive" else "C0" for n in names])
    lo = min(m for m in means if m is not None)
    axes[1].set_xlim(lo - 0.1, max(m + e for m, e in zip(means, errs, strict=True)) + 0.12)
    axes[1].set(xlabel="final held-out loss (mean ± 95% CI)")
    d = {n: avf[n].get("adaptive_minus_this") for n in names if n != "adaptive"}
    best_fixed = min((n for n in names if n != "adaptive"), key=lambda n: avf[n]["mean"])
    verdicts = [avf[n].get("verdict") for n in names if n != "adaptive"]
    better = sum(v == "adaptive better" for v in verdicts)
    worse = sum(v == "adaptive worse" for v in verdicts)
    claim = ("paper's claim holds: adaptive beats every fixed schedule" if better == len(verdicts) else
             f"paper's claim NOT shown: adaptive better than {better}, worse than {worse} of {len(verdicts)}")
    axes[1].set_title(f"n = {avf['adaptive']['n']} seeds; _pc: probe steps counted; {claim}\n"
                      f"adaptive - {best_fixed} = {fmt(d[best_fixed], 4)}", fontsize=7)
    for n, y in zip(names, range(len(names)), strict=True):
        axes[1].text(lo - 0.095, y, f"{avf[n]['total_steps']} steps", va="center", fontsize=6)
        if n != "adaptive":
            axes[1].text(avf[n]["mean"] + (avf[n]["ci95"] or 0) + 0.002, y,
                         f"adaptive - this {fmt(d[n], 3)} ({avf[n].get('verdict') or 'n/a'})", va="center", fontsize=5)
    save(fig, "lag_stacking")
