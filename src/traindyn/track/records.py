"""Deferred tracking: a job writes its MLflow run to a JSON record; a later job imports it.

Short jobs (a training run of a few seconds) would spend more time importing MLflow and
opening its store than training. Such stages (``tracking.defer``) record exactly what
they would have logged, with its timestamps, and the study's ``track`` job imports the
records in one process, beside the study's aggregation and figures. Importing is
idempotent: a record already in the store is skipped.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..config import TrackingConfig

__all__ = ["RECORD", "JobRecord", "import_records", "study_records"]

RECORD = "tracking.json"


def _now_ms() -> int:
    return int(time.time() * 1000)


class JobRecord:
    """Same interface as ``JobRun``; keeps everything in memory until ``save``."""

    def __init__(self, path: Path, run_name: str, tags: dict[str, str]):
        self.path = path
        self.run_id = None
        self.data: dict[str, Any] = {
            "record_id": uuid.uuid4().hex,
            "run_name": run_name,
            "tags": tags,
            "params": {},
            "metrics": [],
            "artifacts": [],
            "start_time": _now_ms(),
        }

    def log_params(self, params: dict[str, Any]) -> None:
        """Record (nested) params."""
        self.data["params"].update(params)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Record scalar metrics at ``step``."""
        self.log_metric_rows([(k, v, step or 0) for k, v in metrics.items()])

    def log_metric_rows(self, rows: list[tuple[str, float, int]]) -> None:
        """Record ``(key, value, step)`` rows with the current time."""
        now = _now_ms()
        self.data["metrics"] += [(k, float(v), int(s), now) for k, v, s in rows if v is not None]

    def set_tags(self, tags: dict[str, Any]) -> None:
        """Record string tags."""
        self.data["tags"].update({k: str(v) for k, v in tags.items()})

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Record a file to copy into the run's artifacts at import time."""
        self.data["artifacts"].append([str(Path(path).resolve()), artifact_path])

    def save(self, status: str) -> None:
        """Write the record atomically with the run's final status."""
        self.data["status"] = status
        self.data["end_time"] = _now_ms()
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(self.data))
        os.replace(tmp, self.path)


def study_records(run_dirs: Iterable[str | Path]) -> list[Path]:
    """The records of a study's runs that exist.

    ``RUN/tracking.json`` (the training job's) and those of the run's later stages in its
    subfolders (``RUN/cmdfit/tracking.json``).
    """
    out = []
    for d in map(Path, run_dirs):
        out += [p for p in (d / RECORD, *sorted(d.glob(f"*/{RECORD}"))) if p.is_file()]
    return out


def import_records(cfg: TrackingConfig, paths: Iterable[str | Path]) -> int:
    """Import deferred records into the MLflow store; return how many were new.

    Args:
        cfg: The ``tracking`` section.
        paths: ``tracking.json`` files (missing ones are skipped: their job wrote none).
    """
    if not cfg.enabled:
        return 0
    from .mlflow_store import JobRun, _client, _experiment_id, _retry

    client = _client(cfg.uri)
    exp = _experiment_id(client, cfg)
    records = [json.loads(Path(p).read_text()) for p in paths if Path(p).is_file()]
    known, token = set(), None
    while True:  # page through the runs that came from records
        page = _retry(client.search_runs, [exp], "tags.`traindyn.record_id` != ''",
                      max_results=10_000, page_token=token)  # fmt: skip
        known |= {r.data.tags["traindyn.record_id"] for r in page}
        token = page.token
        if not token:
            break
    new = 0
    for rec in records:
        if rec["record_id"] in known:
            continue
        tags = {**rec["tags"], "traindyn.record_id": rec["record_id"]}
        run = _retry(client.create_run, exp, start_time=rec["start_time"], tags=tags,
                     run_name=rec["run_name"])  # fmt: skip
        job = JobRun(client, run.info.run_id, run.info.artifact_uri)
        job.log_batch(params=rec["params"], rows=rec["metrics"])  # rows (key, value, step, timestamp)
        for path, artifact_path in rec["artifacts"]:
            job.log_artifact(path, artifact_path)
        _retry(client.set_terminated, run.info.run_id, rec["status"], end_time=rec["end_time"])
        new += 1
    return new
