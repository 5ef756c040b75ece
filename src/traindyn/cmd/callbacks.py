"""CMD during training: online CMD, embedded CMD and the P-SGD baseline as callbacks of the one loop."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..train.callbacks import Callback, TrainState
from .fit import fit_cmd
from .online import OnlineCMD

__all__ = ["EmbeddedCMDCallback", "OnlineCMDCallback", "PSGDCallback", "save_npz"]


def _params(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def _flat(params: list[torch.nn.Parameter]) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in params])  # (N,) on the model's device


@torch.no_grad()
def _set_flat(params: list[torch.nn.Parameter], flat: torch.Tensor) -> None:
    lo = 0
    for p in params:
        p.copy_(flat[lo : lo + p.numel()].view_as(p))
        lo += p.numel()


def _offsets(params: list[torch.nn.Parameter]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum([p.numel() for p in params])]).astype(np.int64)


def save_npz(path: Path, **arrays: Any) -> None:
    """Write an ``.npz`` atomically (tmp then rename)."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, path)


class OnlineCMDCallback(Callback):
    """Online CMD running with training (docs/methods.md, cmd study).

    Every ``every`` steps (and at step 0) the trainable weights are a snapshot. The first
    ``warmup`` snapshots are kept and fitted by full CMD; from then on modes and references
    are fixed and a_i, b_i follow by exact recursive least squares, ``batch`` snapshots per
    update (several at once give the same result as one at a time). At the end it writes
    ``run_dir/{name}.npz`` (labels, refs, a, b, ref_traj, steps) and the table ``{name}``
    (update time and state size per update).

    Args:
        every: Steps between snapshots (the run's trajectory stride).
        warmup: F, snapshots of plain training before the modes are fixed (>= 2).
        k: Sampled parameters K of the warm-up fit.
        m: Modes M.
        seed: Seed of the sampling.
        batch: Snapshots merged per update.
        name: Output name.
    """

    def __init__(self, every: int, warmup: int, k: int, m: int, seed: int = 0, batch: int = 1,
                 name: str = "cmd_online"):  # fmt: skip
        if warmup < 2 or every < 1 or batch < 1:
            raise ValueError(f"online CMD needs warmup >= 2, every >= 1, batch >= 1 (got {warmup}, {every}, {batch})")
        self.every, self.warmup, self.k, self.m, self.seed, self.batch = every, warmup, k, m, seed, batch
        self.name = name
        self.buffer: list[np.ndarray] = []  # warm-up snapshots, then the pending ones of a batch
        self.steps: list[int] = []
        self.online: OnlineCMD | None = None
        self.warmup_fit: dict[str, np.ndarray] = {}

    # hooks
    def on_train_start(self, state: TrainState) -> None:
        """Take the step-0 snapshot of a fresh run."""
        self._params = _params(state.model)
        if state.step == 0 and not self.steps:
            self._capture(state)

    def on_step_end(self, state: TrainState, loss: float) -> None:
        """Take a snapshot every ``every`` steps."""
        if state.step % self.every == 0:
            self._capture(state)

    def on_train_end(self, state: TrainState) -> None:
        """Merge pending snapshots and write the fit."""
        if self.online is not None and self.buffer:
            self._update(state, np.stack(self.buffer))
        out: dict[str, Any] = {"steps": np.asarray(self.steps, dtype=np.int64), "fitted": self.online is not None}
        if self.online is not None:
            a, b = self.online.coefficients()
            out.update(labels=self.online.labels, refs=self.online.refs, a=a, b=b, ref_traj=self.online.ref_traj,
                       state_floats=self.online.state_floats(), **self.warmup_fit)  # fmt: skip
        save_npz(Path(state.run_dir) / f"{self.name}.npz", **out)

    # snapshots
    def _capture(self, state: TrainState) -> None:
        self.steps.append(state.step)
        self.buffer.append(_flat(self._params).cpu().double().numpy())
        if self.online is None and len(self.buffer) == self.warmup:
            w = np.stack(self.buffer)  # (F, N): only during the warm-up
            fit = fit_cmd(w, _offsets(self._params), self.k, self.m, self.seed)
            self.warmup_fit = {"warmup_a": fit.a, "warmup_b": fit.b, "requested_modes": fit.requested_modes}
            start = time.perf_counter()
            self.online = OnlineCMD.from_fit(fit, w)
            self.buffer = []
            state.record(self.name, snapshots=self.warmup, seconds=time.perf_counter() - start,
                         state_floats=self.online.state_floats(), warmup=True)  # fmt: skip
            self.on_fixed(state)
        elif self.online is not None and len(self.buffer) >= self.batch:
            self._update(state, np.stack(self.buffer))

    def _update(self, state: TrainState, x: np.ndarray) -> None:
        start = time.perf_counter()
        self.online.update(x)
        self.buffer = []
        state.record(self.name, snapshots=len(x), seconds=time.perf_counter() - start,
                     state_floats=self.online.state_floats(), warmup=False)  # fmt: skip

    def on_fixed(self, state: TrainState) -> None:
        """Called once the warm-up fit fixed the modes (for subclasses)."""

    # checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Buffered snapshots, steps and the online state."""
        return {"buffer": list(self.buffer), "steps": list(self.steps), "warmup_fit": dict(self.warmup_fit),
                "online": None if self.online is None else self.online.state_dict()}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict``."""
        self.buffer, self.steps, self.warmup_fit = list(state["buffer"]), list(state["steps"]), state["warmup_fit"]
        self.online = None if state["online"] is None else OnlineCMD.from_state(state["online"])


class EmbeddedCMDCallback(OnlineCMDCallback):
    """Embedded CMD: online CMD that freezes stable parameters onto their mode's line.

    Every ``interval`` snapshots after warm-up it freezes the ``percent``% of parameters whose
    (a, b) changed least since the last such point (never a reference), up to
    ``max_fraction`` of all parameters.

    A frozen parameter gets no gradient (its gradient is masked, so the optimizer does not
    move it) and is set to ``a * w_ref + b`` after every step, so it stays on its mode's line.
    Records the table ``{name}_frozen`` (frozen and trained counts per snapshot) besides the
    online tables, and writes ``{name}.npz`` with the frozen set and its lines.

    Args:
        interval: L, snapshots between freezing points.
        percent: P, percent of all N parameters frozen at each point.
        max_fraction: Largest fraction of N ever frozen.
        **kwargs: As ``OnlineCMDCallback``.
    """

    def __init__(self, interval: int, percent: float, max_fraction: float, **kwargs: Any):
        kwargs.setdefault("name", "cmd_embedded")
        super().__init__(**kwargs)
        self.interval, self.percent, self.max_fraction = interval, percent, max_fraction
        self.frozen: np.ndarray | None = None
        self.fa = self.fb = self.prev_a = self.prev_b = None
        self.since = 0
        self._masks: list[torch.Tensor] = []

    def on_train_start(self, state: TrainState) -> None:
        """Mask the gradients of frozen parameters (hooks are not checkpointed)."""
        super().on_train_start(state)
        self._masks = [torch.ones_like(p) for p in self._params]
        for p, mask in zip(self._params, self._masks, strict=True):
            p.register_hook(lambda g, mask=mask: g * mask)
        if self.frozen is not None:
            self._build_apply(state)

    def on_step_end(self, state: TrainState, loss: float) -> None:
        """Put frozen parameters on their lines, snapshot, freeze every L snapshots."""
        self._embed()  # before the snapshot: the snapshot sees the weights on their lines
        if state.step % self.every == 0:
            self._capture(state)
            if self.online is not None and self.since_fixed() > 0:
                self.since += 1
                if self.since % self.interval == 0:
                    self._freeze(state)
        if self.frozen is not None and state.step % self.every == 0:
            n = len(self.frozen)
            state.record(f"{self.name}_frozen", frozen=int(self.frozen.sum()), trained=int(n - self.frozen.sum()),
                         n_params=n)  # fmt: skip

    def since_fixed(self) -> int:
        """Snapshots merged after the warm-up."""
        return len(self.steps) - self.warmup

    def on_fixed(self, state: TrainState) -> None:
        """Start the frozen set empty, with the warm-up coefficients to compare against."""
        self.prev_a, self.prev_b = self.online.coefficients()
        self.frozen = np.zeros(len(self.prev_a), dtype=bool)
        self.fa, self.fb = np.zeros(len(self.prev_a)), np.zeros(len(self.prev_a))

    def _freeze(self, state: TrainState) -> None:
        if self.buffer:  # freeze on the fit of every snapshot so far
            self._update(state, np.stack(self.buffer))
        a, b = self.online.coefficients()
        n = len(a)
        std_r = np.sqrt(self.online.m2_r / max(self.online.count, 1))[self.online.labels]
        change = np.abs(a - self.prev_a) * std_r + np.abs(b - self.prev_b)  # in weight units
        change[self.frozen] = np.inf
        change[self.online.refs] = np.inf
        room = int(np.floor(self.max_fraction * n)) - int(self.frozen.sum())
        new = min(int(round(self.percent / 100 * n)), room, int(np.isfinite(change).sum()))
        if new > 0:
            pick = np.argpartition(change, new - 1)[:new]
            self.frozen[pick] = True
            self.fa[pick], self.fb[pick] = a[pick], b[pick]
            self._build_apply(state)
            self._embed()
        self.prev_a, self.prev_b = a, b

    def _build_apply(self, state: TrainState) -> None:
        dev = state.device
        offsets = _offsets(self._params)
        self._apply = []
        for p, mask, lo, hi in zip(self._params, self._masks, offsets[:-1], offsets[1:], strict=True):
            local = np.flatnonzero(self.frozen[lo:hi])
            mask.view(-1).fill_(1.0)
            mask.view(-1)[torch.as_tensor(local, device=dev)] = 0.0
            if len(local):
                g = lo + local
                self._apply.append((p, torch.as_tensor(local, device=dev),
                                    torch.as_tensor(self.online.labels[g], device=dev),
                                    torch.as_tensor(self.fa[g], device=dev), torch.as_tensor(self.fb[g], device=dev)))  # fmt: skip
        refs = self.online.refs
        where = np.searchsorted(offsets, refs, side="right") - 1
        self._ref_at = [(self._params[j], int(r - offsets[j])) for j, r in zip(where, refs, strict=True)]

    @torch.no_grad()
    def _embed(self) -> None:
        if self.frozen is None or not self.frozen.any():
            return
        ref_values = torch.stack([p.reshape(-1)[i] for p, i in self._ref_at]).double()  # (M,)
        for p, local, lab, a, b in self._apply:
            p.view(-1).index_copy_(0, local, (a * ref_values[lab] + b).to(p.dtype))

    def on_train_end(self, state: TrainState) -> None:
        """Write the online fit, then add the frozen set and its lines."""
        super().on_train_end(state)
        if self.frozen is not None:
            path = Path(state.run_dir) / f"{self.name}.npz"
            with np.load(path) as data:
                arrays = dict(data)
            save_npz(path, **arrays, frozen=self.frozen, frozen_a=self.fa, frozen_b=self.fb)

    def state_dict(self) -> dict[str, Any]:
        """The online state plus the frozen set and its lines."""
        return {**super().state_dict(), "frozen": self.frozen, "fa": self.fa, "fb": self.fb,
                "prev_a": self.prev_a, "prev_b": self.prev_b, "since": self.since}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict`` (masks are rebuilt at ``on_train_start``)."""
        super().load_state_dict(state)
        for key in ("frozen", "fa", "fb", "prev_a", "prev_b", "since"):
            setattr(self, key, state[key])


