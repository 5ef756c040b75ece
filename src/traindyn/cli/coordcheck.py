"""`traindyn coordcheck`: the mup-style coordinate check of the scaling study's model."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import Config

NAME = "coordcheck"
HELP = "activation size and its change after a few SGD steps, across widths, per parameterization"
EPILOG = """examples:
  traindyn coordcheck
  traindyn coordcheck scaling.coord_check.widths='[64, 256, 1024, 4096]'
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this stage's options."""
    parser.add_argument("--out", default="results/analysis/scaling/coord_check.parquet")
    parser.add_argument("--data-dir", help="prepared dataset (default results/data/DATASET)")


def run(args: argparse.Namespace, cfg: Config) -> int:
    """Run the coordinate check for every parameterization of the width sweep."""
    import pandas as pd
    import torch

    from ..data import load_images
    from ..models import build_model
    from ..param import Parameterization, coord_check
    from ..track import job_run

    sc = cfg.raw["scaling"]
    cc, ws = sc["coord_check"], sc["width_sweep"]
    x, y = load_images(Path(args.data_dir or f"results/data/{sc['dataset']}"), "train")
    in_dim = x[0].numel()

    def batch(seed):
        idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[: cc["batch_size"]]
        return x[idx], y[idx]

    frames = []
    with job_run(cfg.tracking, NAME, "scaling", {"study": "scaling"}, cfg.hash) as job:
        job.log_params(cc)
        for name in ws["parameterizations"]:
            param = Parameterization.from_name(name, min(cc["widths"]))

            def model(width, param=param):
                return build_model({"arch": "mlp", "width": width, "depth": ws["depth"],
                                    "in_dim": in_dim}, param)  # fmt: skip

            df = coord_check(model, cc["widths"], batch, steps=cc["steps"], lr=cc["lrs"][name],
                             seeds=cc["seeds"], loss=sc["training"]["loss"])  # fmt: skip
            frames.append(df.assign(param=name))
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        pd.concat(frames, ignore_index=True).to_parquet(tmp, index=False)
        tmp.replace(out)
        job.log_artifact(out)
    print(f"coordinate check -> {out}")
    return 0
