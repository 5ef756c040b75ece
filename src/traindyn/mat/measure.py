"""One MAT measurement: every module's mNTK lambda_max and its outputs' effective rank."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from traindyn.mat.registry import GateModule
from traindyn.spectra.flat import _eval_mode
from traindyn.spectra.module_ntk import module_ntk

__all__ = ["Measurement", "effective_rank", "measure_modules"]


@dataclass(frozen=True)
class Measurement:
    """Per-module statistics of one measurement, and what it cost.

    Attributes:
        lambda_max: Module -> largest eigenvalue of its mNTK (class-trace scalarisation
            by default).
        lambda_max_cos: Module -> largest eigenvalue of the cosine-normalised kernel.
        trace: Module -> trace of its mNTK.
        erank: Module -> effective rank of its outputs on the probe set.
        lambda_max_union: lambda_max of the sum of the modules' kernels.
        seconds: Wall time of the measurement.
        flops: FLOPs counted by ``FlopCounterMode`` (None unless ``count_flops``).
    """

    lambda_max: dict[str, float]
    lambda_max_cos: dict[str, float]
    trace: dict[str, float]
    erank: dict[str, float]
    lambda_max_union: float
    seconds: float
    flops: int | None


def effective_rank(h: torch.Tensor) -> float:
    """Exp of the entropy of the normalised singular values of h, shape ``(rows, features)``.

    Between 1 (rank one) and ``min(rows, features)`` (all singular values equal); 0 for
    a zero matrix.
    """
    s = torch.linalg.svdvals(h.double())
    if float(s.sum()) == 0.0:
        return 0.0
    p = s / s.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def _outputs_as_rows(out: torch.Tensor) -> torch.Tensor:
    if out.ndim == 4:  # (B, C, H, W): a conv layer's channels are the features
        out = out.movedim(1, -1)
    return out.reshape(-1, out.shape[-1])  # (rows, features)


def measure_modules(model: nn.Module, x: torch.Tensor, registry: Mapping[str, GateModule], *,
                    scalarisation: str = "class_trace", n_projections: int = 4, seed: int = 0,
                    count_flops: bool = False) -> Measurement:  # fmt: skip
    """Measure every module on the probe inputs ``x`` in eval mode (modes restored).

    All modules' kernels come from one pass of per-sample gradients
    (``traindyn.spectra.module_ntk``); the effective ranks from one forward pass.

    Args:
        model: The model.
        x: Probe inputs, shape ``(n, ...)``, held out from training.
        registry: The modules (``module_registry``).
        scalarisation: ``"class_trace"`` or ``"trace"`` (see ``output_projections``).
        n_projections: Random projections of the class-trace estimate.
        seed: Seed of the projections (fixed per run: the same kernel estimate each time).
        count_flops: Also count the measurement's FLOPs with ``FlopCounterMode``.

    Returns:
        The measurement.
    """
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False) if count_flops else None
    start = time.perf_counter()
    if counter is not None:
        counter.__enter__()
    try:
        res = module_ntk(model, x, {m: list(g.pieces) for m, g in registry.items()},
                         scalarisation=scalarisation, n_projections=n_projections, seed=seed)  # fmt: skip
        outputs: dict[str, torch.Tensor] = {}
        hooks = [model.get_submodule(g.output).register_forward_hook(
            lambda _m, _i, out, name=m: outputs.__setitem__(name, out.detach()))
            for m, g in registry.items()]  # fmt: skip
        try:
            with _eval_mode(model), torch.no_grad():
                model(x)
        finally:
            for h in hooks:
                h.remove()
        erank = {m: effective_rank(_outputs_as_rows(outputs[m])) for m in registry}
    finally:
        if counter is not None:
            counter.__exit__(None, None, None)
    return Measurement(
        lambda_max=res.lambda_max,
        lambda_max_cos=res.lambda_max_cos,
        trace={m: float(k.trace()) for m, k in res.Theta.items()},
        erank=erank,
        lambda_max_union=res.lambda_max_full,
        seconds=time.perf_counter() - start,
        flops=int(counter.get_total_flops()) if counter is not None else None,
    )
