# Shared by every rule: config validation, the resolved config file that jobs read, the
# `traindyn` command, and the MLflow parent run of this invocation.
import os
import shutil
import sys
from pathlib import Path

import yaml

from traindyn.config import ConfigError, config_hash, resolve


def _validated(raw):
    try:
        return resolve(raw)
    except ConfigError as err:
        raise WorkflowError(str(err)) from None


# Validate before any job; defaults come only from the schema.
config.update(_validated(dict(config)))

# Jobs read the merged, validated config from a content-addressed file, so the same command
# reruns a job by hand and a changed config never rewrites a file another job is reading.
CONFIG_HASH = config_hash(config)
RESOLVED_CONFIG = f"results/config/resolved-{CONFIG_HASH}.yaml"
if not Path(RESOLVED_CONFIG).exists():
    Path(RESOLVED_CONFIG).parent.mkdir(parents=True, exist_ok=True)
    _tmp = Path(f"{RESOLVED_CONFIG}.tmp-{os.getpid()}")
    _tmp.write_text(yaml.safe_dump(config, sort_keys=True))
    _tmp.replace(RESOLVED_CONFIG)

# The `traindyn` of the Python running Snakemake, unless a conda env puts its own first.
if shutil.which("traindyn") is None:
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]
CONFIG_ARGS = f"--config {RESOLVED_CONFIG}"
ENV = "../envs/traindyn.yaml"


def log_of(stage, name):
    """Log file of one job: results/logs/{stage}/{name}.log."""
    return f"results/logs/{stage}/{name}.log"


onstart:
    from traindyn.config import Config
    from traindyn.track import start_invocation

    _cfg = Config.from_dict(config)
    INVOCATION = start_invocation(
        _cfg.tracking,
        name=f"snakemake:{CONFIG_HASH}",
        tags={"config_hash": CONFIG_HASH, "targets": " ".join(map(str, workflow.dag.targetfiles))},
    )


onsuccess:
    from traindyn.config import Config
    from traindyn.track import PARENT_ENV, end_invocation

    end_invocation(Config.from_dict(config).tracking, os.environ.get(PARENT_ENV), ok=True)


onerror:
    from traindyn.config import Config
    from traindyn.track import PARENT_ENV, end_invocation

    end_invocation(Config.from_dict(config).tracking, os.environ.get(PARENT_ENV), ok=False)
