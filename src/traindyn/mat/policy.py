"""Gating policies of MAT: which modules train until the next re-selection.

Every policy sees the modules' layers once and, at each re-selection step, the
measured lambda_max of every module; it returns the set of modules that train.
The exact published threshold could not be confirmed (docs/methods.md, mat study), so
the policies are configurable; ``ThresholdPolicy`` with ``alpha = 1`` is the
default (a module trains while its smoothed lambda_max is at least the mean).
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["POLICIES", "InversePolicy", "MatchedRandomPolicy", "Policy", "TemporalStopPolicy",
           "ThresholdPolicy", "coefficient_of_variation", "keep_per_layer"]  # fmt: skip


def keep_per_layer(active: set[str], score: Mapping[str, float], layers: Mapping[str, int],
                   minimum: int, prefer_high: bool = True) -> set[str]:  # fmt: skip
    """Add modules until every layer has ``minimum`` on (its best-scored ones first).

    Args:
        active: Modules chosen so far.
        score: Module -> score used to pick the extra modules.
        layers: Module -> layer.
        minimum: Modules per layer that stay on.
        prefer_high: Keep the highest-scored modules (False: the lowest).

    Returns:
        ``active`` with the added modules.
    """
    out = set(active)
    for layer in sorted(set(layers.values())):
        members = sorted((m for m in layers if layers[m] == layer),
                         key=lambda m: (-score[m] if prefer_high else score[m], m))  # fmt: skip
        need = min(minimum, len(members)) - sum(m in out for m in members)
        for m in [m for m in members if m not in out][: max(need, 0)]:
            out.add(m)
    return out


class Policy:
    """Base: all modules train. Subclasses override ``select``.

    Args:
        layers: Module -> layer, in registry order.
        warmup_steps: Steps during which every module trains.
        min_active_per_layer: Modules per layer that stay on.
    """

    name = "full"
    uses_lambda = False

    def __init__(self, layers: Mapping[str, int], warmup_steps: int = 0, min_active_per_layer: int = 1):
        self.layers = dict(layers)
        self.warmup_steps = warmup_steps
        self.min_active_per_layer = min_active_per_layer
        self.threshold: float | None = None  # the last threshold, for logging
        self.smoothed: dict[str, float] = {}  # the last smoothed lambda_max, for logging

    def select(self, step: int, lambdas: Mapping[str, float] | None) -> set[str]:
        """Return the modules that train from ``step`` to the next re-selection."""
        return set(self.layers)

    def state_dict(self) -> dict[str, Any]:
        """What survives a checkpoint."""
        return {"threshold": self.threshold, "smoothed": dict(self.smoothed)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict``."""
        self.threshold, self.smoothed = state["threshold"], dict(state["smoothed"])


class ThresholdPolicy(Policy):
    """Dynamic threshold: train m while EMA(lambda_m) >= alpha * mean_m' EMA(lambda_m').

    The EMA is updated at every measurement (warm-up included), so it is warm when
    gating starts; re-entry is allowed at every re-selection.

    Args:
        layers: Module -> layer.
        alpha: Threshold factor on the mean smoothed lambda_max.
        ema: EMA decay beta: ``s = beta s + (1 - beta) lambda`` (0: no smoothing).
        warmup_steps: Steps during which every module trains.
        min_active_per_layer: Modules per layer that stay on (highest lambda first).
    """

    name = "mat"
    uses_lambda = True

    def __init__(self, layers: Mapping[str, int], alpha: float = 1.0, ema: float = 0.5,
                 warmup_steps: int = 0, min_active_per_layer: int = 1):  # fmt: skip
        super().__init__(layers, warmup_steps, min_active_per_layer)
        self.alpha, self.ema = alpha, ema

    def _smooth(self, lambdas: Mapping[str, float]) -> dict[str, float]:
        for m in self.layers:
            old = self.smoothed.get(m)
            self.smoothed[m] = lambdas[m] if old is None else self.ema * old + (1 - self.ema) * lambdas[m]
        self.threshold = self.alpha * sum(self.smoothed.values()) / len(self.smoothed)
        return self.smoothed

    def select(self, step: int, lambdas: Mapping[str, float] | None) -> set[str]:
        """Update the EMA with ``lambdas``; all on in warm-up, else those above the threshold."""
        if lambdas is None:
            raise ValueError(f"{type(self).__name__} needs lambda_max at every re-selection")
        s = self._smooth(lambdas)
        if step < self.warmup_steps:
            return set(self.layers)
        active = {m for m in self.layers if s[m] >= self.threshold}
        return keep_per_layer(active, s, self.layers, self.min_active_per_layer)


class InversePolicy(ThresholdPolicy):
    """Inverse MAT: train the modules *below* the threshold (skip the high-lambda ones)."""

    name = "inverse"

    def select(self, step: int, lambdas: Mapping[str, float] | None) -> set[str]:
        """Update the EMA; all on in warm-up, else those below the threshold."""
        if lambdas is None:
            raise ValueError("InversePolicy needs lambda_max at every re-selection")
        s = self._smooth(lambdas)
        if step < self.warmup_steps:
            return set(self.layers)
        active = {m for m in self.layers if s[m] < self.threshold}
        return keep_per_layer(active, s, self.layers, self.min_active_per_layer, prefer_high=False)


