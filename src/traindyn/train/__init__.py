"""The one training loop, its callbacks, checkpoints/resume and run specs."""

from .callbacks import Callback, TrainState
from .loop import build, default_device, lr_factor, make_loss, train
from .spec import RunSpec, run_id

__all__ = [
    "Callback",
    "RunSpec",
    "TrainState",
    "build",
    "default_device",
    "lr_factor",
    "make_loss",
    "run_id",
    "train",
]
