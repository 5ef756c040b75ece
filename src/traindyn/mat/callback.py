"""MAT in the one training loop: measure every k steps, gate modules, count FLOPs and seconds."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from traindyn.mat.flops import GemmCounter, gemm_table, step_flops
from traindyn.mat.measure import measure_modules
from traindyn.mat.policy import (
    InversePolicy,
    MatchedRandomPolicy,
    Policy,
    TemporalStopPolicy,
    ThresholdPolicy,
)
from traindyn.mat.registry import module_registry
from traindyn.train.callbacks import Callback, TrainState

__all__ = ["CHARGED", "MATCallback", "measurement_flops", "probe_batch"]

#: variants whose gating needs the measurements, so they pay for them
CHARGED = ("mat", "inverse", "temporal")


def probe_batch(data_dir: str | Path, split: str, n: int, context: int, seed: int):
    """A fixed batch ``(x, y)`` of ``n`` examples (windows of ``context`` tokens) of one split."""
    from traindyn.data import load_images, load_tokens, read_manifest

    gen = torch.Generator().manual_seed(seed)
    if read_manifest(data_dir)["kind"] == "text":
        tokens, _ = load_tokens(data_dir, split)
        starts = torch.randint(0, len(tokens) - context - 1, (n,), generator=gen)
        seq = tokens[starts[:, None] + torch.arange(context + 1)]  # (n, T+1)
        return seq[:, :-1], seq[:, 1:]
    x, y = load_images(data_dir, split)
    idx = torch.randperm(len(y), generator=gen)[: min(n, len(y))]
    return x[idx], y[idx]


def measurement_flops(model, x: torch.Tensor, registry, n_projections: int) -> int:
    """FLOPs of one ``measure_modules`` call, analytically (within 1% of FlopCounterMode).

    The per-sample gradients run one forward and R backward passes that reach only the
    modules' parameters: the GEMM table with only those trainable gives their input and
    weight gradients. The Gram matrices add 2 n^2 R P_m per module; the effective ranks
    one more forward. SVDs and n x n eigensolvers are not GEMMs and are left out.
    """
    names = {p for g in registry.values() for p in g.params} | {
        p if isinstance(p, str) else p[0] for g in registry.values() for p in g.pieces}
    saved = {n: p.requires_grad for n, p in model.named_parameters()}
    try:
        for n, p in model.named_parameters():
            p.requires_grad_(n in names)
        t = step_flops(gemm_table(model, x))
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(saved[n])
    n = x.shape[0]
    params = sum(model.get_parameter(p if isinstance(p, str) else p[0])[() if isinstance(p, str) else p[1]].numel()
                 for g in registry.values() for p in g.pieces)  # fmt: skip
    return 2 * t["forward"] + n_projections * (t["input_grad"] + t["weight_grad"]) + 2 * n * n * n_projections * params


class MATCallback(Callback):
    """Modular Adaptive Training (docs/methods.md, mat study) as a callback of the loop.

    Before the forward pass of every ``every``-th step (step 0 included) the modules'
    lambda_max are measured on a fixed held-out probe set and the policy re-selects
    the modules that train; the others get ``requires_grad=False``, so autograd skips
    their weight gradients and torch's optimizers (which skip parameters whose grad is
    None) leave them and their state untouched. Every step records its analytic GEMM
    FLOPs and wall time; measurements record theirs, charged to the variants in
    ``CHARGED``. The first gated step (the first step for ``full``) is also counted by
    ``FlopCounterMode`` to check the analytic count.

    Tables: ``mat_lambda`` (step, module: lambda_max, cosine lambda_max, trace, effective
    rank, smoothed value, threshold, active), ``mat_steps`` (per step: active modules,
    FLOPs, seconds, measurement cost), ``mat_flopcheck`` and ``mat_test``.

    Args:
        variant: ``full``, ``mat``, ``random``, ``inverse`` or ``temporal``.
        data_dir: The prepared dataset (probe set from ``val``, final metrics on ``test``).
        every: Steps between measurements and re-selections (k).
        warmup_steps: Steps during which every module trains.
        alpha: Threshold factor (``mat``, ``inverse``).
        ema: EMA decay of lambda_max (``mat``, ``inverse``).
        min_active_per_layer: Modules per layer that stay on.
        tol: Tolerance of the temporal stop rule.
        patience: Re-selections below ``tol`` before the temporal rule freezes.
        signal: ``lambda_max`` or ``lambda_max_cos``: what the policy thresholds.
        probe_examples: n, the probe set's size.
        scalarisation: ``class_trace`` or ``trace``.
        n_projections: R of the class-trace estimate.
        include_o: Measure each head with its W_O columns (ablation; gating unchanged).
        test_examples: Test examples of the final metrics.
        context: Sequence length (text datasets).
        match: ``mat_lambda.parquet`` of the MAT run whose active counts ``random`` matches.
        seed: The run's seed (probe projections and random gating draw from it).
    """

    def __init__(self, variant: str, data_dir: str | Path, every: int = 25, warmup_steps: int = 50,
                 alpha: float = 1.0, ema: float = 0.5, min_active_per_layer: int = 1, tol: float = 0.05,
                 patience: int = 2, signal: str = "lambda_max", probe_examples: int = 32,
                 scalarisation: str = "class_trace", n_projections: int = 4, include_o: bool = False,
                 test_examples: int = 1024, context: int = 64, match: str | None = None,
                 seed: int = 0) -> None:  # fmt: skip
        if variant == "random" and match is None:
            raise ValueError("variant 'random' needs match: the mat_lambda.parquet of its MAT run")
        if signal not in ("lambda_max", "lambda_max_cos"):
            raise ValueError(f"signal={signal!r}: expected 'lambda_max' or 'lambda_max_cos'")
        self.variant, self.data_dir, self.every = variant, Path(data_dir), every
        self.knobs = {"warmup_steps": warmup_steps, "alpha": alpha, "ema": ema, "tol": tol,
                      "patience": patience, "min_active_per_layer": min_active_per_layer}  # fmt: skip
        self.signal, self.probe_examples = signal, probe_examples
        self.scalarisation, self.n_projections, self.include_o = scalarisation, n_projections, include_o
        self.test_examples, self.context, self.match, self.seed = test_examples, context, match, seed
        self.active: set[str] | None = None
        self.checked = False
        self._policy_state: dict[str, Any] | None = None
        self._pending: dict[str, Any] = {}

    # ----------------------------------------------------------------------- set-up
    def _policy(self, layers: dict[str, int]) -> Policy:
        k = self.knobs
        common = {"warmup_steps": k["warmup_steps"], "min_active_per_layer": k["min_active_per_layer"]}
        if self.variant in ("mat", "inverse"):
            cls = ThresholdPolicy if self.variant == "mat" else InversePolicy
            return cls(layers, alpha=k["alpha"], ema=k["ema"], **common)
        if self.variant == "temporal":
            return TemporalStopPolicy(layers, tol=k["tol"], patience=k["patience"], **common)
        if self.variant == "random":
            import pandas as pd

            ref = pd.read_parquet(self.match)
            counts = ref.groupby("step")["active"].sum().astype(int).to_dict()
            return MatchedRandomPolicy(layers, counts, seed=self.seed,
                                       min_active_per_layer=k["min_active_per_layer"])  # fmt: skip
        if self.variant == "full":
            return Policy(layers)
        raise ValueError(f"unknown MAT variant {self.variant!r}")

    def on_train_start(self, state: TrainState) -> None:
        """Build the registry, the probe set, the policy and the FLOP counters."""
        model = state.model
        self.registry = module_registry(model, include_o=self.include_o)
        self.layers = {m: g.layer for m, g in self.registry.items()}
        self.policy = self._policy(self.layers)
        if self._policy_state is not None:
            self.policy.load_state_dict(self._policy_state)
        probe, _ = probe_batch(self.data_dir, "val", self.probe_examples, self.context, seed=3)
        self.probe = probe.to(state.device)
        self.counter = GemmCounter(model, state.fixed_batch[0])
        self.measure_flops = measurement_flops(model, self.probe, self.registry, self.n_projections)
        if self.active is None:
            self.active = set(self.registry)
        self._apply(model)
        self.step_flops = self.counter.count()

    def _apply(self, model) -> None:
        for m, g in self.registry.items():
            for name in g.params:
                model.get_parameter(name).requires_grad_(m in self.active)

    # ----------------------------------------------------------------------- measure + gate
    def _measure(self, state: TrainState, select: bool) -> dict[str, Any]:
        res = measure_modules(state.model, self.probe, self.registry, scalarisation=self.scalarisation,
                              n_projections=self.n_projections, seed=self.seed)  # fmt: skip
        if select:
            chosen = self.policy.select(state.step, getattr(res, self.signal))
            if chosen != self.active:
                self.active = chosen
                self._apply(state.model)
                self.step_flops = self.counter.count()
        smoothed, threshold = self.policy.smoothed, self.policy.threshold
        for m, g in self.registry.items():
            lam = res.lambda_max[m]
            state.record("mat_lambda", module=m, layer=g.layer, head=g.index, lambda_max=lam,
                         lambda_max_cos=res.lambda_max_cos[m], trace=res.trace[m],
                         lambda_ratio=lam / res.trace[m] if res.trace[m] > 0 else float("nan"),
                         erank=res.erank[m], smoothed=smoothed.get(m, float("nan")),
                         threshold=float("nan") if threshold is None else threshold,
                         active=m in self.active, lambda_max_union=res.lambda_max_union)  # fmt: skip
        return {"measure_seconds": res.seconds, "measure_flops": self.measure_flops}

    def on_step_start(self, state: TrainState) -> None:
        """Measure and re-select every ``every`` steps, then start the step's clock."""
        self._pending = {"measure_seconds": 0.0, "measure_flops": 0}
        if state.step % self.every == 0:
            self._pending = self._measure(state, select=True)
        self._torch_counter = None
        if not self.checked and (self.variant == "full" or len(self.active) < len(self.registry)):
            from torch.utils.flop_counter import FlopCounterMode

            self._torch_counter = FlopCounterMode(display=False)
            self._torch_counter.__enter__()
        self._t0 = time.perf_counter()

    def on_step_end(self, state: TrainState, loss: float) -> None:
        """Record the step's FLOPs and seconds (and the FLOP check on the first gated step)."""
        seconds = time.perf_counter() - self._t0
        if self._torch_counter is not None:
            self._torch_counter.__exit__(None, None, None)
            counted = int(self._torch_counter.get_total_flops())
            state.record("mat_flopcheck", analytic=self.step_flops["total"], torch=counted,
                         rel_error=abs(self.step_flops["total"] - counted) / counted,
                         active=len(self.active))  # fmt: skip
            self.checked, self._torch_counter = True, None
            seconds = float("nan")  # the counter's dispatch overhead is not the step's time
        state.record("mat_steps", active=len(self.active), modules=len(self.registry),
                     flops=self.step_flops["total"], weight_grad_flops=self.step_flops["weight_grad"],
                     seconds=seconds, measure_flops=self._pending["measure_flops"],
                     measure_seconds=self._pending["measure_seconds"],
                     charged=self.variant in CHARGED)  # fmt: skip

    def on_train_end(self, state: TrainState) -> None:
        """Measure once more at the end (for the figures) and evaluate on the test split."""
        if state.step % self.every == 0 and state.diverged_at is None:
            self._measure(state, select=False)
        x, y = probe_batch(self.data_dir, "test", self.test_examples, self.context, seed=4)
        model = state.model
        was = model.training
        model.eval()
        with torch.no_grad():
            total, correct = 0.0, 0
            for i in range(0, len(x), 256):
                xb, yb = x[i : i + 256].to(state.device), y[i : i + 256].to(state.device)
                out = model(xb)
                total += float(state.loss_fn(out, yb)) * len(yb)
                correct += int((out.argmax(-1) == yb).sum())
        model.train(was)
        per = y[0].numel()
        state.record("mat_test", test_loss=total / len(y), test_acc=correct / (len(y) * per))
        for g in self.registry.values():  # leave the model trainable as it was built
            for name in g.params:
                model.get_parameter(name).requires_grad_(True)

    # ----------------------------------------------------------------------- resume
    def state_dict(self) -> dict[str, Any]:
        """Active set, policy state and whether the FLOP check ran."""
        return {"active": sorted(self.active or []), "policy": self.policy.state_dict(),
                "checked": self.checked}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict`` (called before ``on_train_start`` on a resume)."""
        self.active, self.checked = set(state["active"]), state["checked"]
        self._policy_state = state["policy"]
