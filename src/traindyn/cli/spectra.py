"""`traindyn spectra`: the training-time spectra of a finished run, from its weight trajectory."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import Config

NAME = "spectra"
HELP = "measure Hessian / Gauss-Newton / NTK top eigenvalues over a run's trajectory (post hoc)"
EPILOG = """examples:
  traindyn train --study scaling --run mup-w128-d2-lr10-s0 --snapshot-every 50
  traindyn spectra --study scaling --run mup-w128-d2-lr10-s0 --every 50 --measures hessian ntk
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this stage's options."""
    from ..spectra import MEASURES
    from ..studies import STUDIES

    parser.add_argument("--study", required=True, choices=list(STUDIES))
    parser.add_argument("--run", required=True, help="the run's id")
    parser.add_argument("--every", type=int, help="steps between measurements (default: scaling.sharpness.every)")
    parser.add_argument("--measures", nargs="+", choices=MEASURES, help="default: scaling.sharpness.measures")
    parser.add_argument("--run-dir", help="default results/runs/STUDY/RUN")
    parser.add_argument("--out", help="parquet to write (default RUN_DIR/spectra.parquet)")


def run(args: argparse.Namespace, cfg: Config) -> int:
    """Rebuild the run's model, load each trajectory row in order and measure it."""
    from ..runfiles import read_final
    from ..scaling import spectra_settings
    from ..spectra import SpectraCallback, spectra_over_snapshots
    from ..track import job_run
    from ..train import RunSpec

    run_dir = Path(args.run_dir or f"results/runs/{args.study}/{args.run}")
    # Names a missing, truncated or foreign final.json and the command that rewrites it.
    spec = RunSpec.from_dict(read_final(run_dir, args.study, args.run)["spec"])
    # What the run measured during training, else what the config's sharpness section says.
    settings = {**spectra_settings(cfg.raw["scaling"]), **spec.extra.get("spectra", {})}
    settings["every"] = args.every or settings["every"]
    settings["measures"] = args.measures or settings["measures"]
    callback = SpectraCallback(**settings, seed=spec.seed)
    with job_run(cfg.tracking, NAME, spec.run, {"study": args.study, "run": spec.run}, cfg.hash) as job:
        job.log_params(settings)
        table = spectra_over_snapshots(spec, f"results/data/{spec.dataset}", run_dir, callback, out=args.out)
        top = table[table["rank"] == 0]
        job.log_metric_rows([(f"lambda_max_{m}", v, s) for m, v, s
                             in zip(top["measure"], top["eigenvalue"], top["step"], strict=True)])  # fmt: skip
    print(f"{spec.run}: {len(table)} eigenvalues over {top['step'].nunique()} snapshots")
    return 0
