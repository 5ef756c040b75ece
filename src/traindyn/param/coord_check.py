"""Coordinate check: size of every module's output, and of its change, over a few steps per width."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from traindyn.param.optim import make_optimizer

__all__ = ["coord_check"]

_ROOT = "output"  # the name under which the model's own output is recorded


def _loss(out: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    out = out.reshape(-1, out.shape[-1])  # (B*, C): sequence models predict per position
    if loss == "xent":
        return F.cross_entropy(out, y.reshape(-1))
    if loss == "mse":
        if y.is_floating_point():
            return F.mse_loss(out, y.reshape(out.shape))
        return F.mse_loss(out, F.one_hot(y.reshape(-1), out.shape[-1]).to(out.dtype))
    raise ValueError(f"loss={loss!r}: expected 'xent' or 'mse'")


def coord_check(
    build_model: Callable[[int], nn.Module],
    widths: Iterable[int],
    make_batch: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
    steps: int = 3,
    lr: float = 0.1,
    optimizer: str = "sgd",
    seeds: Iterable[int] = (0,),
    *,
    loss: str = "xent",
    momentum: float = 0.0,
    module_filter: Callable[[str, nn.Module], bool] | None = None,
) -> pd.DataFrame:
    """Train each width a few steps on one fixed batch and record every module's output size.

    As the mup library's ``get_coord_data`` with ``fix_data=True``: forward hooks on
    the modules record, at step 0 (init) and after each of ``steps`` optimizer steps,
    ``act_l1 = mean |x_t|`` and ``delta_act_l1 = mean |x_t - x_0|`` of each module's
    output ``x`` on the fixed batch. Under muP both are flat in width; under SP the
    change grows with width, under NTK it vanishes.

    Args:
        build_model: ``width -> model``, called after ``torch.manual_seed(seed)``; the
            model must carry ``width`` and ``depth`` (see ``make_optimizer``).
        widths: Widths to compare.
        make_batch: ``seed -> (x, y)``, the fixed batch (y: class indices or targets).
        steps: Optimizer steps.
        lr: Base learning rate eta0 (scaled per group by the model's parameterization).
        optimizer: ``"sgd"``, ``"adam"`` or ``"adamw"``.
        seeds: Seeds; each seeds both the model and the batch.
        loss: ``"xent"`` (cross-entropy) or ``"mse"`` (against one-hot or float targets).
        momentum: SGD momentum.
        module_filter: ``(name, module) -> bool`` selecting modules; default: all.
            The model's own output is recorded under the name ``"output"``.

    Returns:
        Long-format table with columns ``width, seed, step, module, statistic, value``;
        ``statistic`` is ``"act_l1"`` or ``"delta_act_l1"``. Modules whose output is not
        a tensor are skipped.
    """
    rows: list[dict[str, Any]] = []
    for seed in seeds:
        for width in widths:
            torch.manual_seed(seed)
            model = build_model(width)
            x, y = make_batch(seed)
            opt = make_optimizer(model, optimizer, lr, momentum=momentum)
            for step, name, statistic, value in _trace(
                model, opt, x, y, steps, loss, module_filter
            ):
                rows.append(
                    {
                        "width": width,
                        "seed": seed,
                        "step": step,
                        "module": name,
                        "statistic": statistic,
                        "value": value,
                    }
                )
    return pd.DataFrame(rows, columns=["width", "seed", "step", "module", "statistic", "value"])


def _trace(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    steps: int,
    loss: str,
    module_filter: Callable[[str, nn.Module], bool] | None,
) -> list[tuple[int, str, str, float]]:
    """Return (step, module, statistic, value) of one model trained ``steps`` steps on (x, y)."""
    acts: dict[str, torch.Tensor] = {}

    def hook(name: str) -> Callable[[nn.Module, Any, Any], None]:
        def record(_m: nn.Module, _inp: Any, out: Any) -> None:
            if isinstance(out, torch.Tensor):
                acts[name] = out.detach().clone()

        return record

    handles = [
        module.register_forward_hook(hook(name or _ROOT))
        for name, module in model.named_modules()
        if module_filter is None or module_filter(name or _ROOT, module)
    ]
    out_rows: list[tuple[int, str, str, float]] = []
    try:
        acts0: dict[str, torch.Tensor] = {}
        for step in range(steps + 1):
            acts.clear()
            out = model(x)
            if step == 0:
                acts0 = dict(acts)
            for name, a in acts.items():
                out_rows.append((step, name, "act_l1", a.abs().mean().item()))
                out_rows.append((step, name, "delta_act_l1", (a - acts0[name]).abs().mean().item()))
            if step < steps:
                opt.zero_grad(set_to_none=True)
                _loss(out, y, loss).backward()
                opt.step()
    finally:
        for h in handles:
            h.remove()
    return out_rows
