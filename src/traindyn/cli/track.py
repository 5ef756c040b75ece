"""`traindyn track`: import a study's deferred tracking records into the MLflow store."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from ..config import Config
from . import add_study_arguments, study_run_dirs

NAME = "track"
HELP = "import the deferred MLflow records (tracking.json) of a study's finished runs"
EPILOG = """examples:
  traindyn track --study scaling
  traindyn track --study cmd --out results/tracking/cmd.json

Jobs of the stages in tracking.defer write their MLflow run to RUN/tracking.json (and
RUN/STAGE/tracking.json) instead of opening the store; this stage imports them, once each:
a record already in the store is skipped, so it may run again at any time.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this stage's options."""
    add_study_arguments(parser, "where to write what was imported (default results/tracking/STUDY.json)")


def run(args: argparse.Namespace, cfg: Config) -> int:
    """Import the records of every run of the study that the config lists."""
    from ..track import import_records, job_run, study_records

    out = Path(args.out or f"results/tracking/{args.study}.json")
    records = study_records(study_run_dirs(args, cfg))
    with job_run(cfg.tracking, NAME, args.study, {"study": args.study}, cfg.hash) as job:
        imported = import_records(cfg.tracking, records)
        job.log_metrics({"records": len(records), "records_imported": imported})
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps({"study": args.study, "records": len(records), "imported": imported,
                               "uri": cfg.tracking.uri}, indent=1))  # fmt: skip
    os.replace(tmp, out)  # written only once every record is in the store
    print(f"{args.study}: {imported} of {len(records)} tracking records imported into {cfg.tracking.uri}")
    return 0
