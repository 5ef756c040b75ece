"""Optimizer parameter groups with each group's learning rate and weight decay scaled by the rule."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from traindyn.param.layers import ParamLayer, ResidualBlock
from traindyn.param.rules import OPTIMIZERS, Parameterization

__all__ = ["make_optimizer", "param_groups"]


def _model_param(model: nn.Module) -> Parameterization:
    params = {m.param for m in model.modules() if isinstance(m, ParamLayer)}
    if not params:
        raise ValueError(
            f"{type(model).__name__} has no ParamLayer: build it from ParamLinear/ParamConv2d"
        )
    if len(params) > 1:
        raise ValueError(f"the model mixes parameterizations {sorted(p.tag for p in params)}")
    return params.pop()


def _classify(model: nn.Module) -> list[tuple[str, nn.Parameter, str, bool]]:
    """Return (name, parameter, role, in_branch) for every parameter, in model order."""
    out: list[tuple[str, nn.Parameter, str, bool]] = []
    branch_prefixes = [n for n, m in model.named_modules() if isinstance(m, ResidualBlock)]
    seen: set[int] = set()
    for mod_name, module in model.named_modules():
        roles = module.param_roles() if isinstance(module, ParamLayer) else {}
        for p_name, p in module.named_parameters(recurse=False):
            if id(p) in seen:  # a tied parameter is optimised once, under its first name
                continue
            seen.add(id(p))
            name = f"{mod_name}.{p_name}" if mod_name else p_name
            in_branch = any(name.startswith(b + ".") for b in branch_prefixes)
            out.append((name, p, roles.get(p_name, "vector"), in_branch))
    return out


def param_groups(
    model: nn.Module, optimizer: str, lr: float, weight_decay: float, width: int, depth: int
) -> list[dict[str, Any]]:
    """Split a model's parameters into optimizer groups with scaled LR and weight decay.

    Roles come from the ``ParamLayer`` that owns a parameter (``weight``: the layer's
    role; ``bias``: ``"vector"`` or ``"readout_bias"``); any other parameter (LayerNorm
    gains and biases) is ``"vector"``. Parameters inside a ``ResidualBlock`` also get
    the depth LR factor. Every parameter is included, trainable or not, so that
    toggling ``requires_grad`` later needs no new optimizer.

    Args:
        model: A model built from ``ParamLayer`` s of one parameterization.
        optimizer: ``"sgd"``, ``"adam"`` or ``"adamw"``.
        lr: Base learning rate eta0.
        weight_decay: Base weight decay.
        width: Model width N; must equal every layer's ``width``.
        depth: L, the number of residual blocks (ignored by models without blocks).

    Returns:
        Torch param groups, one per (role, in_branch), in model order. Each has
        ``params``, ``param_names``, ``lr`` (= lr * lr_scale), ``weight_decay``
        (= weight_decay * wd_scale) and, for logging and schedules, ``role``,
        ``in_branch``, ``lr_scale`` and ``wd_scale``.

    Raises:
        ValueError: On an unknown optimizer, a model without ``ParamLayer`` s, mixed
            parameterizations, or layers built for another width.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer={optimizer!r}: expected one of {OPTIMIZERS}")
    param = _model_param(model)
    widths = {m.width for m in model.modules() if isinstance(m, ParamLayer)}
    if widths != {width}:
        raise ValueError(f"width={width}, but the model's layers were built for {sorted(widths)}")
    groups: dict[tuple[str, bool], dict[str, Any]] = {}
    for name, p, role, in_branch in _classify(model):
        key = (role, in_branch)
        if key not in groups:
            lr_scale = param.lr_scale(role, width, optimizer, depth, in_branch)
            wd_scale = param.wd_scale(role, width, optimizer, depth, in_branch)
            groups[key] = {
                "params": [],
                "param_names": [],
                "lr": lr * lr_scale,
                "weight_decay": weight_decay * wd_scale,
                "role": role,
                "in_branch": in_branch,
                "lr_scale": lr_scale,
                "wd_scale": wd_scale,
            }
        groups[key]["params"].append(p)
        groups[key]["param_names"].append(name)
    return list(groups.values())


def make_optimizer(
    model: nn.Module,
    name: str,
    lr: float,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    *,
    width: int | None = None,
    depth: int | None = None,
) -> torch.optim.Optimizer:
    """Build a torch optimizer over ``param_groups`` (SGD weight decay is L2, AdamW decoupled).

    Args:
        model: A model built from ``ParamLayer`` s.
        name: ``"sgd"``, ``"adam"`` or ``"adamw"``.
        lr: Base learning rate eta0.
        momentum: SGD momentum (not rescaled); must be 0 for Adam/AdamW.
        weight_decay: Base weight decay.
        betas: Adam's betas.
        eps: Adam's epsilon.
        width: Model width; defaults to ``model.width``.
        depth: Number of residual blocks; defaults to ``model.depth``.

    Returns:
        ``torch.optim.SGD``, ``Adam`` or ``AdamW``.

    Raises:
        ValueError: On an unknown name, momentum with Adam, or a model lacking
            ``width``/``depth`` when they are not given.
    """
    problems = []
    if name not in OPTIMIZERS:
        problems.append(f"optimizer={name!r}: expected one of {OPTIMIZERS}")
    if name != "sgd" and momentum != 0.0:
        problems.append(f"momentum={momentum} is SGD-only: Adam's momentum is betas[0]")
    if width is None and not hasattr(model, "width"):
        problems.append("width not given and the model has no `width` attribute")
    if depth is None and not hasattr(model, "depth"):
        problems.append("depth not given and the model has no `depth` attribute")
    if problems:
        raise ValueError("make_optimizer: " + "; ".join(problems))
    width = model.width if width is None else width
    depth = model.depth if depth is None else depth
    groups = param_groups(model, name, lr, weight_decay, width, depth)
    # foreach: one multi-tensor kernel per group, not a Python loop over tensors (torch picks it
    # on CUDA only; on CPU it saves up to 2.6 ms of a 17-38 ms GPT step, benchmarks/bench_attention.py)
    if name == "sgd":
        return torch.optim.SGD(
            groups, lr=lr, momentum=momentum, weight_decay=weight_decay, foreach=True
        )
    cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
    return cls(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, foreach=True)
