"""`traindyn data`: prepare one dataset into results/data/{dataset}/."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import Config

NAME = "data"
HELP = "prepare one dataset: deterministic splits, tensors, manifest.json, overview tables"
EPILOG = """examples:
  traindyn data --dataset mnist
  traindyn data --dataset fashion-mnist data.fashion_mnist_dir=/data/fmnist
  traindyn data --dataset cifar10 --config config.yaml data.cifar10_dir=~/cifar-10-batches-py
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this stage's options."""
    from ..config import schema

    names = schema()["properties"]["data"]["properties"]["datasets"]["items"]["enum"]
    parser.add_argument("--dataset", required=True, choices=names)
    parser.add_argument("--out", default=None, help="output folder (default results/data/DATASET)")


def run(args: argparse.Namespace, cfg: Config) -> int:
    """Prepare the dataset and track the job."""
    from ..data import prepare_dataset
    from ..track import job_run

    out = Path(args.out or f"results/data/{args.dataset}")
    with job_run(cfg.tracking, NAME, args.dataset, {"dataset": args.dataset}, cfg.hash) as job:
        job.log_params({"data": cfg.raw["data"], "dataset": args.dataset})
        # A DataSourceError (a ValueError naming the file) is printed by `traindyn` main.
        manifest = prepare_dataset(args.dataset, cfg.data, out)
        job.log_metrics({f"size_{k}": v for k, v in manifest["sizes"].items()})
        job.log_artifact(out / "manifest.json")
    print(f"{args.dataset}: {manifest['sizes']} -> {out}")
    return 0