class TemporalStopPolicy(Policy):
    """Temporal stop rule: freeze m once d_t = |lambda_t - lambda_0| has stabilised.

    d's relative change ``|d_t - d_{t-1}| / max(d_{t-1}, eps)`` must stay below ``tol``
    for ``patience`` consecutive re-selections after the warm-up; a frozen module stays
    frozen, except that the last ``min_active_per_layer`` of a layer are never frozen.

    Args:
        layers: Module -> layer.
        tol: Tolerance on the relative change of d.
        patience: Consecutive re-selections below ``tol`` before freezing.
        warmup_steps: Steps during which every module trains (and nothing freezes).
        min_active_per_layer: Modules per layer never frozen.
        eps: Floor of the denominator (d_0 = 0).
    """

    name = "temporal"
    uses_lambda = True

    def __init__(self, layers: Mapping[str, int], tol: float = 0.05, patience: int = 2,
                 warmup_steps: int = 0, min_active_per_layer: int = 1, eps: float = 1e-12):  # fmt: skip
        super().__init__(layers, warmup_steps, min_active_per_layer)
        self.tol, self.patience, self.eps = tol, patience, eps
        self.lambda0: dict[str, float] = {}
        self.last_d: dict[str, float] = {}
        self.calm: dict[str, int] = dict.fromkeys(self.layers, 0)
        self.frozen: set[str] = set()

    def select(self, step: int, lambdas: Mapping[str, float] | None) -> set[str]:
        """Update each module's d_t and freeze the modules whose d has stabilised."""
        if lambdas is None:
            raise ValueError("TemporalStopPolicy needs lambda_max at every re-selection")
        for m in self.layers:
            self.lambda0.setdefault(m, lambdas[m])
            d = abs(lambdas[m] - self.lambda0[m])
            if m in self.last_d:
                change = abs(d - self.last_d[m]) / max(self.last_d[m], self.eps)
                self.calm[m] = self.calm[m] + 1 if change < self.tol and step >= self.warmup_steps else 0
            self.last_d[m] = d
        for m in self.layers:
            if m in self.frozen or self.calm[m] < self.patience:
                continue
            layer_on = [o for o in self.layers if self.layers[o] == self.layers[m] and o not in self.frozen]
            if len(layer_on) > self.min_active_per_layer:
                self.frozen.add(m)
        return set(self.layers) - self.frozen

    def state_dict(self) -> dict[str, Any]:
        """What survives a checkpoint."""
        return {**super().state_dict(), "lambda0": dict(self.lambda0), "last_d": dict(self.last_d),
                "calm": dict(self.calm), "frozen": sorted(self.frozen)}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict``."""
        super().load_state_dict(state)
        self.lambda0, self.last_d = dict(state["lambda0"]), dict(state["last_d"])
        self.calm, self.frozen = dict(state["calm"]), set(state["frozen"])


class MatchedRandomPolicy(Policy):
    """Random gating that trains as many modules as a reference run did at each step.

    At a re-selection step the reference's active count k_t is matched: one random
    module per layer (``min_active_per_layer`` of them), then the rest uniformly at
    random; a step the reference did not re-select at keeps the current set.

    Args:
        layers: Module -> layer.
        counts: Re-selection step -> number of active modules in the reference run.
        seed: Seed of the choice (its own generator: the data order is untouched).
        min_active_per_layer: Modules per layer that stay on.
    """

    name = "random"

    def __init__(self, layers: Mapping[str, int], counts: Mapping[int, int], seed: int = 0,
                 min_active_per_layer: int = 1):  # fmt: skip
        super().__init__(layers, 0, min_active_per_layer)
        self.counts = {int(k): int(v) for k, v in counts.items()}
        self.rng = random.Random(seed)
        self.current = set(self.layers)

    def select(self, step: int, lambdas: Mapping[str, float] | None) -> set[str]:
        """Draw ``counts[step]`` modules (at least the per-layer minimum)."""
        if step not in self.counts:
            return set(self.current)
        k = self.counts[step]
        chosen: set[str] = set()
        for layer in sorted(set(self.layers.values())):
            members = [m for m in self.layers if self.layers[m] == layer]
            chosen |= set(self.rng.sample(members, min(self.min_active_per_layer, len(members))))
        rest = [m for m in self.layers if m not in chosen]
        chosen |= set(self.rng.sample(rest, max(0, min(k - len(chosen), len(rest)))))
        self.current = chosen
        return set(chosen)

    def state_dict(self) -> dict[str, Any]:
        """What survives a checkpoint."""
        return {**super().state_dict(), "rng": self.rng.getstate(), "current": sorted(self.current)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict``."""
        super().load_state_dict(state)
        rng = state["rng"]
        self.rng.setstate((rng[0], tuple(rng[1]), rng[2]))
        self.current = set(state["current"])


#: variant -> policy class (``full`` trains everything)
POLICIES: dict[str, type[Policy]] = {
    "full": Policy, "mat": ThresholdPolicy, "inverse": InversePolicy,
    "temporal": TemporalStopPolicy, "random": MatchedRandomPolicy,
}  # fmt: skip


def coefficient_of_variation(values: Sequence[float]) -> float:
    """Std / mean (population std) of positive values; NaN for an empty or zero-mean list."""
    v = [float(x) for x in values]
    if not v or sum(v) == 0:
        return math.nan
    mean = sum(v) / len(v)
    return math.sqrt(sum((x - mean) ** 2 for x in v) / len(v)) / mean
