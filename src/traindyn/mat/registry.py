"""The module registry MAT measures and gates: attention heads, or a ConvNet's layers."""

from __future__ import annotations

import re
from dataclasses import dataclass

from torch import nn

__all__ = ["GateModule", "module_registry"]

_HEAD = re.compile(r"^blocks\.(\d+)\.attn\.heads\.(\d+)$")


@dataclass(frozen=True)
class GateModule:
    """One module: what is measured (its mNTK, its outputs' rank) and what is gated.

    Attributes:
        name: Module name, e.g. ``blocks.2.attn.heads.1`` or ``convs.0``.
        layer: The group inside which at least ``min_active_per_layer`` modules stay on
            (the block of a head; 0 for every ConvNet layer).
        index: Position inside the layer (head number; layer number for a ConvNet).
        params: Full names of the parameters that ``requires_grad`` gates (q, k, v).
        pieces: What the mNTK differentiates: ``params``, plus W_O's columns of this
            head in the W_O ablation (measured, never gated: W_O is one tensor).
        output: Submodule whose output's effective rank is measured.
    """

    name: str
    layer: int
    index: int
    params: tuple[str, ...]
    pieces: tuple
    output: str


def module_registry(model: nn.Module, include_o: bool = False) -> dict[str, GateModule]:
    """Every gateable module of a GPT or ViT (its heads) or a ConvNet (its layers).

    Built on ``model.ntk_modules()``, so measurement (``traindyn.spectra.module_ntk``)
    and gating use the same parameter lists.

    Args:
        model: A ``GPT``, ``ViT`` or ``ConvNet``.
        include_o: Add each head's slice of W_O (columns ``h d_head .. (h+1) d_head``
            of ``attn.o.weight``) to what its mNTK measures (the ablation).

    Returns:
        Module name -> ``GateModule``, in forward order.

    Raises:
        ValueError: If the model has no ``ntk_modules``, or ``include_o`` is asked of a
            model without heads.
    """
    if not hasattr(model, "ntk_modules"):
        raise ValueError(f"{type(model).__name__} has no ntk_modules(): MAT needs a GPT, ViT or ConvNet")
    modules = model.ntk_modules()
    heads = {name: _HEAD.match(name) for name in modules}
    out: dict[str, GateModule] = {}
    if all(heads.values()):
        for name, match in heads.items():
            layer, h = int(match[1]), int(match[2])
            pieces: list = list(modules[name])
            if include_o:
                d_head = model.get_submodule(name).q.out_features
                cols = slice(h * d_head, (h + 1) * d_head)
                pieces.append((f"blocks.{layer}.attn.o.weight", (slice(None), cols)))
            out[name] = GateModule(name, layer, h, tuple(modules[name]), tuple(pieces), name)
        return out
    if include_o:
        raise ValueError(f"mat.include_o needs attention heads; {type(model).__name__} has none")
    for i, (name, params) in enumerate(modules.items()):
        out[name] = GateModule(name, 0, i, tuple(params), tuple(params), name)
    return out
