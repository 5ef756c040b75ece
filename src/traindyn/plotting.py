"""What every figure notebook shares: the seaborn style and saving a figure in each format."""

from __future__ import annotations

from pathlib import Path

__all__ = ["save_figure", "setup_style"]


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

    for fmt in formats:
        fig.savefig(out / f"{name}.{fmt}", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
