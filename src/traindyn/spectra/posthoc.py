"""Spectra after the fact: the training callback's measurements over a run's weight trajectory."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import torch

from ..train import (
    RunData,
    RunSpec,
    TrainState,
    Trajectory,
    build,
    default_device,
    lr_factor,
    make_loss,
    trajectory_dir,
)
from .callback import SpectraCallback

__all__ = ["spectra_over_snapshots"]


def spectra_over_snapshots(spec: RunSpec, data_dir: str | Path, run_dir: str | Path,
                           callback: SpectraCallback, device: torch.device | None = None,
                           out: str | Path | None = None) -> pd.DataFrame:  # fmt: skip
    """Measure the rows of a finished run's trajectory exactly as ``SpectraCallback`` does in training.

    The callback's rule applies unchanged: each measure by warm-started Lanczos, verified by a
    second run from a random start on the deflated operator (``traindyn.spectra.lanczos.lanczos``).

    The run must have been trained with ``snapshot_every`` dividing ``callback.every``; rows
    are visited in step order so that Lanczos warm starts follow the same sequence as
    during training (the tables then agree to solver tolerance). The learning rate in
    base-LR units is the one the optimizer had at that step. The trajectory keeps trainable
    parameters only: buffers (BatchNorm statistics) stay at their initial values.
    ``"preconditioned"`` needs Adam's state, which the trajectory does not keep.

    Args:
        spec: The run's spec (``final.json``'s ``spec``).
        data_dir: The prepared dataset.
        run_dir: The run's folder, with ``trajectory/``.
        callback: What to measure and how (its ``every`` selects the snapshots).
        device: Defaults to CUDA when available.
        out: Parquet file to write (default ``run_dir/spectra.parquet``).

    Returns:
        The long-format table (as the callback's ``spectra`` table, ``source="posthoc"``).

    Raises:
        FileNotFoundError: If the run kept no trajectory row at a step the callback measures.
        ValueError: If ``"preconditioned"`` is asked for.
    """
    if "preconditioned" in callback.measures:
        raise ValueError("measure 'preconditioned' needs Adam's second moments; snapshots keep weights only")
    device = device or default_device()
    run_dir = Path(run_dir)
    steps = list(range(0, spec.steps + 1, callback.every))
    hint = f"train with snapshot_every dividing {callback.every} (the run has snapshot_every={spec.snapshot_every})"
    try:
        traj = Trajectory(trajectory_dir(run_dir))
    except FileNotFoundError as err:
        raise FileNotFoundError(f"snapshots missing: {err}; {hint}") from None
    missing = sorted(set(steps) - set(traj.steps.tolist()))
    if missing:
        raise FileNotFoundError(f"{len(missing)} snapshots missing in {traj.path}, e.g. step {missing[0]}: {hint}")
    data = RunData(spec, Path(data_dir), device)
    model, optimizer = build(spec, data.model_dims(), device)
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    state = TrainState(model=model, optimizer=optimizer, loss_fn=make_loss(spec.loss), device=device,
                       run_dir=run_dir, base_lr=spec.lr, total_steps=spec.steps,
                       fixed_batch=data.fixed_batch)  # fmt: skip
    for step in steps:
        traj.load_into(model, traj.weights[traj.row(step)])
        state.step = step
        # The callback reads the LR of the step just taken (the schedule's value at step-1).
        state.lr_factor = lr_factor(spec, max(step - 1, 0)) if step else 1.0
        for group, lr in zip(optimizer.param_groups, base_lrs, strict=True):
            group["lr"] = lr * state.lr_factor
        callback.on_step_end(state, float("nan"))
    table = pd.DataFrame(state.tables["spectra"]).assign(run=spec.run, source="posthoc")
    path = Path(out) if out else run_dir / "spectra.parquet"
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    table.to_parquet(tmp, index=False)
    os.replace(tmp, path)
    return table
