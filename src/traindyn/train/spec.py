"""What one training run is: a typed spec built from a grid point, and its readable id."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RunSpec", "run_id"]


def _fmt(value: float) -> str:
    return f"{value:g}"


def run_id(param: str, width: int, depth: int, lr: float, seed: int, alpha: float | None = None,
           loss: str | None = None, arch: str | None = None) -> str:  # fmt: skip
    """Return the readable id of a grid point, e.g. ``mup-w256-d3-lr0.03-s0``.

    Optional parts appear only when set: ``gpt-`` in front for a model that must be told
    apart from the study's default one, ``-a0.5`` for depth-muP's alpha, ``-mse`` for a
    loss other than cross-entropy. The Snakefile, the CLI and MLflow all use this name.
    """
    parts = ([arch] if arch else []) + [param, f"w{width}", f"d{depth}"]
    if alpha is not None:
        parts.append(f"a{_fmt(alpha)}")
    parts += [f"lr{_fmt(lr)}", f"s{seed}"]
    if loss and loss != "xent":
        parts.append(loss)
    return "-".join(parts)


@dataclass(frozen=True)
class RunSpec:
    """Everything one run needs; stored in checkpoints and final.json.

    Attributes:
        study: Study name (``scaling``, ...).
        run: The run's readable id.
        dataset: Prepared dataset name (``results/data/{dataset}``).
        model: Model spec for ``traindyn.models.build_model`` (``arch``, ``width``, ...).
        param: ``sp``, ``ntk`` or ``mup``.
        base_width: N0 of muP.
        depth_alpha: Residual-branch exponent of depth-muP, or None.
        optimizer: ``sgd``, ``adam`` or ``adamw``.
        lr: Base learning rate eta0.
        momentum: SGD momentum.
        weight_decay: Base weight decay.
        loss: ``xent`` or ``mse`` (MSE on one-hot targets, 0.5 * sum over classes, mean over batch).
        steps: Optimizer steps.
        batch_size: Examples (sequences for text) per step.
        schedule: ``constant``, ``warmup`` (linear warm-up, then constant) or ``cosine``
            (linear warm-up, then cosine decay to 0).
        warmup_steps: Steps of linear warm-up.
        eval_every: Steps between evaluations (and at the last step).
        eval_examples: Examples of the train and validation splits used per evaluation.
        checkpoint_every: Steps between checkpoints (0: none).
        loss_cap: A training loss above this (or NaN/inf) marks the run diverged.
        seed: Seed of initialisation and data order.
        context: Sequence length for text datasets.
        grad_clip: Max global gradient norm (0: no clipping).
        fixed_batch_size: Size of the fixed training batch that callbacks measure on.
        snapshot_every: Keep the model's trainable weights every this many steps (and at step
            0) in the trajectory ``run_dir/trajectory/`` for post-hoc analysis (0: none).
        extra: Study-specific settings read by the study's callbacks.
    """

    study: str
    run: str
    dataset: str
    model: dict[str, Any]
    param: str
    base_width: int
    depth_alpha: float | None
    optimizer: str
    lr: float
    momentum: float
    weight_decay: float
    loss: str
    steps: int
    batch_size: int
    schedule: str
    warmup_steps: int
    eval_every: int
    eval_examples: int
    checkpoint_every: int
    loss_cap: float
    seed: int
    context: int = 64
    grad_clip: float = 0.0
    fixed_batch_size: int = 256
    snapshot_every: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (for JSON, checkpoints and MLflow params)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSpec:
        """Inverse of ``to_dict``."""
        return cls(**data)
