"""Analytic FLOPs per GEMM (forward, input gradient, weight gradient: 2mnk each) of one step."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from traindyn.models.attention import AttentionHead
from traindyn.param import ParamConv2d, ParamLinear

__all__ = ["Gemm", "GemmCounter", "gemm_table", "step_flops", "torch_step_flops"]


@dataclass(frozen=True)
class Gemm:
    """One matrix product of the forward pass and what its backward costs.

    Attributes:
        module: The submodule that runs it (``blocks.0.attn.heads.1.q``).
        weight: The weight it multiplies by (None for activation products ``q k^T``).
        forward: 2mnk of the forward product.
        input_grad: 2mnk of the gradients of its activation operands (0 when none
            requires a gradient).
        weight_grad: 2mnk of the weight gradient (0 when the weight is frozen).
    """

    module: str
    weight: str | None
    forward: int
    input_grad: int
    weight_grad: int


def _needs(module: nn.Module) -> bool:
    return any(p.requires_grad for p in module.parameters())


def gemm_table(model: nn.Module, x: torch.Tensor) -> list[Gemm]:
    """Every GEMM of ``model(x)`` with its cost under the parameters' current ``requires_grad``.

    Counted: ``ParamLinear`` (2 m out in; m = rows of the input), ``ParamConv2d``
    (2 B C_out H' W' C_in k^2) and the two products of each ``AttentionHead``
    (``q k^T`` and ``att v``: 2 B T^2 d_head each; their backward costs one such
    product per operand that requires a gradient). Embedding lookups, norms and
    element-wise ops are not GEMMs and cost nothing here (nor in
    ``torch.utils.flop_counter``). The forward runs on a copy of the model on the
    meta device: no arithmetic is done.

    Args:
        model: A model built from ``ParamLinear`` / ``ParamConv2d`` (and heads).
        x: A batch of the step's shape (any device; only its shape and dtype count).

    Returns:
        The GEMMs in forward order.
    """
    meta = copy.deepcopy(model).to("meta")
    for (_, p), (_, q) in zip(model.named_parameters(), meta.named_parameters(), strict=True):
        q.requires_grad_(p.requires_grad)
    return _table(meta, torch.empty_like(x, device="meta"))


def _table(meta: nn.Module, x: torch.Tensor) -> list[Gemm]:
    rows: list[Gemm] = []
    names = {m: n for n, m in meta.named_modules()}

    def linear(mod: ParamLinear, inp, out) -> None:
        (a,) = inp
        mnk = 2 * (a.numel() // mod.in_features) * mod.in_features * mod.out_features
        rows.append(Gemm(names[mod], f"{names[mod]}.weight", mnk,
                         mnk if a.requires_grad else 0, mnk if mod.weight.requires_grad else 0))  # fmt: skip

    def conv(mod: ParamConv2d, inp, out) -> None:
        (a,) = inp
        b, c_out, h, w = out.shape
        mnk = 2 * b * c_out * h * w * mod.in_channels * mod.kernel_size**2
        rows.append(Gemm(names[mod], f"{names[mod]}.weight", mnk,
                         mnk if a.requires_grad else 0, mnk if mod.weight.requires_grad else 0))  # fmt: skip

    def head(mod: AttentionHead, inp, out) -> None:
        (a,) = inp
        b, t, d = out.shape
        mnk = 2 * b * t * t * d
        q, k, v = (a.requires_grad or _needs(lin) for lin in (mod.q, mod.k, mod.v))
        att = q or k
        rows.append(Gemm(f"{names[mod]}.qk", None, mnk, mnk * (q + k), 0))
        rows.append(Gemm(f"{names[mod]}.av", None, mnk, mnk * (att + v), 0))

    hooks = []
    for mod in meta.modules():
        fn = linear if isinstance(mod, ParamLinear) else conv if isinstance(mod, ParamConv2d) else (
            head if isinstance(mod, AttentionHead) else None)  # fmt: skip
        if fn is not None:
            hooks.append(mod.register_forward_hook(fn))
    try:
        with torch.enable_grad():
            meta(x)
    finally:
        for h in hooks:
            h.remove()
    return rows


def step_flops(table: list[Gemm]) -> dict[str, int]:
    """Totals of a table: ``forward``, ``input_grad``, ``weight_grad`` and ``total``."""
    out = {k: sum(getattr(g, k) for g in table) for k in ("forward", "input_grad", "weight_grad")}
    return {**out, "total": sum(out.values())}


class GemmCounter:
    """Keeps a meta copy of a model and recounts a step's FLOPs when its gates change.

    Args:
        model: The trained model (its ``requires_grad`` flags are read at each count).
        x: A training batch (its shape is the step's).
    """

    def __init__(self, model: nn.Module, x: torch.Tensor) -> None:
        self.model = model
        self.meta = copy.deepcopy(model).to("meta")
        self.x = torch.empty_like(x, device="meta")

    def count(self) -> dict[str, int]:
        """FLOPs of one training step under the model's current ``requires_grad``."""
        for (_, p), (_, q) in zip(self.model.named_parameters(), self.meta.named_parameters(), strict=True):
            q.requires_grad_(p.requires_grad)
        return step_flops(_table(self.meta, self.x))


def torch_step_flops(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn) -> int:
    """FLOPs of one forward + backward as ``torch.utils.flop_counter.FlopCounterMode`` counts them.

    The model's gradients are left as they were before the call.
    """
    from torch.utils.flop_counter import FlopCounterMode

    saved = {n: p.grad for n, p in model.named_parameters()}
    counter = FlopCounterMode(display=False)
    with counter:
        loss_fn(model(x), y).backward()
    for n, p in model.named_parameters():
        p.grad = saved[n]
    return int(counter.get_total_flops())
