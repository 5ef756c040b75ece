"""Tracking: the only code that talks to MLflow."""

from .mlflow_store import (
    CREDENTIALS_ENV,
    PARENT_ENV,
    JobRun,
    TrackingAuthError,
    end_invocation,
    git_commit,
    init_store,
    job_run,
    load_credentials,
    start_invocation,
)
from .records import import_records, study_records

__all__ = [
    "CREDENTIALS_ENV",
    "PARENT_ENV",
    "JobRun",
    "TrackingAuthError",
    "end_invocation",
    "git_commit",
    "import_records",
    "init_store",
    "job_run",
    "load_credentials",
    "start_invocation",
    "study_records",
]
