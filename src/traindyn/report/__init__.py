"""Results pages generated from the studies' summaries, and the docs regions they fill.

Each study has a renderer module here (``markdown(summary)``: the study's results page;
``headline(summary)``: one table cell with the measured answer). The aggregation writes
``summary.md`` with it beside ``summary.json``; ``traindyn report`` copies the summaries
into ``docs/results/summaries/`` and renders ``docs/results/*.md``, the README's headline
table, ``docs/figures.md`` and the benchmark tables from the same code, so a page and the
numbers it shows cannot drift apart (``tests/unit/test_docs_generated.py``).
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any

from .common import provenance

__all__ = ["RENDERERS", "headline", "provenance", "study_markdown", "write_summary"]

# study -> renderer module
RENDERERS = {s: f"traindyn.report.{s}" for s in ("scaling", "mat", "cmd", "lag")}


def _renderer(study: str):
    if study not in RENDERERS:
        raise ValueError(f"no results page for study {study!r}; choose one of {list(RENDERERS)}")
    return importlib.import_module(RENDERERS[study])


def study_markdown(study: str, summary: dict[str, Any]) -> str:
    """The results page of ``study`` (markdown) from its summary."""
    return _renderer(study).markdown(summary)


def headline(study: str, summary: dict[str, Any]) -> str:
    """One line with the study's measured answer and its intervals."""
    return _renderer(study).headline(summary)


def _plain(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_summary(out_dir: Path, study: str, summary: dict[str, Any]) -> dict[str, Any]:
    """Stamp ``summary`` with its provenance, write ``summary.md`` and then ``summary.json``.

    ``summary.json`` comes last and by rename: it is the rule's output that says the
    aggregation is complete, so a failed job never leaves one that a later stage would take.

    Returns:
        The summary with its ``provenance`` entry.
    """
    out_dir = Path(out_dir)
    summary = {**summary, "provenance": provenance()}
    for name, text in (("summary.md", study_markdown(study, summary)),
                       ("summary.json", json.dumps(summary, indent=2, default=_plain) + "\n")):  # fmt: skip
        tmp = out_dir / f".{name}.tmp-{os.getpid()}"
        tmp.write_text(text)
        os.replace(tmp, out_dir / name)
    return summary
