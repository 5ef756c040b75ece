"""Extension points of the training loop: the state a callback sees and the hooks it gets."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["Callback", "TrainState"]


@dataclass
class TrainState:
    """Everything a callback may read or extend while a run trains.

    Attributes:
        model: The model being trained (on ``device``).
        optimizer: Its optimizer; param groups carry the parameterization's LR scales.
        loss_fn: ``loss_fn(outputs, targets) -> scalar`` (mean over the batch).
        device: Where the model lives.
        run_dir: The run's output folder (``results/runs/{study}/{run}``).
        base_lr: eta0, the base learning rate of the run (before the schedule).
        lr_factor: The schedule's current multiplier on every group's LR.
        step: Optimizer steps taken so far.
        total_steps: Steps the run will take.
        fixed_batch: A fixed training batch ``(x, y)`` on ``device``, for measurements.
        tables: Rows of long-format tables, written as ``run_dir/{name}.parquet``.
        diverged_at: The step at which the loss became NaN, inf or above the cap.
        data: The run's ``RunData`` (splits on ``device``), for callbacks that evaluate
            on held-out data; None when a caller builds a state without it.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    device: torch.device
    run_dir: Path
    base_lr: float
    total_steps: int
    fixed_batch: tuple[torch.Tensor, torch.Tensor]
    lr_factor: float = 1.0
    step: int = 0
    diverged_at: int | None = None
    data: Any = None
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))

    def record(self, table: str, **row: Any) -> None:
        """Append one row (the current step is added) to the long-format table ``table``."""
        self.tables[table].append({"step": self.step, **row})


class Callback:
    """Base class: override the hooks a study needs; the loop calls them in order.

    A callback that keeps state across steps implements ``state_dict`` and
    ``load_state_dict`` so that a resumed run ends identical to an uninterrupted one.
    """

    def on_train_start(self, state: TrainState) -> None:
        """Called once before the first step (also after a resume)."""

    def on_step_start(self, state: TrainState) -> None:
        """Called before the forward pass of step ``state.step + 1``."""

    def on_step_end(self, state: TrainState, loss: float) -> None:
        """Called after the optimizer step; ``state.step`` is already incremented."""

    def on_train_end(self, state: TrainState) -> None:
        """Called once after the last step or at divergence."""

    def state_dict(self) -> dict[str, Any]:
        """Return what must survive a checkpoint."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""
