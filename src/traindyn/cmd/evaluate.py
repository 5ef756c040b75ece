"""One run's CMD stage: fit its trajectory, compare with PCA and DMD, evaluate weights on val and test.

Writes, in the run's folder (each atomically): ``cmdfit.json`` (accuracies, losses, online
vs post-hoc agreement, timings), ``cmd_errors.parquet`` (method, time-varying dimensions,
stored numbers, relative error on the fitted window and, fitted on the first half, on the
held-out second half), ``cmd_examples.parquet`` (a few single-weight
trajectories: SGD, CMD, PCA, DMD) and ``cmd_corr.parquet`` (the sampled |corr| matrix,
ordered by mode, subsampled for the figure).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..data import load_images, load_tokens, read_manifest
from ..train import RunData, RunSpec, Trajectory, build, make_loss, trajectory_dir
from .baselines import (
    DMDFit,
    PCAFit,
    cmd_error,
    dmd_fit,
    ema_weights,
    gram,
    heldout_errors,
    pca_fit,
    swa_weights,
)
from .fit import assign_and_fit, fit_cmd

__all__ = ["eval_sets", "evaluate_weights", "fit_run"]

CORR_SIDE = 160  # sampled parameters shown in the |corr| figure


def eval_sets(spec: RunSpec, data_dir: Path, n: int, device: torch.device) -> dict[str, tuple]:
    """Fixed val and test subsets of ``n`` examples (windows of ``spec.context`` tokens for text)."""
    manifest = read_manifest(data_dir)
    out = {}
    for split, seed in (("val", 2), ("test", 3)):
        gen = torch.Generator().manual_seed(seed)
        if manifest["kind"] == "text":
            tokens = load_tokens(data_dir, split)[0]
            starts = torch.randint(0, len(tokens) - spec.context - 1, (n,), generator=gen)
            seq = tokens[starts[:, None] + torch.arange(spec.context + 1)]  # (n, T+1)
            out[split] = (seq[:, :-1].to(device), seq[:, 1:].to(device))
        else:
            x, y = load_images(data_dir, split)
            idx = torch.randperm(len(y), generator=gen)[: min(n, len(y))]
            out[split] = (x[idx].to(device), y[idx].to(device))
    return out


@torch.no_grad()
def evaluate_weights(model: torch.nn.Module, traj: Trajectory, vector: np.ndarray, sets: dict, loss_fn,
                     chunk: int = 512) -> dict[str, float]:  # fmt: skip
    """Loss and accuracy of the model with trainable weights ``vector`` (N,) on every set."""
    traj.load_into(model, vector)
    model.eval()
    out = {}
    for split, (x, y) in sets.items():
        total, correct, count = 0.0, 0, 0
        for i in range(0, len(x), chunk):
            logits = model(x[i : i + chunk])
            yb = y[i : i + chunk]
            total += float(loss_fn(logits, yb)) * len(yb)
            correct += int((logits.argmax(-1) == yb).sum())
            count += len(yb)
        per = y.shape[1] if y.dim() > 1 else 1
        out[f"{split}_loss"], out[f"{split}_acc"] = total / count, correct / (count * per)
    return out


def _errors(w: np.ndarray, offsets: np.ndarray, cfg: dict[str, Any], seed: int) -> tuple[list, dict]:
    t, n = w.shape
    h, _ = gram(w, centre=False)
    pca = pca_fit(w)
    variance = float(pca.eig.sum())
    rows, fits = [], {}
    for m in cfg["modes_sweep"]:
        fit = fit_cmd(w, offsets, cfg["k"], m, seed)
        fits[m] = fit
        rows.append({"method": "cmd", "dims": m, "modes_found": fit.n_modes,
                     "stored": fit.stored_numbers(), "error": cmd_error(w, fit)})  # fmt: skip
        rows.append({"method": "pca", "dims": m, "modes_found": m,
                     "stored": PCAFit.stored_numbers(n, t, m), "error": pca.error(m)})  # fmt: skip
        dmd = dmd_fit(h, m)
        rows.append({"method": "dmd", "dims": m, "modes_found": dmd.rank,
                     "stored": DMDFit.stored_numbers(n, dmd.rank), "error": dmd.error(h, variance)})  # fmt: skip
    for row in rows:
        row["window"] = "fit"
    # Extrapolation: fit on the first half, measure on the second.
    split = t // 2
    pca_first = pca_fit(w[:split])
    for m in [m for m in cfg["modes_sweep"] if m <= split - 2]:
        first = fit_cmd(w, offsets, cfg["k"], m, seed, stop=split)
        errs = heldout_errors(w, first, pca_first, dmd_fit(h[:split, :split], m), split, m)
        rows += [{"method": k, "dims": m, "modes_found": first.n_modes if k == "cmd" else m, "window": "heldout",
                  "stored": {"cmd": first.stored_numbers(), "pca": PCAFit.stored_numbers(n, split, m),
                             "dmd": DMDFit.stored_numbers(n, m)}[k], "error": v} for k, v in errs.items()]  # fmt: skip
    return rows, {"fits": fits, "pca": pca, "h": h}


def _examples(w: np.ndarray, traj: Trajectory, fit, pca: PCAFit, dmd: DMDFit, m: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    candidates = np.setdiff1d(np.flatnonzero(fit.labels < min(3, fit.n_modes)), fit.refs)
    idx = np.sort(rng.choice(candidates, min(3, len(candidates)), replace=False))
    series = {"sgd": np.asarray(w[:, idx], dtype=np.float64),
              "cmd": fit.a[idx] * fit.ref_traj[:, fit.labels[idx]] + fit.b[idx],
              "pca": pca.reconstruct(w, m, idx), "dmd": dmd.reconstruct(w, idx)}  # fmt: skip
    return pd.DataFrame([{"step": int(s), "param": int(i), "mode": int(fit.labels[i]), "method": k, "value": float(v)}
                         for k, vals in series.items() for row, s in enumerate(traj.steps)
                         for i, v in zip(idx, vals[row], strict=True)])  # fmt: skip


def _corr_table(fit) -> pd.DataFrame:
    order = np.argsort(fit.sample_labels, kind="stable")
    pick = order[np.linspace(0, len(order) - 1, min(CORR_SIDE, len(order))).astype(int)]
    c = fit.corr[np.ix_(pick, pick)]
    i, j = np.meshgrid(np.arange(len(pick)), np.arange(len(pick)), indexing="ij")
    return pd.DataFrame({"i": i.ravel(), "j": j.ravel(), "corr": c.ravel(),
                         "mode_i": fit.sample_labels[pick][i.ravel()]})  # fmt: skip


def _write(path: Path, table: pd.DataFrame | dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    if isinstance(table, dict):
        tmp.write_text(json.dumps(table, indent=2))
    else:
        table.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def fit_run(spec: RunSpec, data_dir: str | Path, run_dir: str | Path, cfg: dict[str, Any],
            device: torch.device | None = None) -> dict[str, Any]:  # fmt: skip
    """Fit and evaluate one finished run of the cmd study (see the module docstring).

    SGD and sweep runs get the full comparison; P-SGD and embedded runs only the
    evaluation of their end point (and, for embedded runs, the frozen share).

    Args:
        spec: The run's spec.
        data_dir: Its prepared dataset.
        run_dir: Its folder (with ``trajectory/`` and, for SGD runs, ``cmd_online.npz``).
        cfg: The resolved ``cmd`` section.
        device: Defaults to CPU (the fits are numpy).

    Returns:
        The content of ``cmdfit.json``.
    """
    device = device or torch.device("cpu")
    run_dir, data_dir = Path(run_dir), Path(data_dir)
    final = json.loads((run_dir / "final.json").read_text())
    traj = Trajectory(trajectory_dir(run_dir))
    kind = spec.extra["kind"]
    out: dict[str, Any] = {"run": spec.run, "kind": kind, "model_key": spec.extra["model_key"],
                           "base_run": spec.extra["base_run"], "arch": spec.model["arch"], "param": spec.param,
                           "width": spec.model["width"], "seed": spec.seed, "n_params": traj.n_params,
                           "snapshots": len(traj), "diverged": final["diverged"], "eval": {}}  # fmt: skip
    if final["diverged"] or len(traj) < cfg["warmup"] + 2:
        _write(run_dir / "cmdfit.json", out)
        return out
    w = traj.weights
    data = RunData(spec, data_dir, device)
    model, _ = build(spec, data.model_dims(), device)
    sets, loss_fn = eval_sets(spec, data_dir, cfg["eval_examples"], device), make_loss(spec.loss)
    weights = {"sgd": np.asarray(w[-1], dtype=np.float64)}
    if kind == "embedded":
        emb = np.load(run_dir / "cmd_embedded.npz")
        out["embedded_fraction"] = float(emb["frozen"].mean()) if "frozen" in emb else 0.0
        out["max_fraction"] = spec.extra["cmd"]["max_fraction"]
    if kind in ("sgd", "sweep"):
        start = time.perf_counter()
        rows, parts = _errors(w, traj.offsets, cfg, spec.seed)
        out["fit_seconds_all_m"] = time.perf_counter() - start
        _write(run_dir / "cmd_errors.parquet", pd.DataFrame(rows).assign(run=spec.run))
        fit = parts["fits"][cfg["modes"]]
        out["modes_found"] = fit.n_modes
        if kind == "sgd":
            start = time.perf_counter()
            fit_cmd(w, traj.offsets, cfg["k"], cfg["modes"], spec.seed)
            out["posthoc_fit_seconds"] = time.perf_counter() - start
            weights["cmd_posthoc"] = fit.weights_at(fit.ref_traj[-1])
            weights["ema"] = ema_weights(w, cfg["ema_decay"])
            weights["swa"] = swa_weights(w, cfg["swa_start"])
            online = np.load(run_dir / "cmd_online.npz")
            refs, labels = online["refs"], online["labels"]
            _, a_post, b_post = assign_and_fit(w, refs, labels=labels)
            out["online_vs_posthoc_max_abs_diff"] = float(max(np.abs(online["a"] - a_post).max(),
                                                              np.abs(online["b"] - b_post).max()))  # fmt: skip
            weights["cmd_online"] = online["a"] * np.asarray(w[-1, refs], dtype=np.float64)[labels] + online["b"]
            updates = pd.read_parquet(run_dir / "cmd_online.parquet")
            steady = updates[~updates["warmup"]]
            out["online"] = {"state_floats": int(online["state_floats"]), "trajectory_floats": int(w.size),
                             "update_seconds_per_snapshot": float(steady["seconds"].sum() / max(1, steady["snapshots"].sum())),
                             "warmup_seconds": float(updates.loc[updates["warmup"], "seconds"].sum())}  # fmt: skip
            dmd = dmd_fit(parts["h"], min(cfg["modes"], len(w) - 1))
            _write(run_dir / "cmd_examples.parquet",
                   _examples(w, traj, fit, parts["pca"], dmd, cfg["modes"], spec.seed).assign(run=spec.run))
            _write(run_dir / "cmd_corr.parquet", _corr_table(fit).assign(run=spec.run))
    for method, vector in weights.items():
        out["eval"][method] = evaluate_weights(model, traj, vector, sets, loss_fn)
    _write(run_dir / "cmdfit.json", out)
    return out
