"""The one place that talks to MLflow: the store, the invocation's parent run, each job's run."""

from __future__ import annotations

import fcntl
import functools
import json
import math
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..config import TrackingConfig

__all__ = [
    "CREDENTIALS_ENV",
    "PARENT_ENV",
    "JobRun",
    "TrackingAuthError",
    "end_invocation",
    "init_store",
    "job_run",
    "load_credentials",
    "start_invocation",
]

PARENT_ENV = "TRAINDYN_MLFLOW_PARENT"
_RETRIES = 8

# The credentials of an MLflow server with authentication (workflow/scripts/mlflow_server.sh
# creates them): MLflow's client reads these variables; a job inherits them from Snakemake.
CREDENTIALS_ENV = "TRAINDYN_MLFLOW_CREDENTIALS"  # names the file that holds them
_USER_VARS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
_TOKEN_VAR = "MLFLOW_TRACKING_TOKEN"
_HOW_TO_AUTHENTICATE = (
    "Before starting snakemake, export TRAINDYN_MLFLOW_CREDENTIALS=<the file "
    "workflow/scripts/mlflow_server.sh created: STORE_DIR/credentials, by default "
    "results/mlflow-server/credentials>, or export MLFLOW_TRACKING_USERNAME and "
    "MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)"
)


class TrackingAuthError(RuntimeError):
    """The tracking server refused this process: no, wrong or insufficient credentials."""


def _have_credentials() -> bool:
    return bool(os.environ.get(_TOKEN_VAR)) or all(os.environ.get(v) for v in _USER_VARS)


def _read_credentials(path: Path) -> dict[str, str]:
    """The ``KEY=VALUE`` lines of a private file (``export``, quotes and ``#`` comments allowed)."""
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise TrackingAuthError(
            f"{path} is open to group or others (mode {mode:o}), so its password is no secret: "
            f"run `chmod 600 {path}`, and change the password if others may have read it."
        )
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def load_credentials(uri: str) -> Path | None:
    """Put a tracking server's credentials into this process's environment, if needed.

    Only for an ``http(s)://`` tracking URI where neither ``MLFLOW_TRACKING_USERNAME`` and
    ``MLFLOW_TRACKING_PASSWORD`` nor ``MLFLOW_TRACKING_TOKEN`` is set: they are read from
    the file that ``TRAINDYN_MLFLOW_CREDENTIALS`` names (``workflow/scripts/mlflow_server.sh``
    creates it, mode 600). Snakemake calls this on the submitting machine (``onstart``),
    so its jobs, SLURM jobs included (``sbatch --export=ALL``), inherit the variables. No
    value is printed, logged or written anywhere.

    Returns:
        The file read, or None when nothing was read.

    Raises:
        TrackingAuthError: The named file is missing, open to others or incomplete.
    """
    if not uri.startswith(("http://", "https://")) or _have_credentials():
        return None
    named = os.environ.get(CREDENTIALS_ENV)
    if not named:
        return None  # perhaps a server without authentication; a refusal says what to do
    path = Path(named)
    if not path.is_file():
        raise TrackingAuthError(f"{CREDENTIALS_ENV}={named}: no such file. {_HOW_TO_AUTHENTICATE}.")
    values = _read_credentials(path)
    if values.get(_TOKEN_VAR):
        os.environ[_TOKEN_VAR] = values[_TOKEN_VAR]
    elif all(values.get(v) for v in _USER_VARS):
        for var in _USER_VARS:
            os.environ[var] = values[var]
    else:
        raise TrackingAuthError(f"{path} lacks MLFLOW_TRACKING_USERNAME= or MLFLOW_TRACKING_PASSWORD=")
    return path


def _auth_failure(err: Exception) -> TrackingAuthError | None:
    """The error to stop with where ``err`` is a tracking server refusing this process."""
    status = getattr(err, "get_http_status_code", lambda: None)()
    code = getattr(err, "error_code", None)
    user = os.environ.get(_USER_VARS[0])
    if status == 401 or code == "UNAUTHENTICATED":
        if not _have_credentials():
            why = "this process has no credentials for it"
        else:
            why = f"it rejected user {user!r} and its password (are they this server's?)"
        return TrackingAuthError(
            f"the MLflow server requires authentication and {why}. {_HOW_TO_AUTHENTICATE}."
        )
    if status == 403 or code == "PERMISSION_DENIED":
        return TrackingAuthError(
            f"the MLflow server denied user {user!r} this request (403 Forbidden): use the "
            "admin credentials of the server's credentials file, or have its admin grant "
            f"{user!r} EDIT on the experiment."
        )
    return None


