"""The one training loop, its callbacks, checkpoints/resume and run specs.

The names are imported on first use (PEP 562), so that ``traindyn.train.spec`` (what
config validation and the DAG need) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .callbacks import Callback, TrainState
    from .loop import RunData, build, default_device, lr_factor, make_loss, snapshot_path, train
    from .spec import RunSpec, run_id
    from .trajectory import Trajectory, TrajectoryWriter, trajectory_dir

_WHERE = {
    "Callback": "callbacks",
    "TrainState": "callbacks",
    "RunData": "loop",
    "build": "loop",
    "default_device": "loop",
    "lr_factor": "loop",
    "make_loss": "loop",
    "snapshot_path": "loop",
    "train": "loop",
    "RunSpec": "spec",
    "run_id": "spec",
    "Trajectory": "trajectory",
    "TrajectoryWriter": "trajectory",
    "trajectory_dir": "trajectory",
}

__all__ = [
    "Callback",
    "RunData",
    "RunSpec",
    "TrainState",
    "Trajectory",
    "TrajectoryWriter",
    "build",
    "default_device",
    "lr_factor",
    "make_loss",
    "run_id",
    "snapshot_path",
    "train",
    "trajectory_dir",
]
assert sorted(__all__) == sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
