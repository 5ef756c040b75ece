"""The registry of studies: each name maps to the module that holds its pieces.

A study module (``traindyn.<study>``) exposes:

- ``runs(cfg) -> dict[str, RunSpec]``: every run of the resolved config, keyed by run id;
- ``checks(cfg) -> list[str]``: cross-key problems of a config that passed the schema;
- ``callbacks(spec) -> list[Callback]``: what the study measures or changes in one run;
- ``aggregate(run_dirs, out_dir, cfg) -> dict``: finished runs -> tables, returning the summary
  (written as ``summary.json`` and rendered as ``summary.md`` by ``traindyn.report``).

Adding a study adds one entry to ``STUDIES`` (and its schema section), not a branch in
every function. The study modules are imported lazily: config validation must not pay
for torch.
"""

from __future__ import annotations

import difflib
import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

from .train.spec import RunSpec

__all__ = ["STUDIES", "aggregate", "callbacks", "cross_checks", "run_spec", "study_module", "study_runs"]

# study name -> module holding runs / checks / callbacks / aggregate
STUDIES: dict[str, str] = {
    "scaling": "traindyn.scaling.study",
    "mat": "traindyn.mat.study",
    "lag": "traindyn.grow.study",
    "cmd": "traindyn.cmd.study",
}


def study_module(study: str) -> ModuleType:
    """The module of ``study`` (see the module docstring for what it exposes).

    Raises:
        ValueError: If no study has that name.
    """
    if study not in STUDIES:
        raise ValueError(f"unknown study {study!r}; choose one of {list(STUDIES)}")
    return importlib.import_module(STUDIES[study])


def study_runs(cfg: dict[str, Any], study: str) -> dict[str, RunSpec]:
    """Every run of ``study`` in the resolved config, keyed by run id (empty when disabled)."""
    return study_module(study).runs(cfg)


def run_spec(cfg: dict[str, Any], study: str, run: str) -> RunSpec:
    """The spec of one run, found by its readable id.

    Raises:
        ValueError: If the config has no such run (naming the closest ids).
    """
    runs = study_runs(cfg, study)
    if run not in runs:
        close = difflib.get_close_matches(run, list(runs), n=3)
        hint = f"; did you mean {close}?" if close else f"; the study has {len(runs)} runs"
        raise ValueError(f"run {run!r} is not in study {study!r} of this config{hint}")
    return runs[run]


def callbacks(study: str, spec: RunSpec) -> list:
    """The callbacks one run of ``study`` trains with."""
    return study_module(study).callbacks(spec)


def aggregate(study: str, run_dirs: list[Path], out_dir: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    """Aggregate the finished runs of ``study`` into ``out_dir``: its tables, ``summary.md``, ``summary.json``.

    Returns:
        The summary, stamped with its provenance (commit, date, CPU).
    """
    from .report import write_summary

    summary = study_module(study).aggregate(run_dirs, out_dir, cfg)
    return write_summary(out_dir, study, summary)


def cross_checks(cfg: dict[str, Any], skip: set[str] = frozenset()) -> list[str]:
    """Problems that span several keys of a config that passed the schema (empty when fine).

    Args:
        cfg: The resolved configuration.
        skip: Top-level sections that failed the schema: their studies are not checked,
            since their checks would read values of the wrong type.
    """
    problems = []
    for study in STUDIES:
        if study in skip or "data" in skip:
            continue
        if cfg.get(study, {}).get("enabled"):
            problems += study_module(study).checks(cfg)
    return problems
