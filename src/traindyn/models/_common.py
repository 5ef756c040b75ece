"""Helpers shared by the models: activations and the module -> parameter-names map."""

from __future__ import annotations

from collections.abc import Iterable

import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {"relu": F.relu, "tanh": F.tanh, "gelu": F.gelu, "linear": lambda x: x}


def module_params(model: nn.Module, module_names: Iterable[str]) -> dict[str, list[str]]:
    """Map each named submodule to the full names of its parameters (``named_parameters``)."""
    names = list(module_names)
    out: dict[str, list[str]] = {n: [] for n in names}
    for p_name, _ in model.named_parameters():
        owner = max((n for n in names if p_name.startswith(n + ".")), key=len, default=None)
        if owner is not None:
            out[owner].append(p_name)
    return out
