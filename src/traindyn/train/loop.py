"""The one training loop: schedule, eval, checkpoint, forward/backward, clip, step, log."""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ..data import load_images, load_tokens, read_manifest
from .callbacks import Callback, TrainState
from .spec import RunSpec
from .trajectory import TrajectoryWriter, trajectory_dir

__all__ = ["RunData", "build", "default_device", "lr_factor", "make_loss", "snapshot_path", "train"]

CHECKPOINT = "checkpoint.pt"


def snapshot_path(run_dir: str | Path) -> Path:
    """The trajectory (``traindyn.train.trajectory``) a run keeps when ``spec.snapshot_every`` is set."""
    return trajectory_dir(run_dir)


def _snapshot(state: TrainState, spec: RunSpec, writer: TrajectoryWriter | None) -> None:
    if writer is not None and state.step % spec.snapshot_every == 0:
        writer.write(state.step)


def default_device() -> torch.device:
    """CUDA when present (the device SLURM or CUDA_VISIBLE_DEVICES gives), else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def lr_factor(spec: RunSpec, step: int) -> float:
    """The schedule's multiplier on every group's LR for optimizer step ``step + 1``."""
    if spec.schedule != "constant" and step < spec.warmup_steps:
        return (step + 1) / spec.warmup_steps
    if spec.schedule == "cosine":
        span = max(1, spec.steps - spec.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - spec.warmup_steps) / span)))
    return 1.0


def make_loss(kind: str):
    """Return ``loss(outputs, targets)``, mean over examples (and positions for sequences).

    ``xent`` is cross-entropy; ``mse`` is 0.5 * squared error to one-hot targets summed
    over classes, so its Hessian in the outputs is the identity.
    """
    if kind == "xent":
        return lambda out, y: F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))

    def mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        flat = out.reshape(-1, out.shape[-1])  # (B*, C)
        target = F.one_hot(y.reshape(-1), flat.shape[-1]).to(flat.dtype)
        return 0.5 * (flat - target).pow(2).sum(-1).mean()

    if kind == "mse":
        return mse
    raise ValueError(f"loss={kind!r}: expected 'xent' or 'mse'")


class RunData:
    """A dataset on the device and a seeded sampler of batches whose state checkpoints."""

    def __init__(self, spec: RunSpec, data_dir: Path, device: torch.device):
        manifest = read_manifest(data_dir)
        self.text = manifest["kind"] == "text"
        self.context = spec.context
        if self.text:
            self.train = load_tokens(data_dir, "train")[0].to(device)
            self.val = load_tokens(data_dir, "val")[0].to(device)
            self.out_dim = manifest["vocab_size"]
        else:
            self.train = tuple(t.to(device) for t in load_images(data_dir, "train"))
            self.val = tuple(t.to(device) for t in load_images(data_dir, "val"))
            self.out_dim = len(manifest["classes"])
            self.in_shape = tuple(manifest["shape"])
        self.generator = torch.Generator().manual_seed(spec.seed)
        self.batch_size = spec.batch_size
        fixed = torch.Generator().manual_seed(10_000 + spec.seed)
        self.fixed_batch = self._take(self.train, spec.fixed_batch_size, fixed)
        # Evaluation subsets are fixed for the whole run: the same examples at every step.
        self.eval_train = self._take(self.train, spec.eval_examples, torch.Generator().manual_seed(1))
        self.eval_val = self._take(self.val, spec.eval_examples, torch.Generator().manual_seed(2))

    def _take(self, split, n: int, gen: torch.Generator):
        if self.text:
            starts = torch.randint(0, len(split) - self.context - 1, (n,), generator=gen)
            idx = starts[:, None] + torch.arange(self.context + 1)  # (n, T+1)
            seq = split[idx.to(split.device)]
            return seq[:, :-1], seq[:, 1:]  # (n, T) inputs, (n, T) next tokens
        x, y = split
        idx = torch.randperm(len(y), generator=gen)[: min(n, len(y))].to(y.device)
        return x[idx], y[idx]

    def next_batch(self):
        """The next training batch: indices drawn uniformly with replacement (seeded).

        Drawing ``batch_size`` indices costs O(B); shuffling the whole split every step
        cost 10-15% of a small MLP's step.
        """
        if self.text:
            return self._take(self.train, self.batch_size, self.generator)
        x, y = self.train
        idx = torch.randint(0, len(y), (self.batch_size,), generator=self.generator).to(y.device)
        return x[idx], y[idx]

    def model_dims(self) -> dict[str, Any]:
        """Input/output sizes the model spec takes from the dataset."""
        if self.text:
            return {"vocab_size": self.out_dim, "block_size": self.context}
        c, h, w = self.in_shape
        return {"in_dim": c * h * w, "out_dim": self.out_dim, "in_channels": c, "image_size": h}


def build(spec: RunSpec, data_dims: dict[str, Any], device: torch.device):
    """Build the model and optimizer of a run (seeded, parameterized).

    Returns:
        ``(model, optimizer)``.
    """
    from ..models import MODEL_SPECS, build_model
    from ..param import Parameterization, make_optimizer

    spec_cls, _ = MODEL_SPECS[spec.model["arch"]]
    accepted = {f for f in spec_cls.__dataclass_fields__}
    model_spec = {**{k: v for k, v in data_dims.items() if k in accepted}, **spec.model}
    param = Parameterization.from_name(spec.param, spec.base_width, spec.depth_alpha)
    torch.manual_seed(spec.seed)
    model = build_model(model_spec, param).to(device)
    optimizer = make_optimizer(model, spec.optimizer, spec.lr, momentum=spec.momentum,
                               weight_decay=spec.weight_decay)  # fmt: skip
    return model, optimizer


@torch.no_grad()
def _evaluate(model: nn.Module, data: RunData, loss_fn, chunk: int = 1024) -> dict[str, float]:
    was_training = model.training
    model.eval()
    out = {}
    for name, (x, y) in (("train", data.eval_train), ("val", data.eval_val)):
        total, correct, n = 0.0, 0, 0
        for i in range(0, len(x), chunk):
            logits = model(x[i : i + chunk])  # (b, C) or (b, T, V)
            yb = y[i : i + chunk]
            total += float(loss_fn(logits, yb)) * len(yb)
            correct += int((logits.argmax(-1) == yb).sum())
            n += len(yb)
        out[f"{name}_loss"] = total / n
        out[f"{name}_acc"] = correct / (n * (y.shape[1] if y.dim() > 1 else 1))
    model.train(was_training)
    return out


def _save_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _checkpoint(path: Path, state: TrainState, data: RunData, rows: list, callbacks, spec) -> None:
    _save_atomic({
        "spec": spec.to_dict(),
        "step": state.step,
        "model": state.model.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "sampler": data.generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "metrics": rows,
        "tables": dict(state.tables),
        "callbacks": [cb.state_dict() for cb in callbacks],
    }, path)  # fmt: skip


def _resume(path: Path, state: TrainState, data: RunData, callbacks, spec) -> list:
    # A checkpoint only saves time: one that cannot be read (truncated by a kill, foreign,
    # from an older format) or holds another spec is reported and the run starts afresh.
    # On the CPU: RNG states must stay CPU ByteTensors (set_rng_state rejects CUDA ones);
    # load_state_dict copies model and optimizer tensors to their parameters' device.
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - zip, pickle and EOF errors all mean a bad file
        print(f"{path}: unreadable checkpoint ({type(err).__name__}: {err}); starting afresh", file=sys.stderr)
        return []
    keys = {"spec", "step", "model", "optimizer", "sampler", "torch_rng", "cuda_rng", "metrics", "tables",
            "callbacks"}  # fmt: skip
    if not isinstance(ckpt, dict) or not keys <= set(ckpt):
        print(f"{path}: not a checkpoint of this loop (lacks {sorted(keys - set(ckpt or {}))}); starting afresh"
              if isinstance(ckpt, dict) else f"{path}: not a checkpoint of this loop; starting afresh",
              file=sys.stderr)  # fmt: skip
        return []
    if ckpt["spec"] != spec.to_dict():
        print(f"{path}: written by another spec; starting afresh", file=sys.stderr)
        return []
    try:
        state.model.load_state_dict(ckpt["model"])
        state.optimizer.load_state_dict(ckpt["optimizer"])
        data.generator.set_state(ckpt["sampler"])
        torch.set_rng_state(ckpt["torch_rng"])
        if ckpt["cuda_rng"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(ckpt["cuda_rng"])
        state.step = ckpt["step"]
        state.tables.update(ckpt["tables"])
        for cb, cb_state in zip(callbacks, ckpt["callbacks"], strict=True):
            cb.load_state_dict(cb_state)
    except (RuntimeError, ValueError, KeyError, TypeError) as err:
        # Part of the state may already be restored: stop rather than train from a mix.
        raise ValueError(f"{path}: holds this run's spec but cannot be restored ({type(err).__name__}: "
                         f"{err}); delete it to start the run afresh") from err  # fmt: skip
    print(f"resumed from {path} at step {state.step}", file=sys.stderr)
    return ckpt["metrics"]


def _write_outputs(run_dir: Path, spec: RunSpec, state: TrainState, rows: list, final: dict) -> None:
    for name, table in state.tables.items():
        tmp = run_dir / f".{name}.parquet.tmp"
        pd.DataFrame(table).assign(run=spec.run).to_parquet(tmp, index=False)
        os.replace(tmp, run_dir / f"{name}.parquet")
    tmp = run_dir / ".metrics.parquet.tmp"
    pd.DataFrame(rows, columns=["step", "metric", "value"]).assign(run=spec.run).to_parquet(tmp, index=False)
    os.replace(tmp, run_dir / "metrics.parquet")
    # final.json last: its presence means the run is complete.
    tmp = run_dir / ".final.json.tmp"
    tmp.write_text(json.dumps(final, indent=2))
    os.replace(tmp, run_dir / "final.json")


def train(spec: RunSpec, data_dir: str | Path, run_dir: str | Path,
          callbacks: Iterable[Callback] = (), device: torch.device | None = None,
          progress: bool = True) -> dict[str, Any]:  # fmt: skip
    """Train one run, resuming from ``run_dir/checkpoint.pt`` when it holds the same spec.

    Writes ``metrics.parquet`` (long format: step, metric, value), one parquet per table
    that callbacks recorded, and ``final.json`` (written last). A loss that is NaN, inf or
    above ``spec.loss_cap`` ends the run early as *diverged*; that is a result, not an error.

    Args:
        spec: The run.
        data_dir: The prepared dataset (``results/data/{dataset}``).
        run_dir: Output folder of the run.
        callbacks: Study extensions (spectra, trajectory capture, gating, growth).
        device: Defaults to CUDA when available, else CPU.
        progress: Show a progress bar on stderr (the job's log).

    Returns:
        The content of ``final.json``.
    """
    from tqdm import tqdm

    device = device or default_device()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    callbacks = list(callbacks)
    data = RunData(spec, Path(data_dir), device)
    model, optimizer = build(spec, data.model_dims(), device)
    loss_fn = make_loss(spec.loss)
    state = TrainState(model=model, optimizer=optimizer, loss_fn=loss_fn, device=device,
                       run_dir=run_dir, base_lr=spec.lr, total_steps=spec.steps,
                       fixed_batch=data.fixed_batch, data=data)  # fmt: skip
    group_lrs = [g["lr"] for g in optimizer.param_groups]
    ckpt_path = run_dir / CHECKPOINT
    rows = _resume(ckpt_path, state, data, callbacks, spec) if ckpt_path.is_file() else []
    writer = (TrajectoryWriter.for_run(run_dir, model, spec.steps, spec.snapshot_every, state.step)
              if spec.snapshot_every else None)  # fmt: skip
    model.train()
    for cb in callbacks:
        cb.on_train_start(state)
    if state.step == 0:
        rows += [(0, k, v) for k, v in _evaluate(model, data, loss_fn).items()]
        _snapshot(state, spec, writer)
    bar = tqdm(total=spec.steps, initial=state.step, disable=not progress, mininterval=5,
               file=sys.stderr, desc=spec.run)  # fmt: skip
    while state.step < spec.steps:
        # schedule
        state.lr_factor = lr_factor(spec, state.step)
        for group, lr in zip(optimizer.param_groups, group_lrs, strict=True):
            group["lr"] = lr * state.lr_factor
        for cb in callbacks:
            cb.on_step_start(state)
        # forward / backward
        x, y = data.next_batch()  # (B, ...) inputs, (B,) or (B, T) targets
        loss = loss_fn(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        value = loss.item()
        if not math.isfinite(value) or value > spec.loss_cap:
            state.diverged_at = state.step + 1
            rows.append((state.step + 1, "train_loss_batch", value))
            break
        # clip, step
        if spec.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), spec.grad_clip)
        optimizer.step()
        state.step += 1
        bar.update(1)
        # log
        rows.append((state.step, "train_loss_batch", value))
        for cb in callbacks:
            cb.on_step_end(state, value)
        # eval
        if state.step % spec.eval_every == 0 or state.step == spec.steps:
            metrics = _evaluate(model, data, loss_fn)
            rows += [(state.step, k, v) for k, v in metrics.items()]
            bar.set_postfix(val_loss=f"{metrics['val_loss']:.4f}", refresh=False)
            if not math.isfinite(metrics["train_loss"]) or metrics["train_loss"] > spec.loss_cap:
                state.diverged_at = state.step
                break
        # snapshot, checkpoint
        _snapshot(state, spec, writer)
        if spec.checkpoint_every and state.step % spec.checkpoint_every == 0 and state.step < spec.steps:
            if writer is not None:
                writer.flush()
            _checkpoint(ckpt_path, state, data, rows, callbacks, spec)
    bar.close()
    if writer is not None:
        writer.close()
    for cb in callbacks:
        cb.on_train_end(state)
    last = {m: v for _, m, v in rows if m in ("train_loss", "val_loss", "train_acc", "val_acc")}
    final = {
        "run": spec.run,
        "study": spec.study,
        "steps_done": state.step,
        "diverged": state.diverged_at is not None,
        "diverged_at": state.diverged_at,
        **{f"final_{k}": (v if state.diverged_at is None else None) for k, v in last.items()},
        "device": str(device),
        "spec": spec.to_dict(),
    }
    _write_outputs(run_dir, spec, state, rows, final)
    ckpt_path.unlink(missing_ok=True)
    return final
