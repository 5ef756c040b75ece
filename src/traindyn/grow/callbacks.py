"""The lag study's hooks into the one training loop: grow from a base checkpoint, record l(k), save weights."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ..train.callbacks import Callback, TrainState

__all__ = ["GrowFromBase", "LagEval", "SaveWeights", "WEIGHTS", "choose_candidate"]

WEIGHTS = "weights.pt"  # a lag run's final weights (the input of the runs grown from it)


class SaveWeights(Callback):
    """Write ``run_dir/weights.pt`` at the end: spec, model state and (optionally) optimizer state.

    Args:
        spec: The run's spec (a dict), stored so a grown run knows its base's shape.
        optimizer: Also keep the optimizer state and parameter names (grown-moments ablation).
    """

    def __init__(self, spec: dict[str, Any], optimizer: bool = False) -> None:
        self.spec, self.optimizer = spec, optimizer

    def on_train_end(self, state: TrainState) -> None:
        """Save atomically (temp file, then rename): a half-written file is never taken as done."""
        out: dict[str, Any] = {"spec": self.spec,
                               "model": {k: v.detach().cpu() for k, v in state.model.state_dict().items()}}
        if self.optimizer:
            out["optimizer"] = state.optimizer.state_dict()
            out["param_names"] = [n for g in state.optimizer.param_groups for n in g["param_names"]]
        path = state.run_dir / WEIGHTS
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        torch.save(out, tmp)
        os.replace(tmp, path)


def choose_candidate(runs_dir: Path, candidates: dict[str, Any], lag: int) -> tuple[str, float]:
    """LAG's pick: the candidate run with the lowest held-out loss at ``lag`` steps.

    Args:
        runs_dir: The folder holding the candidates' run folders.
        candidates: Candidate run id -> its plan.
        lag: The lag k whose loss decides.

    Returns:
        ``(run id, its loss at k)``.

    Raises:
        FileNotFoundError: If a candidate has no ``lag.parquet``.
        ValueError: If a candidate did not record lag ``lag``.
    """
    losses = {}
    for run in candidates:
        path = runs_dir / run / "lag.parquet"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: the probe {run} has not finished; train it first")
        table = pd.read_parquet(path)
        row = table[table["lag"] == lag]
        if row.empty:
            raise ValueError(f"{path}: no loss at lag {lag} (has {sorted(table['lag'])})")
        losses[run] = float(row["val_loss"].iloc[0])
    best = min(losses, key=lambda r: (losses[r], r))
    return best, losses[best]


class GrowFromBase(Callback):
    """At step 0, fill the (already built, target-size) model from the base run's weights.

    ``grow`` (a run's ``spec.extra["grow"]``) has ``base`` (the base run's id, a sibling
    folder of this run), ``kind`` (``depth`` or ``net2wider``), ``plan`` (depth), or
    ``candidates`` (probe run id -> plan) and ``choose_lag`` (adaptive stacking: the plan
    of the probe with the lowest loss at that lag), ``rescale`` (keep each copied block's
    branch output when the branch scale depends on depth), ``moments`` (copy Adam
    moments: the ablation) and ``strategy``. The optimizer stays fresh otherwise (the
    loop's own, built for the target model). A resumed run skips growth: its checkpoint
    holds the grown weights.
    """

    def __init__(self, grow: dict[str, Any], seed: int) -> None:
        self.grow, self.seed = grow, seed

    def on_train_start(self, state: TrainState) -> None:
        """Grow (only when the run starts at step 0)."""
        if state.step != 0:
            return
        from ..param import Parameterization
        from .ops import apply_depth_plan, grow_moments, net2wider

        g = self.grow
        path = state.run_dir.parent / g["base"] / WEIGHTS
        if not path.is_file():
            raise FileNotFoundError(f"{path}: the base run {g['base']} has not finished; train it first")
        base = torch.load(path, map_location="cpu", weights_only=False)
        bspec = base["spec"]
        bparam = Parameterization.from_name(bspec["param"], bspec["base_width"], bspec["depth_alpha"])
        model = state.model
        row: dict[str, Any] = {"strategy": g["strategy"], "base": g["base"]}
        if g["kind"] == "net2wider":
            h_base = bspec["model"]["width"] * bspec["model"].get("mlp_ratio", 4)
            mult = bparam.multiplier("hidden", h_base, bspec["model"]["width"])
            net2wider(model, base["model"], mult, torch.Generator().manual_seed(self.seed))
            row["plan"] = f"mlp x{model.blocks[0].mlp.up.out_features // h_base}"
        else:
            plan = g.get("plan")
            if "candidates" in g:
                chosen, loss = choose_candidate(state.run_dir.parent, g["candidates"], g["choose_lag"])
                plan = g["candidates"][chosen]
                row.update(chosen=chosen, chosen_loss=loss)
            ratio = 1.0
            if g["rescale"]:
                ratio = bparam.residual_scale(bspec["model"]["depth"]) / model.blocks[0].branch_scale
            apply_depth_plan(model, base["model"], plan, branch_ratio=ratio)
            from .plans import plan_string

            row.update(plan=plan_string(plan), branch_ratio=ratio)
            if g["moments"]:
                if "optimizer" not in base:
                    raise ValueError(f"{path}: holds no optimizer state; the base run must save it "
                                     "(the study does when a strategy grows moments)")  # fmt: skip
                row["moments_grown"] = grow_moments(state.optimizer, base["optimizer"], base["param_names"], plan,
                                                    ratio)  # fmt: skip
        state.record("growth", **row)


class LagEval(Callback):
    """Record the held-out loss l(k) at steps ``lags`` on fixed validation windows.

    The windows are drawn once from the validation split with a fixed generator (the
    same for every run, strategy and seed), so l(k) differs between strategies only by
    the model. Rows go to the ``lag`` table: ``lag``, ``val_loss``.

    Args:
        lags: Steps since growth (0 included) at which to evaluate.
        examples: Validation windows (sequences of the run's context) per evaluation.
        seed: Seed of the windows.
    """

    def __init__(self, lags: list[int], examples: int, seed: int = 12) -> None:
        self.lags, self.examples, self.seed = set(lags), examples, seed
        self._batch = None

    def _evaluate(self, state: TrainState) -> float:
        if self._batch is None:
            if state.data is None or not state.data.text:
                raise ValueError("LagEval needs a text dataset's RunData in the train state")
            val, T = state.data.val, state.data.context
            gen = torch.Generator().manual_seed(self.seed)
            starts = torch.randint(0, len(val) - T - 1, (self.examples,), generator=gen)
            seq = val[(starts[:, None] + torch.arange(T + 1)).to(val.device)]  # (n, T+1)
            self._batch = seq[:, :-1], seq[:, 1:]
        x, y = self._batch
        model = state.model
        was = model.training
        model.eval()
        total = 0.0
        with torch.no_grad():
            for i in range(0, len(x), 256):
                total += float(state.loss_fn(model(x[i : i + 256]), y[i : i + 256])) * len(x[i : i + 256])
        model.train(was)
        return total / len(x)

    def on_train_start(self, state: TrainState) -> None:
        """l(0): the loss right after growth."""
        if state.step == 0 and 0 in self.lags:
            state.record("lag", lag=0, val_loss=self._evaluate(state))

    def on_step_end(self, state: TrainState, loss: float) -> None:
        """l(k) at each lag step."""
        if state.step in self.lags:
            state.record("lag", lag=state.step, val_loss=self._evaluate(state))
