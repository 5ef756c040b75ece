"""Tracking: the only code that talks to MLflow."""

from .mlflow_store import (
    PARENT_ENV,
    JobRun,
    end_invocation,
    git_commit,
    init_store,
    job_run,
    start_invocation,
)
from .records import import_records, study_records

__all__ = [
    "PARENT_ENV",
    "JobRun",
    "end_invocation",
    "git_commit",
    "import_records",
    "init_store",
    "job_run",
    "start_invocation",
    "study_records",
]
