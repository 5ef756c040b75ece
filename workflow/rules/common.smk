# Shared by every rule: config validation, the resolved config file that jobs read, the
# `traindyn` command, and the MLflow parent run of this invocation.
import os
import re
import shutil
import sys
from pathlib import Path

import yaml

from traindyn.config import ConfigError, config_hash, resolve


def _validated(raw):
    try:
        return resolve(raw)
    except ConfigError as err:
        # The message names every bad key; a WorkflowError would add a stack of file lines.
        print(f"snakemake: {err}", file=sys.stderr)
        sys.exit(1)


# Validate before any job; defaults come only from the schema.
config.update(_validated(dict(config)))

# Jobs read the merged, validated config from one file, rewritten only when it changes. Rules
# take it as an ancient() input (its mtime triggers nothing) and list the config sections they
# use as params, so a change reruns exactly the jobs it affects.
CONFIG_HASH = config_hash(config)
RESOLVED_CONFIG = "results/config/resolved.yaml"
_text = yaml.safe_dump(config, sort_keys=True)
if not Path(RESOLVED_CONFIG).exists() or Path(RESOLVED_CONFIG).read_text() != _text:
    Path(RESOLVED_CONFIG).parent.mkdir(parents=True, exist_ok=True)
    _tmp = Path(f"{RESOLVED_CONFIG}.tmp-{os.getpid()}")
    _tmp.write_text(_text)
    _tmp.replace(RESOLVED_CONFIG)


# Never list MLflow credentials here: Snakemake writes the values of declared variables into
# job commands (`export VAR=value && ...`). Jobs inherit them from the environment instead.
envvars:
    "PATH",


# The `traindyn` of the Python running Snakemake, unless a conda env puts its own first.
if shutil.which("traindyn") is None:
    os.environ["PATH"] = (
        os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]
    )
ENV = "../envs/traindyn.yaml"
REPO = Path(workflow.basedir)


def notebook(name):
    """The source of figure notebook ``name`` (absolute: the working directory may differ)."""
    return str(REPO / "notebooks" / f"{name}.py")


def figure_files(stem):
    """The files of one figure in every configured format."""
    return [f"results/figures/{stem}.{fmt}" for fmt in config["figures"]["formats"]]


def one_of(ids):
    """A wildcard constraint matching exactly these run ids (a mistyped id: "no rule to produce")."""
    return "|".join(re.escape(i) for i in ids) or "(?!)"


def log_of(stage, name):
    """Log file of one job: results/logs/{stage}/{name}.log."""
    return f"results/logs/{stage}/{name}.log"


# study -> the outputs whose jobs write deferred MLflow records (each study file adds its
# own); workflow/rules/tracking.smk imports them, one job per study.
TRACKED = {}


# What onstart hands to onsuccess / onerror: the prefork server and the parent MLflow run.
INVOCATION = {}


onstart:
    from traindyn.config import Config
    from traindyn.prefork import start_server, stop_server
    from traindyn.track import TrackingAuthError, start_invocation

    # Local jobs start from a process with torch already imported (see traindyn.prefork);
    # on a cluster each job starts its own Python.
    if getattr(workflow.executor_plugin, "name", None) == "local":
        INVOCATION["prefork"] = start_server()
    _cfg = Config.from_dict(config)
    # On an MLflow server with authentication, this also loads the credentials named by
    # TRAINDYN_MLFLOW_CREDENTIALS into this process's environment, which every job inherits.
    try:
        INVOCATION["run_id"] = start_invocation(
            _cfg.tracking,
            name=f"snakemake:{CONFIG_HASH}",
            tags={
                "config_hash": CONFIG_HASH,
                "targets": " ".join(map(str, workflow.dag.targetfiles)),
            },
        )
    except TrackingAuthError as err:
        stop_server(INVOCATION.get("prefork"))
        print(f"snakemake: {err}", file=sys.stderr)
        sys.exit(1)


onsuccess:
    from traindyn.config import Config
    from traindyn.prefork import stop_server
    from traindyn.track import end_invocation

    stop_server(INVOCATION.get("prefork"))
    end_invocation(
        Config.from_dict(config).tracking, INVOCATION.get("run_id"), ok=True
    )


onerror:
    from traindyn.config import Config
    from traindyn.prefork import stop_server
    from traindyn.track import end_invocation

    stop_server(INVOCATION.get("prefork"))
    end_invocation(
        Config.from_dict(config).tracking, INVOCATION.get("run_id"), ok=False
    )