def _client(uri: str):
    from mlflow.tracking import MlflowClient  # slow import: only where tracking happens

    load_credentials(uri)
    return MlflowClient(tracking_uri=uri)


def _retry(fn, *args, **kwargs):
    # SQLite serialises writers; parallel jobs may see "database is locked" for a moment.
    for attempt in range(_RETRIES):
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - MLflow wraps sqlite errors in several types
            if (refused := _auth_failure(err)) is not None:
                raise refused from None  # its message says what to do; MLflow's adds nothing
            transient = "locked" in str(err) or "busy" in str(err).lower()
            if not transient or attempt == _RETRIES - 1:
                raise
            time.sleep(0.2 * 2**attempt)


def _sqlite_path(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


@functools.cache
def git_commit() -> str:
    """Return the commit of the traindyn checkout (``+dirty`` if modified), or ``unknown``."""
    root = Path(__file__).resolve().parents[3]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                              text=True, check=True, timeout=10).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def _experiment_id(client, cfg: TrackingConfig) -> str:
    exp = _retry(client.get_experiment_by_name, cfg.experiment)
    if exp is not None:
        return exp.experiment_id
    location = None
    if _sqlite_path(cfg.uri) is not None:
        location = Path(cfg.artifact_root).resolve().as_uri()
    try:
        return _retry(client.create_experiment, cfg.experiment, artifact_location=location)
    except TrackingAuthError:
        raise
    except Exception:  # noqa: BLE001 - lost a creation race: the experiment exists now
        return _retry(client.get_experiment_by_name, cfg.experiment).experiment_id


def init_store(cfg: TrackingConfig) -> str | None:
    """Create the tracking store and experiment once, before parallel jobs start.

    MLflow 3 races when several processes create a sqlite store at once, so creation
    happens under an exclusive file lock beside the database.

    Returns:
        The experiment id, or None when tracking is disabled.
    """
    if not cfg.enabled:
        return None
    db = _sqlite_path(cfg.uri)
    if db is None:
        return _experiment_id(_client(cfg.uri), cfg)
    db.parent.mkdir(parents=True, exist_ok=True)
    Path(cfg.artifact_root).mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return _experiment_id(_client(cfg.uri), cfg)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def start_invocation(cfg: TrackingConfig, name: str, tags: dict[str, str]) -> str | None:
    """Open the parent run of one Snakemake invocation and export its id to child jobs."""
    if not cfg.enabled:
        return None
    exp = init_store(cfg)
    client = _client(cfg.uri)
    run = _retry(client.create_run, exp, run_name=name,
                 tags={"traindyn.kind": "invocation", "git_commit": git_commit(), **tags})  # fmt: skip
    os.environ[PARENT_ENV] = run.info.run_id
    return run.info.run_id


def end_invocation(cfg: TrackingConfig, run_id: str | None, ok: bool) -> None:
    """Close the parent run with FINISHED or FAILED."""
    if cfg.enabled and run_id:
        _retry(_client(cfg.uri).set_terminated, run_id, "FINISHED" if ok else "FAILED")


