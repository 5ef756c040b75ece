"""summary.md of the scaling study: the README's result tables, as a fresh run writes them."""

from __future__ import annotations

import os
import platform
from datetime import UTC, datetime
from typing import Any

__all__ = ["summary_markdown"]

NAMES = {"sp": "SP", "ntk": "NTK", "mup": "μP"}


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown processor"


def _ci(entry: dict[str, Any] | None, digits: int = 2, sign: bool = False) -> str:
    if not entry or entry.get("mean") is None:
        return "n/a"
    fmt = f"{{:{'+' if sign else ''}.{digits}f}}"
    ci = f" ± {entry['ci95']:.{digits}f}" if entry.get("ci95") is not None else ""
    return fmt.format(entry["mean"]) + ci


def _boot(entry: dict[str, Any] | None) -> str:
    mc = (entry or {}).get("mean_curve")
    if not mc or mc.get("shift") is None:
        return "n/a"
    if mc.get("lo") is None:
        return f"{mc['shift']:+.2f}"
    return f"{mc['shift']:+.2f} [{mc['lo']:+.2f}, {mc['hi']:+.2f}]"


def _sizes(entry: dict[str, Any], key: str) -> str:
    return " / ".join(f"{float(v):.3g}" for _, v in sorted(entry[key].items(), key=lambda kv: int(kv[0])))


def _shift_table(title: str, shifts: dict[str, Any], label: str, axis: str) -> list[str]:
    sizes = " / ".join(sorted(next(iter(shifts.values()))["best_lr"], key=int))
    lines = [f"### {title}", "",
             f"| {label} | LR shift, per-seed optima (oct) | LR shift, mean curve [bootstrap 95%] (oct) | "
             f"optimum at grid edge | fitted best η0 at {axis} {sizes} | largest stable η0 |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for key, entry in shifts.items():
        lines.append(f"| {NAMES.get(key, key)} | {_ci(entry, sign=True)} | {_boot(entry)} | "
                     f"{entry['optimum_at_edge_share']:.2f} | {_sizes(entry, 'best_lr')} | "
                     f"{_sizes(entry, 'largest_stable_lr')} |")  # fmt: skip
    return [*lines, ""]


def _spread_table(summary: dict[str, Any], keys: list[tuple[str, str]]) -> list[str]:
    present = [(k, name) for k, name in keys if k in summary]
    if not present:
        return []
    rows = sorted({p for k, _ in present for p in summary[k]})
    lines = ["### Sharpness across widths (base-LR units; time-mean over steps > 5%)", "",
             "| run set | " + " | ".join(name for _, name in present) + " |",
             "|---|" + "---|" * len(present)]  # fmt: skip
    for row in rows:
        label = NAMES.get(row, None) or " ".join(NAMES.get(p, p) for p in row.split("_"))
        lines.append(f"| {label} | " + " | ".join(_ci(summary[k].get(row), 3) for k, _ in present) + " |")
    return [*lines, ""]


def summary_markdown(summary: dict[str, Any], commit: str) -> str:
    """Render ``summary.json`` as markdown tables, stamped with the commit and the machine.

    Args:
        summary: The scaling study's summary.
        commit: The git commit of the code that computed it.

    Returns:
        Markdown text: LR-shift tables (width, GPT, depth) and sharpness spreads, with
        means ± 95% t-intervals over seeds.
    """
    stamp = (f"Written {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `traindyn aggregate --study scaling` "
             f"at commit `{commit[:12]}` on {platform.machine()} with {os.cpu_count()} CPUs "
             f"({_cpu_name()}), Python {platform.python_version()}.")  # fmt: skip
    lines = ["# Scaling study: results", "", stamp, "",
             f"{summary['n_runs']} runs, {summary['n_diverged']} diverged. Means ± 95% t-intervals over "
             "seeds; the mean-curve shift is fitted to the seed-mean loss curve, its interval a "
             "percentile bootstrap over seeds.", ""]  # fmt: skip
    if "lr_shift_octaves" in summary:
        lines += _shift_table("LR transfer across width (MLP, SGD)", summary["lr_shift_octaves"], "param", "width")
    if "lr_shift_octaves_gpt" in summary:
        lines += _shift_table("LR transfer across width (GPT char-LM, Adam)", summary["lr_shift_octaves_gpt"],
                              "param", "width")  # fmt: skip
    if "depth_lr_shift_octaves" in summary:
        lines += _shift_table("LR transfer across depth (residual MLP, branch scale L^-α)",
                              {f"α = {k}": v for k, v in summary["depth_lr_shift_octaves"].items()}, "α", "depth")  # fmt: skip
    lines += _spread_table(summary, [
        ("sharpness_spread", "spread S (MLP)"),
        ("sharpness_ratio_small_over_large", "ratio smallest / largest width (MLP)"),
        ("sharpness_spread_gpt", "spread S, Hessian (GPT)"),
        ("preconditioned_sharpness_spread_gpt", "spread S, preconditioned (GPT)"),
    ])  # fmt: skip
    return "\n".join(lines)