class PSGDCallback(Callback):
    """P-SGD baseline: after ``warmup`` snapshots, every step is projected onto their PCA subspace.

    With plain SGD, projecting the step ``w_new - w_old`` onto the span of the top ``rank``
    principal directions of the first F snapshots (temporal mean removed) is exactly SGD on
    the coordinates of that affine subspace.

    Args:
        every: Steps between snapshots.
        warmup: F, snapshots that define the subspace.
        rank: d, its dimension (at most F - 1).
    """

    def __init__(self, every: int, warmup: int, rank: int):
        if not 1 <= rank <= warmup - 1:
            raise ValueError(f"P-SGD rank={rank} must be in 1..warmup-1={warmup - 1}")
        self.every, self.warmup, self.rank = every, warmup, rank
        self.buffer: list[np.ndarray] = []
        self.basis: np.ndarray | None = None

    def on_train_start(self, state: TrainState) -> None:
        """Take the step-0 snapshot; restore the basis on resume."""
        self._params = _params(state.model)
        self._v = None if self.basis is None else torch.as_tensor(self.basis, device=state.device)
        if state.step == 0 and not self.buffer and self.basis is None:
            self.buffer.append(_flat(self._params).cpu().double().numpy())

    def on_step_start(self, state: TrainState) -> None:
        """Remember the weights before the step once the subspace is fixed."""
        self._prev = _flat(self._params).clone() if self._v is not None else None

    def on_step_end(self, state: TrainState, loss: float) -> None:
        """Project the step onto the subspace; fix the subspace after F snapshots."""
        if self._prev is not None:
            delta = _flat(self._params) - self._prev
            _set_flat(self._params, self._prev + self._v @ (self._v.T @ delta))
        if self.basis is None and state.step % self.every == 0:
            self.buffer.append(_flat(self._params).cpu().double().numpy())
            if len(self.buffer) == self.warmup:
                xc = np.stack(self.buffer)
                xc -= xc.mean(0)
                eig, u = np.linalg.eigh(xc @ xc.T)
                top = np.argsort(eig)[::-1][: self.rank]
                v = xc.T @ (u[:, top] / np.sqrt(np.clip(eig[top], 1e-300, None)))  # (N, d) orthonormal
                self.basis, self.buffer = v.astype(np.float32), []
                self._v = torch.as_tensor(self.basis, device=state.device)

    def state_dict(self) -> dict[str, Any]:
        """Warm-up snapshots or the basis."""
        return {"buffer": list(self.buffer), "basis": self.basis}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict``."""
        self.buffer, self.basis = list(state["buffer"]), state["basis"]
