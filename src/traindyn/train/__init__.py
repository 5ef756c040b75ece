"""The one training loop, its callbacks, checkpoints/resume and run specs."""

from .callbacks import Callback, TrainState
from .loop import RunData, build, default_device, lr_factor, make_loss, snapshot_path, train
from .spec import RunSpec, run_id
from .trajectory import Trajectory, TrajectoryWriter, trajectory_dir

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