def _flatten(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = json.dumps(value) if isinstance(value, list | tuple) else str(value)


# MLflow's log_batch limits: 1000 entities in all, of which at most 100 params (and 100 tags).
_BATCH, _BATCH_PARAMS = 1000, 100


class JobRun:
    """A job's MLflow run: params, metrics, tags and artifacts go through here."""

    def __init__(self, client, run_id: str | None, artifact_uri: str | None = None):
        self._client = client
        self.run_id = run_id
        self._artifact_uri = artifact_uri  # the run's, when the caller has it (saves a lookup)

    def log_params(self, params: dict[str, Any]) -> None:
        """Log (nested) params, flattened to dotted keys."""
        self.log_batch(params=params)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Log scalar metrics at ``step`` (non-finite values are skipped: they are not data)."""
        self.log_metric_rows([(k, v, step or 0) for k, v in metrics.items()])

    def log_metric_rows(self, rows: list[tuple]) -> None:
        """Log many ``(key, value, step)`` rows in batched transactions.

        A row may carry a fourth item, its timestamp in ms (deferred records keep the time
        they were measured); otherwise now. Non-finite values are skipped.
        """
        self.log_batch(rows=rows)

    def log_batch(self, params: dict[str, Any] | None = None, rows: list[tuple] | None = None) -> None:
        """Log (nested) params and ``(key, value, step[, timestamp])`` metric rows together.

        As few ``log_batch`` calls as MLflow's limits allow: one for a typical run's 26 params
        and ~500 metric rows, where a call per kind cost one more transaction per run.
        """
        if self.run_id is None:
            return
        from mlflow.entities import Metric, Param

        flat: dict[str, str] = {}
        _flatten("", params or {}, flat)
        param_items = [Param(k, v[:6000]) for k, v in flat.items()]
        now = int(time.time() * 1000)
        metric_items = [Metric(r[0], float(r[1]), int(r[3]) if len(r) > 3 else now, int(r[2]))
                        for r in rows or () if r[1] is not None and math.isfinite(float(r[1]))]  # fmt: skip
        while param_items or metric_items:
            p, param_items = param_items[:_BATCH_PARAMS], param_items[_BATCH_PARAMS:]
            m, metric_items = metric_items[: _BATCH - len(p)], metric_items[_BATCH - len(p) :]
            _retry(self._client.log_batch, self.run_id, metrics=m, params=p)

    def set_tags(self, tags: dict[str, Any]) -> None:
        """Set string tags on the run."""
        if self.run_id is None:
            return
        from mlflow.entities import RunTag

        _retry(self._client.log_batch, self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Copy a file (or a folder's files) into the run's artifacts."""
        if self.run_id is None:
            return
        path = Path(path)
        if not (path.is_dir() or path.is_file()):
            return
        if self._artifact_uri is None:  # MlflowClient.log_artifact would look it up on every call
            self._artifact_uri = _retry(self._client.get_run, self.run_id).info.artifact_uri
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        # The client's tracking URI resolves a server's proxied `mlflow-artifacts:` locations.
        repo = get_artifact_repository(self._artifact_uri, tracking_uri=self._client.tracking_uri)
        upload = repo.log_artifacts if path.is_dir() else repo.log_artifact
        try:
            upload(str(path), artifact_path)
        except Exception as err:  # noqa: BLE001 - only the server's refusal is rephrased
            if (refused := _auth_failure(err)) is not None:
                raise refused from None
            raise


@contextmanager
def job_run(cfg: TrackingConfig, stage: str, name: str, tags: dict[str, Any],
            config_hash: str, record_dir: str | Path | None = None) -> Iterator[JobRun]:  # fmt: skip
    """Open one job's MLflow run, child of the invocation's run when there is one.

    Args:
        cfg: The ``tracking`` section.
        stage: The CLI subcommand (= the Snakemake rule's stage).
        name: The readable name of the job (run id, dataset or figure name).
        tags: Identifying arguments of the job (the rule's wildcards).
        config_hash: Hash of the resolved configuration.
        record_dir: Where a deferred stage (``stage in cfg.defer``) writes its record
            (``tracking.json``) instead of talking to MLflow; see ``import_records``.

    Yields:
        The job's run; it ends FINISHED, or FAILED if the body raised.
    """
    if not cfg.enabled:
        yield JobRun(None, None)
        return
    all_tags = {
        "traindyn.kind": "job",
        "rule": os.environ.get("TRAINDYN_RULE", stage),
        "stage": stage,
        "run_id": name,
        "wildcards": json.dumps(tags, sort_keys=True),
        "config_hash": config_hash,
        "git_commit": git_commit(),
        **{f"wildcard.{k}": str(v) for k, v in tags.items()},
    }
    parent = os.environ.get(PARENT_ENV)
    if parent:
        all_tags["mlflow.parentRunId"] = parent
    if stage in cfg.defer and record_dir is not None:
        from .records import RECORD, JobRecord

        record = JobRecord(Path(record_dir) / RECORD, f"{stage}:{name}", all_tags)
        try:
            yield record
        except BaseException:
            record.save("FAILED")
            raise
        record.save("FINISHED")
        return
    client = _client(cfg.uri)
    exp = _experiment_id(client, cfg)
    run = _retry(client.create_run, exp, run_name=f"{stage}:{name}", tags=all_tags)
    job = JobRun(client, run.info.run_id, run.info.artifact_uri)
    try:
        yield job
    except BaseException:
        _retry(client.set_terminated, job.run_id, "FAILED")
        raise
    _retry(client.set_terminated, job.run_id, "FINISHED")
