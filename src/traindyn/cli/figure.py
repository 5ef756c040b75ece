"""`traindyn figure`: execute one figure notebook with papermill on tables the pipeline wrote."""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import yaml

from ..config import Config
from ..plotting import FIGURE_LOG_ENV

NAME = "figure"
HELP = "execute a figure notebook (jupytext py:percent) with papermill; figures land in --figures-dir"
EPILOG = """examples:
  traindyn figure notebooks/data_overview.py --executed results/notebooks/data_overview.ipynb \\
      -p data_dirs='[results/data/mnist]'
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this stage's options."""
    parser.add_argument("notebook", help="the notebook source, e.g. notebooks/data_overview.py")
    parser.add_argument("--executed", required=True, help="where the executed .ipynb goes")
    parser.add_argument("--figures-dir", default="results/figures")
    parser.add_argument("-p", "--param", action="append", default=[], metavar="name=value",
                        help="notebook parameter (value parsed as YAML); repeatable")  # fmt: skip


def run(args: argparse.Namespace, cfg: Config) -> int:
    """Render the notebook and track the job, logging its figures as artifacts."""
    from ..figures import render_notebook
    from ..track import job_run

    params = {"figures_dir": args.figures_dir, "formats": cfg.figures.formats, "dpi": cfg.figures.dpi}
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"notebook parameter {item!r} is not of the form name=value")
        params[key] = yaml.safe_load(value)
    name = Path(args.notebook).stem
    with job_run(cfg.tracking, NAME, name, {"figure": name}, cfg.hash) as job:
        job.log_params(params)
        # The kernel inherits this variable; save_figure lists every file it writes there.
        with tempfile.NamedTemporaryFile("r", suffix=".txt") as written:
            os.environ[FIGURE_LOG_ENV] = written.name
            executed = render_notebook(args.notebook, args.executed, params)
            job.log_artifact(executed)
            for path in sorted(set(written.read().split())):
                if path.endswith(".png"):
                    job.log_artifact(path, "figures")
    return 0
