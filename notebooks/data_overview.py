# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Dataset overview
# For every prepared dataset: samples (image grid or text excerpt), class or token
# frequencies per split, and split sizes. Reads only the data stage's tables.

# %% tags=["parameters"]
data_dirs = ["results/data/mnist"]
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

out = setup_style(figures_dir)


def save(fig, name):
    save_figure(fig, out, name, formats, dpi)


manifests = {Path(d).name: json.loads((Path(d) / "manifest.json").read_text()) for d in data_dirs}
stats = {Path(d).name: pd.read_parquet(Path(d) / "stats.parquet") for d in data_dirs}
samples = {Path(d).name: pd.read_parquet(Path(d) / "samples.parquet") for d in data_dirs}

# %% [markdown]
# ## Split sizes

# %%
sizes = pd.DataFrame(
    [{"dataset": name, "split": split, "size": n}
     for name, m in manifests.items() for split, n in m["sizes"].items()]
)
sizes["unit"] = sizes["dataset"].map(lambda d: "tokens" if manifests[d]["kind"] == "text" else "examples")
display_table = sizes.pivot(index="dataset", columns="split", values="size")[["train", "val", "test"]]
display_table

# %%
fig, ax = plt.subplots(figsize=(6, 0.5 + 0.5 * len(manifests)))
sizes["label"] = sizes["dataset"] + " (" + sizes["unit"] + ")"
sns.barplot(data=sizes, y="label", x="size", hue="split", ax=ax, log_scale=True)
ax.set(xlabel="size (log scale)", ylabel="", title="Split sizes")
save(fig, "data_overview_splits")

# %% [markdown]
# ## Per dataset


# %%
def image_overview(name):
    m, st, sm = manifests[name], stats[name], samples[name]
    classes = m["classes"]
    per_class = sm.groupby("label").head(4)
    fig = plt.figure(figsize=(11, 4.2))
    grid = fig.add_gridspec(4, len(classes) + 6)
    for col, (_, group) in enumerate(per_class.groupby("label")):
        for row, (_, s) in enumerate(group.iterrows()):
            ax = fig.add_subplot(grid[row, col])
            img = np.asarray(s["pixels"]).reshape(s["channels"], s["height"], s["width"])
            ax.imshow(img.transpose(1, 2, 0) if s["channels"] == 3 else img[0], cmap="gray_r")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(str(s["name"])[:10], fontsize=7)
    ax = fig.add_subplot(grid[:, len(classes) + 1 :])
    share = st.assign(share=st["count"] / st.groupby("split")["count"].transform("sum"))
    sns.barplot(data=share, y="name", x="share", hue="split", ax=ax, orient="h")
    ax.set(xlabel="share of split", ylabel="", title="class frequencies")
    sns.move_legend(ax, "upper left", bbox_to_anchor=(1, 1), title="split")
    sizes_txt = ", ".join(f"{k} {v:,}" for k, v in m["sizes"].items())
    fig.suptitle(f"{name}: {m['source']}; shape {m['shape']}; {sizes_txt}", fontsize=9)
    return fig


def text_overview(name):
    m, st, sm = manifests[name], stats[name], samples[name]
    fig, (ax_text, ax_freq) = plt.subplots(1, 2, figsize=(11, 4.2), width_ratios=[1.1, 1])
    excerpt = "\n".join(sm["text"].iloc[0].splitlines()[:22])
    ax_text.text(0, 1, excerpt, va="top", ha="left", family="monospace", fontsize=6.5,
                 transform=ax_text.transAxes)
    ax_text.axis("off")
    ax_text.set_title("excerpt of the training split", fontsize=9)
    top = st[st["split"] == "train"].nlargest(25, "count")
    shown = top.assign(token=top["token"].map(lambda t: {" ": "␣", "\n": "⏎"}.get(t, t)))
    order = list(shown["token"])
    sns.barplot(data=st.assign(token=st["token"].map(lambda t: {" ": "␣", "\n": "⏎"}.get(t, t)))
                .query("token in @order"), x="token", y="share", hue="split", order=order, ax=ax_freq)
    ax_freq.set(xlabel=f"{m['level']} (25 most frequent in train)", ylabel="share of split")
    if m["level"] == "word":
        ax_freq.tick_params(axis="x", rotation=90)
    sizes_txt = ", ".join(f"{k} {v:,}" for k, v in m["sizes"].items())
    fig.suptitle(f"{name}: {m['source']}; vocabulary {m['vocab_size']:,}; tokens {sizes_txt}", fontsize=9)
    return fig


for name, m in manifests.items():
    fig = image_overview(name) if m["kind"] == "images" else text_overview(name)
    save(fig, f"data_overview_{name}")
