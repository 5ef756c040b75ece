"""The one on-disk trajectory format: a memory-mapped (T, N) float32 array of trainable weights.

A run trained with ``spec.snapshot_every = s`` keeps its trainable parameters (never
buffers such as BatchNorm statistics) at steps 0, s, 2s, ... in ``run_dir/trajectory/``:

- ``weights.f32``: raw float32, shape ``(capacity, N)``, row ``r`` = the weights at step ``r * s``;
- ``steps.i64``: raw int64, shape ``(capacity,)``, the step of each row, -1 while not written
  (a row counts as written only once its step is set, after its weights);
- ``meta.json``: format, ``n_params``, ``capacity``, ``stride``, parameter names, shapes.

Rows are written in place by the training loop, so a resumed run continues at the row of
its step, and readers (``traindyn spectra``, CMD) map the file without loading it.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = ["FORMAT", "Trajectory", "TrajectoryWriter", "trajectory_dir"]

FORMAT = "traindyn-trajectory-1"


def trajectory_dir(run_dir: str | Path) -> Path:
    """The trajectory folder of a run."""
    return Path(run_dir) / "trajectory"


def _params(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


class TrajectoryWriter:
    """Writes a model's trainable parameters into the rows of a trajectory, in place.

    Args:
        path: The trajectory folder (created).
        model: The model whose ``named_parameters`` (trainable ones) are kept.
        capacity: Rows to preallocate (``steps // stride + 1``).
        stride: Steps between rows.
        start_step: The step training (re)starts at: 0 starts a fresh trajectory; a resume
            keeps the rows before it when the file matches the model, else starts afresh.
    """

    def __init__(self, path: str | Path, model: nn.Module, capacity: int, stride: int, start_step: int = 0):
        if capacity < 1 or stride < 1:
            raise ValueError(f"trajectory capacity={capacity} and stride={stride} must be >= 1")
        self.path, self.stride = Path(path), stride
        self._params = _params(model)
        sizes = [p.numel() for _, p in self._params]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.n_params = int(self.offsets[-1])
        meta = {"format": FORMAT, "n_params": self.n_params, "capacity": capacity, "stride": stride,
                "names": [n for n, _ in self._params], "shapes": [list(p.shape) for _, p in self._params]}  # fmt: skip
        meta_path = self.path / "meta.json"
        keep = start_step > 0 and meta_path.is_file() and json.loads(meta_path.read_text()) == meta
        self.path.mkdir(parents=True, exist_ok=True)
        mode = "r+" if keep else "w+"
        if not keep:
            meta_path.unlink(missing_ok=True)  # a half-written trajectory is never taken for a valid one
        self.weights = np.memmap(self.path / "weights.f32", np.float32, mode, shape=(capacity, self.n_params))
        self.steps = np.memmap(self.path / "steps.i64", np.int64, mode, shape=(capacity,))
        if keep:
            # The restart step's row was written before the checkpoint; later ones are rewritten.
            self.steps[start_step // stride + 1 :] = -1
        else:
            self.steps[:] = -1
            tmp = meta_path.with_name(f".meta.json.tmp-{os.getpid()}")
            tmp.write_text(json.dumps(meta))
            os.replace(tmp, meta_path)

    @classmethod
    def for_run(cls, run_dir: str | Path, model: nn.Module, steps: int, stride: int,
                start_step: int = 0) -> TrajectoryWriter:  # fmt: skip
        """The writer of a run of ``steps`` steps keeping a row every ``stride`` steps."""
        return cls(trajectory_dir(run_dir), model, steps // stride + 1, stride, start_step)

    @torch.no_grad()
    def write(self, step: int) -> None:
        """Write the parameters as they are now as the row of ``step`` (a multiple of the stride)."""
        row, rem = divmod(step, self.stride)
        if rem or row >= len(self.steps):
            raise ValueError(f"step {step} has no row in a trajectory of stride {self.stride} "
                             f"and {len(self.steps)} rows")  # fmt: skip
        out = torch.from_numpy(self.weights[row])  # (N,) view of the mapped row
        for (_, p), lo, hi in zip(self._params, self.offsets[:-1], self.offsets[1:], strict=True):
            out[lo:hi].copy_(p.detach().reshape(-1))
        self.steps[row] = step

    def flush(self) -> None:
        """Push written rows to the file (the kernel keeps them even if the process dies)."""
        self.weights.flush()
        self.steps.flush()

    def close(self) -> None:
        """Flush and release the mapping."""
        self.flush()
        del self.weights, self.steps


class Trajectory:
    """Read-only view of a written trajectory: the rows written so far, in step order.

    Attributes:
        weights: ``(T, N)`` float32 memory map of the written rows.
        steps: ``(T,)`` int64 step of each row.
        names: Parameter names (``model.named_parameters`` order).
        shapes: Their shapes.
        offsets: ``(P + 1,)`` int64 start of each parameter in a row, then N.
        stride: Steps between rows.

    Raises:
        FileNotFoundError: If ``path`` holds no trajectory.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        meta_path = self.path / "meta.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{meta_path} is missing: train the run with snapshot_every > 0")
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != FORMAT:
            raise ValueError(f"{meta_path}: format {meta.get('format')!r}, expected {FORMAT!r}")
        cap, n = meta["capacity"], meta["n_params"]
        steps = np.memmap(self.path / "steps.i64", np.int64, "r", shape=(cap,))
        written = steps >= 0
        # The written rows are a prefix (a run writes rows in order; a diverged one stops early).
        t = int(np.argmin(written)) if not written.all() else cap
        self.steps = np.array(steps[:t])
        self.weights = np.memmap(self.path / "weights.f32", np.float32, "r", shape=(cap, n))[:t]
        self.names, self.shapes = meta["names"], [tuple(s) for s in meta["shapes"]]
        sizes = [math.prod(s) for s in self.shapes]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.stride = meta["stride"]

    def __len__(self) -> int:
        return len(self.steps)

    @property
    def n_params(self) -> int:
        """N, the trainable parameters per row."""
        return int(self.offsets[-1])

    def row(self, step: int) -> int:
        """The row holding ``step``.

        Raises:
            KeyError: If the trajectory has no row at that step.
        """
        hits = np.flatnonzero(self.steps == step)
        if not len(hits):
            raise KeyError(f"{self.path} has no row at step {step} (stride {self.stride}, {len(self)} rows)")
        return int(hits[0])

    def tensors(self, vector: np.ndarray) -> dict[str, torch.Tensor]:
        """Split one flat ``(N,)`` weight vector into named float32 tensors of their shapes."""
        flat = torch.from_numpy(np.array(vector, dtype=np.float32))  # a copy: rows are read-only maps
        return {name: flat[lo:hi].reshape(shape) for name, shape, lo, hi
                in zip(self.names, self.shapes, self.offsets[:-1], self.offsets[1:], strict=True)}  # fmt: skip

    @torch.no_grad()
    def load_into(self, model: nn.Module, vector: np.ndarray) -> None:
        """Set the model's trainable parameters to a flat ``(N,)`` vector (a row or a reconstruction).

        Buffers are left as they are: the trajectory does not model them.

        Raises:
            ValueError: If the model's parameters are not the trajectory's.
        """
        params = dict(_params(model))
        if list(params) != self.names:
            raise ValueError(f"the model's parameters {list(params)[:3]}... are not those of {self.path}")
        for name, value in self.tensors(vector).items():
            params[name].copy_(value)
