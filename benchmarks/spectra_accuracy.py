"""Accuracy of the pipeline's own spectra against float64 references, beside ARPACK; prints JSON.

``bench_spectra.py`` compares solvers on 28 states of four width-512 runs. This checks every
number the scaling study's spectra figures take: each run of ``config.yaml``'s scaling study
that measures spectra is trained exactly as the pipeline trains it (``traindyn.train.train``
with the study's ``SpectraCallback``), the weights (and, for the Adam-trained GPT runs, Adam's
denominator) are kept at every measured step, and each top eigenvalue the callback wrote to
``spectra.parquet`` is compared with a float64 Lanczos reference (``spectra_workload.reference``,
tol 1e-12) of the same operator at the same weights: Hessian, Gauss-Newton and NTK of the MLP
runs, Hessian and Adam-preconditioned Hessian (P^-1/2 H P^-1/2) of the GPT runs. Beside it,
SciPy's ``eigsh`` (ARPACK) on the same Hessian products, warm-started from its previous
eigenvector, at one setting for the whole study (default ncv 8, tol 1e-2: bench_spectra.py's
best single setting on its 28 states); the ratio of products is ARPACK's over ours.

A Ritz value is a lower bound on lambda_1, so an error above the target is a miss: the
returned value is an interior eigenvalue or a mix of a close pair.

``--seeds`` replaces the seeds of the measured runs (``scaling.sharpness.seeds`` and
``scaling.gpt_sweep.seeds``, 0-2 in config.yaml) by another set, e.g. ``3,4``: the same study
at states that neither the default run of this benchmark nor the unit tests use.

Usage: python benchmarks/spectra_accuracy.py [--jobs 2] [--runs 'sp-w512*']
       [--measures hessian,gn,ntk,preconditioned] [--seeds 3,4]
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import json
import math
import sys
import tempfile
import time
from multiprocessing import get_context
from pathlib import Path

import pandas as pd
import torch
from spectra_workload import _Capture, arpack, reference, traindyn_scipy_operator

from traindyn.config import load_config
from traindyn.data import prepare_dataset
from traindyn.scaling.grid import scaling_runs
from traindyn.spectra.callback import SpectraCallback
from traindyn.train.loop import RunData, build, make_loss, train

ROOT = Path(__file__).resolve().parents[1]
TARGET = 1e-3


def spectra_runs(pattern: str, seeds: list[int] | None = None) -> list:
    """The scaling study's runs that measure spectra, matching ``pattern``; with ``seeds``, the
    same runs at those seeds instead of the configured ones (``--seeds``)."""
    cfg = load_config([ROOT / "config.yaml"])
    scaling = cfg.raw["scaling"]
    if seeds is not None:
        depth_seeds = scaling["depth_sweep"].get("seeds") or scaling["seeds"]
        scaling = {**scaling, "seeds": sorted(set(scaling["seeds"]) | set(seeds)),
                   "depth_sweep": {**scaling["depth_sweep"], "seeds": sorted(set(depth_seeds) | set(seeds))},
                   "sharpness": {**scaling["sharpness"], "seeds": list(seeds)},
                   "gpt_sweep": {**scaling["gpt_sweep"], "seeds": list(seeds)}}
    runs = [s for s in scaling_runs(scaling).values()
            if "spectra" in s.extra and fnmatch.fnmatch(s.run, pattern)]
    return sorted(runs, key=lambda s: (-s.model.get("width", 0), s.run))  # slowest first


def check_run(job: tuple) -> list[dict]:
    spec, data_root, measures, ncv, arpack_tol = job
    torch.set_num_threads(1)
    data_dir = Path(data_root) / spec.dataset
    settings = spec.extra["spectra"]
    every = settings["every"]
    capture = _Capture(every)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as run_dir:
        train(dataclasses.replace(spec, checkpoint_every=0), data_dir, run_dir,
              callbacks=[SpectraCallback(**settings, seed=spec.seed), capture],
              device=torch.device("cpu"), progress=False)
        table = pd.read_parquet(Path(run_dir) / "spectra.parquet")
    t_train = time.perf_counter() - t0
    data = RunData(spec, data_dir, torch.device("cpu"))
    model, _ = build(spec, data.model_dims(), torch.device("cpu"))
    loss_fn, batch = make_loss(spec.loss), data.fixed_batch
    top = table[table["rank"] == 0].set_index(["step", "measure"])
    rows, v_arpack = [], None
    for step in sorted(capture.states):
        model.load_state_dict(capture.states[step])
        for measure in measures:
            if (step, measure) not in top.index:
                continue
            ours = top.loc[(step, measure)]
            row = {"run": spec.run, "step": int(step), "measure": measure, "ours": float(ours["eigenvalue"]),
                   "ours_products": int(ours["n_matvec"]), "ours_converged": bool(ours["converged"])}
            if not math.isfinite(row["ours"]):
                rows.append(row)  # a diverged state: no reference
                if measure == "hessian":
                    v_arpack = None
                continue
            extra = ({"preconditioner": capture.preconditioners[step]} if measure == "preconditioned" else
                     {"n_ntk": settings.get("n_ntk", 64), "ntk_kernel": settings.get("ntk_kernel", "class_sum")})
            row["ref"], row["ref2"] = reference(model, loss_fn, batch, measure, **extra)
            row["ours_err"] = abs(row["ours"] - row["ref"]) / abs(row["ref"])
            if measure == "hessian":
                value, v_arpack, n = arpack(traindyn_scipy_operator(model, loss_fn, batch), ncv=ncv,
                                            tol=arpack_tol, v0=v_arpack, seed=step)
                row.update(arpack=value, arpack_products=n,
                           arpack_err=abs(value - row["ref"]) / abs(row["ref"]))
            rows.append(row)
    print(f"[spectra_accuracy] {spec.run}: {len(rows)} measurements, train+callback {t_train:.1f} s",
          file=sys.stderr, flush=True)
    return rows


def summarise(rows: list[dict]) -> dict:
    d = pd.DataFrame(rows)
    d = d[d["ref"].notna()] if "ref" in d else d.iloc[:0]
    out = {}
    for measure, g in d.groupby("measure"):
        entry = {"measurements": len(g), "ours_products": int(g["ours_products"].sum()),
                 "ours_misses": int((g["ours_err"] > TARGET).sum()),
                 "ours_worst_rel_err": float(g["ours_err"].max()),
                 "ours_unconverged": int((~g["ours_converged"]).sum())}
        if measure == "hessian" and "arpack" in g:
            entry.update(arpack_products=int(g["arpack_products"].sum()),
                         arpack_misses=int((g["arpack_err"] > TARGET).sum()),
                         arpack_worst_rel_err=float(g["arpack_err"].max()),
                         products_arpack_over_ours=float(g["arpack_products"].sum() / g["ours_products"].sum()))
        misses = g[g["ours_err"] > TARGET]
        entry["ours_missed"] = misses[["run", "step", "ours", "ref", "ref2", "ours_err"]].to_dict("records")
        out[measure] = entry
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--runs", default="*", help="fnmatch pattern over run names")
    parser.add_argument("--measures", default="hessian,gn,ntk,preconditioned",
                        help="those a run measures are checked (the GPT runs: hessian, preconditioned)")
    parser.add_argument("--seeds", default=None,
                        help="comma-separated seeds replacing the measured runs' (e.g. 3,4: states the tests do not use)")
    parser.add_argument("--ncv", type=int, default=8)
    parser.add_argument("--arpack-tol", type=float, default=1e-2)
    parser.add_argument("--data-dir", default=None, help="where prepared datasets are (or go)")
    parser.add_argument("--rows", default=None, help="also write every measurement to this parquet file")
    args = parser.parse_args()
    t0 = time.perf_counter()
    cfg = load_config([ROOT / "config.yaml"])
    data_root = Path(args.data_dir) if args.data_dir else Path(tempfile.mkdtemp())
    seeds = [int(x) for x in args.seeds.split(",")] if args.seeds else None
    runs = spectra_runs(args.runs, seeds)
    for name in sorted({s.dataset for s in runs}):
        if not (data_root / name / "manifest.json").is_file():
            prepare_dataset(name, cfg.data, data_root / name)
    measures = args.measures.split(",")
    jobs = [(spec, str(data_root), measures, args.ncv, args.arpack_tol) for spec in runs]
    with get_context("spawn").Pool(args.jobs) as pool:
        rows = [r for run_rows in pool.imap_unordered(check_run, jobs) for r in run_rows]
    if args.rows:
        pd.DataFrame(rows).to_parquet(args.rows, index=False)
    print(json.dumps({"runs": len(runs), "seeds": sorted({s.seed for s in runs}), "target_rel_err": TARGET,
                      "arpack": {"ncv": args.ncv, "tol": args.arpack_tol},
                      "by_measure": summarise(rows), "total_s": time.perf_counter() - t0}, indent=2))


if __name__ == "__main__":
    main()
