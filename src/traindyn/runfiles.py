"""Read the files a finished run hands to later stages, with errors that name the command to fix them.

A run folder (``results/runs/<study>/<run>/``) is complete when ``final.json`` exists: the
loop writes its parquet tables first and ``final.json`` last, each tmp-then-rename. A
later stage (``traindyn aggregate``) checks every folder up front (final.json, every
parquet table and JSON file in it), so a missing, truncated or foreign file stops the job with one message listing each bad file and the exact
command that rewrites it, before any output is touched.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["RunFileError", "check_runs", "read_final", "read_table", "rerun_command"]


class RunFileError(ValueError):
    """A run's output file is missing, unreadable or written by another run."""


def rerun_command(run_dir: Path, study: str) -> str:
    """The commands that rewrite one run's files: Snakemake forced on its ``final.json``, or the CLI."""
    return (f"rerun that run: snakemake -c1 --force {run_dir / 'final.json'} "
            f"(or traindyn train --study {study} --run {run_dir.name} --out {run_dir})")  # fmt: skip


def read_final(run_dir: Path, study: str, run: str | None = None) -> dict[str, Any]:
    """``final.json`` of one run as a dict.

    Args:
        run_dir: The run's folder.
        study: Its study (for the rerun command).
        run: The run id it must hold (default: the folder's name).

    Raises:
        RunFileError: If it is missing, not JSON, or names another run.
    """
    run = Path(run_dir).name if run is None else run
    path = Path(run_dir) / "final.json"
    if not path.is_file():
        raise RunFileError(f"{path} is missing: the run is not finished; {rerun_command(Path(run_dir), study)}")
    try:
        final = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RunFileError(f"{path}: not valid JSON ({err}); {rerun_command(Path(run_dir), study)}") from err
    if not isinstance(final, dict) or final.get("run") != run or not isinstance(final.get("spec"), dict):
        got = final.get("run") if isinstance(final, dict) else type(final).__name__
        raise RunFileError(f"{path}: written for run {got!r}, not {run!r}; "
                           f"{rerun_command(Path(run_dir), study)}")  # fmt: skip
    return final


def read_table(path: Path, study: str):
    """One parquet table of a run (``metrics.parquet``, ``spectra.parquet``, ...) as a DataFrame.

    Raises:
        RunFileError: If it is missing or not a readable parquet file.
    """
    import pandas as pd

    path = Path(path)
    try:
        return pd.read_parquet(path)
    except FileNotFoundError as err:
        raise RunFileError(f"{path} is missing; {rerun_command(path.parent, study)}") from err
    except Exception as err:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise RunFileError(f"{path}: not a readable parquet file ({type(err).__name__}: {err}); "
                           f"{rerun_command(path.parent, study)}") from err  # fmt: skip


def _parquet_problem(path: Path) -> str | None:
    import pyarrow.parquet as pq

    try:
        pq.read_metadata(path)  # the footer: a truncated or foreign file fails here, cheaply
    except Exception as err:  # noqa: BLE001 - ArrowInvalid, OSError, ...: a bad file either way
        return f"{type(err).__name__}: {err}"
    return None


def check_runs(run_dirs: list[Path], study: str) -> None:
    """Check that every run is finished and its files are readable, before aggregating.

    Raises:
        RunFileError: Listing every unfinished run (with how to build them) and every bad
            file (with the command that rewrites its run).
    """
    run_dirs = [Path(d) for d in run_dirs]
    missing = [d for d in run_dirs if not (d / "final.json").is_file()]
    problems = []
    if missing:
        shown = " ".join(str(d / "final.json") for d in missing[:3])
        problems.append(
            f"{len(missing)} of {len(run_dirs)} runs of study {study!r} are not finished (no final.json), "
            f"e.g. {[str(d) for d in missing[:3]]}: train them first, e.g. snakemake -c1 {shown} "
            f"(or traindyn train --study {study} --run {missing[0].name} --out {missing[0]})"
        )
    for d in run_dirs:
        if d in missing:
            continue
        try:
            read_final(d, study)
        except RunFileError as err:
            problems.append(str(err))
        for table in sorted(d.glob("*.parquet")):
            if (why := _parquet_problem(table)) is not None:
                problems.append(f"{table}: not a readable parquet file ({why}); {rerun_command(d, study)}")
        for other in sorted(set(d.glob("*.json")) - {d / "final.json"}):  # tracking.json, a study's fits
            try:
                json.loads(other.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
                problems.append(f"{other}: not valid JSON ({err}); {rerun_command(d, study)}")
    if problems:
        raise RunFileError("\n".join(problems) if len(problems) == 1 else
                           f"{len(problems)} problems with the runs:\n" + "\n".join(f"  - {p}" for p in problems))  # fmt: skip
