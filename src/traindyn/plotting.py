"""What every figure notebook shares: the seaborn style and saving a figure in each format."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["FIGURE_LOG_ENV", "save_figure", "setup_style"]

#: File (set by ``traindyn figure``) to which save_figure appends every path it writes.
FIGURE_LOG_ENV = "TRAINDYN_FIGURE_LOG"


def setup_style(figures_dir: str | Path) -> Path:
    """Select the non-interactive backend and the house style; return the (created) output folder."""
    import matplotlib

    matplotlib.use("Agg")
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="paper")
    out = Path(figures_dir)
    out.mkdir(parents=True, exist_ok=True)
    return out


def save_figure(fig, out: Path, name: str, formats: list[str], dpi: int) -> None:
    """Write ``fig`` as ``out/name.{fmt}`` for every format, then close it."""
    import matplotlib.pyplot as plt

    paths = [out / f"{name}.{fmt}" for fmt in formats]
    for path in paths:
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    if os.environ.get(FIGURE_LOG_ENV):
        with open(os.environ[FIGURE_LOG_ENV], "a") as log:
            log.writelines(f"{p.resolve()}\n" for p in paths)
