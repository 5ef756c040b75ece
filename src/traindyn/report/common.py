"""Pieces shared by the generated results pages: provenance stamps and number formatting."""

from __future__ import annotations

import math
import os
import platform
from datetime import UTC, datetime
from typing import Any

__all__ = ["ci", "cpu_name", "fmt", "page_head", "provenance", "sign_of", "stamp", "table"]


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` says."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown processor"


def provenance() -> dict[str, Any]:
    """Where and when a summary was computed: commit, UTC time, CPU, core count, Python."""
    from ..track import git_commit

    return {"commit": git_commit(), "date": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
            "cpu": cpu_name(), "cpus": os.cpu_count(), "machine": platform.machine(),
            "python": platform.python_version()}  # fmt: skip


def stamp(prov: dict[str, Any] | None, what: str) -> str:
    """One sentence naming the run a page's numbers come from (``what``: the source, as markdown)."""
    if not prov:
        return f"Generated from {what}; it records no provenance."
    commit = str(prov.get("commit", "unknown"))
    short = commit[:12] + ("+dirty" if commit.endswith("+dirty") else "")
    return (f"Generated from {what}, written at commit {short} on {prov.get('date', '?')} "
            f"by a {prov.get('machine', '?')} machine with {prov.get('cpus', '?')} CPUs "
            f"({prov.get('cpu', '?')}), Python {prov.get('python', '?')}.")  # fmt: skip


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def fmt(x: Any, digits: int = 3, sign: bool = False) -> str:
    """A number with ``digits`` significant digits (``n/a`` for None or NaN)."""
    if not _finite(x):
        return "n/a"
    if x == 0:
        return "0" if not sign else "+0"
    if abs(x) < 1e-4:
        return f"{x:{'+' if sign else ''}.{digits - 1}e}"
    mag = math.floor(math.log10(abs(x)))
    decimals = max(0, digits - 1 - mag)
    return f"{x:{'+' if sign else ''}.{decimals}f}"


def ci(entry: dict[str, Any] | None, decimals: int = 2, sign: bool = False, scale: float = 1.0) -> str:
    """``mean ± half-width`` of a ``ci95`` entry with fixed decimals (``n/a`` when empty)."""
    if not entry or not _finite(entry.get("mean")):
        return "n/a"
    text = f"{entry['mean'] * scale:{'+' if sign else ''}.{decimals}f}"
    if _finite(entry.get("ci95")):
        text += f" ± {entry['ci95'] * scale:.{decimals}f}"
    return text


def sign_of(entry: dict[str, Any] | None) -> int | None:
    """+1 / -1 when the 95% interval excludes zero above / below, 0 when it holds zero, None without one."""
    if not entry or not _finite(entry.get("mean")) or not _finite(entry.get("ci95")):
        return None
    lo, hi = entry["mean"] - entry["ci95"], entry["mean"] + entry["ci95"]
    return 1 if lo > 0 else -1 if hi < 0 else 0


def page_head(title: str, study: str, summary: dict[str, Any], intro: str, findings: list[str]) -> list[str]:
    """A results page's title, stamp, intro and findings, up to its tables' heading."""
    return [f"# {title}", "", stamp(summary.get("provenance"), f"`results/analysis/{study}/summary.json`"), "",
            intro, "", "## Findings", "", *findings, "", "## Tables", ""]  # fmt: skip


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table, then a blank line."""
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return [*out, ""]
