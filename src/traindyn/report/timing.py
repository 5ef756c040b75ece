"""``python -m traindyn.report.timing START``: the wall time of a fresh ``make figures`` as JSON.

``make figures`` calls it when it started from a results folder without any study's
analysis, so the time covers data preparation, every study, tracking and figures; ``traindyn
report`` copies the file into the docs, where the quick start quotes it.
"""

from __future__ import annotations

import json
import sys
import time

from .common import provenance


def timing(start: float, end: float, cores: str) -> dict:
    """The run's wall time with its provenance; ``cores`` as given to Snakemake."""
    return {"wall_seconds": round(end - start, 1), "snakemake_cores": cores, "provenance": provenance()}


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m traindyn.report.timing START_EPOCH_SECONDS CORES")
    print(json.dumps(timing(float(sys.argv[1]), time.time(), sys.argv[2]), indent=2))
