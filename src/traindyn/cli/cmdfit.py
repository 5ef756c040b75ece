"""`traindyn cmdfit`: fit CMD, PCA and DMD to one run's trajectory and evaluate its weights."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..config import Config

NAME = "cmdfit"
HELP = "fit CMD (post hoc), PCA and DMD to a cmd-study run's trajectory; evaluate SGD/EMA/SWA/CMD weights"
EPILOG = """examples:
  traindyn train --study cmd --run mlp-sp-w128-d2-lr0.1-s0
  traindyn cmdfit --run mlp-sp-w128-d2-lr0.1-s0
  traindyn cmdfit --run mlp-sp-w128-d2-lr0.1-s0 cmd.k=2000 cmd.modes_sweep='[1,2,4,8,16,32]'
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this stage's options."""
    parser.add_argument("--run", required=True, help="the run's id (traindyn train --study cmd --list)")
    parser.add_argument("--run-dir", help="default results/runs/cmd/RUN")
    parser.add_argument("--data-dir", help="prepared dataset (default results/data/DATASET)")


def run(args: argparse.Namespace, cfg: Config) -> int:
    """Fit and evaluate the run; track the job with its headline numbers."""
    from ..cmd.evaluate import fit_run
    from ..studies import run_spec
    from ..track import job_run

    spec = run_spec(cfg.raw, "cmd", args.run)
    run_dir = Path(args.run_dir or f"results/runs/cmd/{spec.run}")
    final = run_dir / "final.json"
    if not final.is_file():
        raise FileNotFoundError(f"{final} is missing: train the run first (traindyn train --study cmd --run {spec.run})")
    if json.loads(final.read_text())["spec"] != spec.to_dict():
        raise ValueError(f"{final} was trained with another spec than this config's: retrain {spec.run}")
    data_dir = Path(args.data_dir or f"results/data/{spec.dataset}")
    # Deferred like training: a record in RUN/cmdfit/ that `traindyn aggregate --study cmd` imports.
    record_dir = run_dir / "cmdfit"
    record_dir.mkdir(exist_ok=True)
    with job_run(cfg.tracking, NAME, spec.run, {"study": "cmd", "run": spec.run}, cfg.hash,
                 record_dir=record_dir) as job:  # fmt: skip
        job.log_params({k: v for k, v in cfg.raw["cmd"].items() if not isinstance(v, dict | list)})
        out = fit_run(spec, data_dir, run_dir, cfg.raw["cmd"])
        job.log_metrics({f"{m}_{k}": v for m, ev in out["eval"].items() for k, v in ev.items()})
        if "online_vs_posthoc_max_abs_diff" in out:
            job.log_metrics({"online_vs_posthoc_max_abs_diff": out["online_vs_posthoc_max_abs_diff"]})
        job.log_artifact(run_dir / "cmdfit.json")
    accs = ", ".join(f"{m} {ev['test_acc']:.4f}" for m, ev in out["eval"].items())
    print(f"{spec.run}: test accuracy {accs or 'n/a (diverged)'}")
    return 0
