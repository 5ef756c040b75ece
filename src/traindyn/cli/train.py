"""`traindyn train`: train one run of a study, found by its readable id."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import Config

NAME = "train"
HELP = "train one run of a study (resumes from its checkpoint if one is there)"
EPILOG = """examples:
  traindyn train --study scaling --run mup-w128-d2-lr1-s0
  traindyn train --study scaling --run ntk-w512-d2-lr10-s1 scaling.training.steps=2000
  traindyn train --study scaling --list          # every run id of the study
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this stage's options."""
    from ..studies import STUDIES

    parser.add_argument("--study", required=True, choices=list(STUDIES))
    parser.add_argument("--run", help="the run's id, e.g. mup-w128-d2-lr1-s0")
    parser.add_argument("--list", action="store_true", help="print the study's run ids and exit")
    parser.add_argument("--out", help="run folder (default results/runs/STUDY/RUN)")
    parser.add_argument("--data-dir", help="prepared dataset (default results/data/DATASET)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--snapshot-every", type=int, default=0,
                        help="keep the weights every N steps in RUN/trajectory/ (for traindyn spectra)")  # fmt: skip


def run(args: argparse.Namespace, cfg: Config) -> int:
    """Train the run and track it (deferred to a record when configured)."""
    import dataclasses

    import pandas as pd

    from ..studies import callbacks as study_callbacks
    from ..studies import run_spec, study_runs
    from ..track import job_run
    from ..train import default_device, train

    if args.list:
        print("\n".join(study_runs(cfg.raw, args.study)))
        return 0
    if not args.run:
        raise ValueError("--run is required (or --list to see the run ids)")
    spec = run_spec(cfg.raw, args.study, args.run)
    if args.snapshot_every:
        spec = dataclasses.replace(spec, snapshot_every=args.snapshot_every)
    out = Path(args.out or f"results/runs/{args.study}/{spec.run}")
    data_dir = Path(args.data_dir or f"results/data/{spec.dataset}")
    out.mkdir(parents=True, exist_ok=True)
    callbacks = study_callbacks(args.study, spec)
    tags = {"study": args.study, "run": spec.run}
    with job_run(cfg.tracking, NAME, spec.run, tags, cfg.hash, record_dir=out) as job:
        job.log_params(spec.to_dict())
        final = train(spec, data_dir, out, callbacks=callbacks, device=default_device(),
                      progress=not args.no_progress)  # fmt: skip
        metrics = pd.read_parquet(out / "metrics.parquet")
        job.log_metric_rows(list(zip(metrics["metric"], metrics["value"], metrics["step"], strict=True)))
        job.set_tags({"diverged": final["diverged"], "device": final["device"]})
        job.log_artifact(out / "final.json")
    status = f"diverged at step {final['diverged_at']}" if final["diverged"] else (
        f"train loss {final['final_train_loss']:.4f}, val acc {final['final_val_acc']:.4f}")
    print(f"{spec.run}: {status} -> {out}")
    return 0

