"""`traindyn aggregate`: a study's runs -> tidy tables and summary.json."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import Config
from . import add_study_arguments, study_run_dirs

NAME = "aggregate"
HELP = "aggregate a study's finished runs into results/analysis/STUDY/ (their MLflow records: `traindyn track`)"
EPILOG = """examples:
  traindyn aggregate --study scaling
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this stage's options."""
    add_study_arguments(parser, "output folder (default results/analysis/STUDY)")


def run(args: argparse.Namespace, cfg: Config) -> int:
    """Aggregate every run of the study that the config lists."""
    from ..runfiles import check_runs
    from ..studies import aggregate
    from ..track import job_run

    out = Path(args.out or f"results/analysis/{args.study}")
    run_dirs = study_run_dirs(args, cfg)
    # Every run finished and readable, or one message naming each bad file (nothing written).
    check_runs(run_dirs, args.study)
    with job_run(cfg.tracking, NAME, args.study, {"study": args.study}, cfg.hash) as job:
        summary = aggregate(args.study, run_dirs, out, cfg.raw)
        job.log_metrics({"runs": len(run_dirs)})
        job.log_artifact(out / "summary.json")
    print(f"{args.study}: {len(run_dirs)} runs -> {out}")
    print({k: v for k, v in summary.items() if not isinstance(v, dict)})
    return 0
