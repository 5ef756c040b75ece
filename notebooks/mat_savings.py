# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # MAT's compute: validation loss vs cumulative FLOPs and wall time, cost to a target loss
# Reads only the mat study's tables (runs.parquet, curves.parquet, to_target.parquet,
# summary.json). Every number in a title or the table is computed from those tables.

# %% tags=["parameters"]
analysis_dir = "results/analysis/mat"
figures_dir = "results/figures"
formats = ["png"]
dpi = 150

# %%
import json
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from traindyn.plotting import save_figure, setup_style

src, out = Path(analysis_dir), setup_style(figures_dir)
runs = pd.read_parquet(src / "runs.parquet")
curves = pd.read_parquet(src / "curves.parquet")
summary = json.loads((src / "summary.json").read_text())
ORDER = ["full", "mat", "random", "inverse", "temporal"]
COLORS = {"full": "k", "mat": "C0", "random": "C1", "inverse": "C3", "temporal": "C2"}


def save(fig, name):
    save_figure(fig, out, name, formats, dpi)


def ci_text(entry, fmt="{:.2f}"):
    if entry is None or entry.get("mean") is None:
        return "n/a"
    ci = f" ± {fmt.format(entry['ci95'])}" if entry.get("ci95") is not None else ""
    return fmt.format(entry["mean"]) + ci


# %% [markdown]
# ## Validation loss vs cumulative FLOPs and vs wall time, per variant (mean over seeds)

# %%
main = curves[curves["variant"] != "cv"]
for model in sorted(main["model"].unique()):
    s = summary["by_model"][model]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, x, label in ((axes[0], "cum_flops", "cumulative FLOPs"), (axes[1], "cum_seconds", "cumulative wall time (s)")):
        for variant in [v for v in ORDER if v in set(main["variant"])]:
            cell = main[(main["model"] == model) & (main["variant"] == variant)]
            mean = cell.groupby("step")[[x, "val_loss"]].mean()
            ax.plot(mean[x], mean["val_loss"], "-o", ms=2.5, color=COLORS[variant], label=variant)
        ax.axhline(s["target_val_loss"], color="grey", ls=":", lw=1, label="target")
        ax.set_xlabel(label)
        ax.set_ylabel("validation loss")
        ax.set_yscale("log")
    axes[1].legend(fontsize=8)
    fig.suptitle(f"{model.upper()}: MAT vs full, FLOPs to target saved {ci_text(s['flops_saved_pct_vs_full'].get('mat'), '{:.1f}')}%, "
                 f"wall time saved {ci_text(s['wall_saved_pct_vs_full'].get('mat'), '{:.1f}')}%; random: "
                 f"{ci_text(s['flops_saved_pct_vs_full'].get('random'), '{:.1f}')}% / "
                 f"{ci_text(s['wall_saved_pct_vs_full'].get('random'), '{:.1f}')}%", fontsize=9)  # fmt: skip
    save(fig, f"mat_savings_{model}")

# %% [markdown]
# ## Table: FLOPs and wall time to the target validation loss, final metrics, % saved (95% CI)

# %%
rows = []
for model, s in summary["by_model"].items():
    for variant in [v for v in ORDER if v in s["final_val_loss"]]:
        saved_f = s["flops_saved_pct_vs_full"].get(variant)
        saved_w = s["wall_saved_pct_vs_full"].get(variant)
        rows.append([
            model, variant, f"{s['reached_target'][variant]}/{s['seeds'][variant]}",
            ci_text({k: (v / 1e9 if v is not None else None) for k, v in s["flops_to_target"][variant].items()}, "{:.3g}"),
            ci_text(s["wall_to_target"][variant], "{:.1f}"),
            "-" if saved_f is None else ci_text(saved_f, "{:.1f}"),
            "-" if saved_w is None else ci_text(saved_w, "{:.1f}"),
            ci_text(s["final_val_loss"][variant], "{:.3f}"), ci_text(s["final_test_loss"][variant], "{:.3f}"),
            ci_text(s["final_test_acc"][variant], "{:.3f}"), ci_text(s["active_fraction"][variant], "{:.2f}"),
        ])  # fmt: skip
cols = ["model", "variant", "reached", "GFLOPs to target", "wall s to target", "% FLOPs saved", "% wall saved",
        "final val loss", "test loss", "test acc", "active heads"]  # fmt: skip
fig, ax = plt.subplots(figsize=(15, 0.4 * len(rows) + 1.2))
ax.axis("off")
table = ax.table(cellText=rows, colLabels=cols, loc="center", cellLoc="center")
table.auto_set_font_size(False)
table.set_fontsize(8)
table.scale(1, 1.3)
err = summary["flop_counter_rel_error"]
targets = ", ".join(f"{m}: {s['target_val_loss']:.3f}" for m, s in summary["by_model"].items())
ax.set_title(f"Cost to target validation loss ({targets}; (1 + slack) x full's mean final val loss). "
             f"Analytic FLOP count vs torch FlopCounterMode: max rel. error {err:.1e}" if err is not None else
             f"Cost to target validation loss ({targets})", fontsize=9)  # fmt: skip
save(fig, "mat_savings_table")
