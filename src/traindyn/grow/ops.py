"""Growth operators: apply a plan (or Net2WiderNet) from a base model's weights into a built target model."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["apply_depth_plan", "grow_moments", "net2wider", "zero_branches"]

_BRANCH_OUT = ("attn.o", "mlp.down")  # the two projections that end a block's residual branches


def _block_key(key: str) -> tuple[int, str] | None:
    if not key.startswith("blocks."):
        return None
    _, idx, rest = key.split(".", 2)
    return int(idx), rest


@torch.no_grad()
def zero_branches(block: nn.Module) -> None:
    """Zero a block's attention output projection and MLP down-projection (weights and biases).

    In a pre-LN block ``x + s attn(ln1(x))``, ``x + s mlp(ln2(x))`` both branches then
    output 0: the block is exactly the identity, whatever its other weights.
    """
    for name in _BRANCH_OUT:
        layer = block.get_submodule(name)
        layer.weight.zero_()
        if layer.bias is not None:
            layer.bias.zero_()


@torch.no_grad()
def apply_depth_plan(target: nn.Module, base_state: dict[str, torch.Tensor], plan: list[dict[str, Any]],
                     branch_ratio: float = 1.0) -> None:  # fmt: skip
    """Load a base model's weights into a deeper ``target`` following ``plan``, in place.

    Every tensor is copied (``copy_`` into the target's own parameters): no two blocks
    share storage, so training one copy leaves its source and the other copies alone.
    Embeddings, final norm and head come unchanged from the base; a block whose ``src``
    is None keeps the target's default init; ``zero`` blocks get ``zero_branches``.

    Args:
        target: The grown model, already built at its depth (``len(plan)`` blocks).
        base_state: The base model's ``state_dict``.
        plan: One ``{"src", "zero"}`` per target block (``traindyn.grow.plans``).
        branch_ratio: Factor on each copied block's branch outputs (``attn.o`` and
            ``mlp.down``): ``s_base / s_target`` keeps every block's contribution when the
            residual branch scale depends on depth (depth-muP); 1 under SP.

    Raises:
        ValueError: If the plan's length is not the target's depth, a source block is not
            in the base, or a tensor's shape differs.
    """
    if len(plan) != len(target.blocks):
        raise ValueError(f"plan has {len(plan)} blocks but the target model has {len(target.blocks)}")
    base_depth = 1 + max((k[0] for k in map(_block_key, base_state) if k), default=-1)
    state = target.state_dict()
    for key, tensor in state.items():
        where = _block_key(key)
        if where is None:
            src_key = key
        else:
            entry = plan[where[0]]
            if entry["src"] is None:
                continue
            if not 0 <= entry["src"] < base_depth:
                raise ValueError(f"plan block {where[0]} copies base block {entry['src']}, "
                                 f"but the base has {base_depth} blocks")  # fmt: skip
            src_key = f"blocks.{entry['src']}.{where[1]}"
        if src_key not in base_state or base_state[src_key].shape != tensor.shape:
            got = tuple(base_state[src_key].shape) if src_key in base_state else "missing"
            raise ValueError(f"{key}: the base's {src_key} is {got}, the target wants {tuple(tensor.shape)}")
        tensor.copy_(base_state[src_key])
        if where is not None and branch_ratio != 1.0 and where[1].startswith(_BRANCH_OUT):
            tensor.mul_(branch_ratio)
    for block, entry in zip(target.blocks, plan, strict=True):
        if entry["zero"]:
            zero_branches(block)


@torch.no_grad()
def net2wider(target: nn.Module, base_state: dict[str, torch.Tensor], base_down_multiplier: float,
              generator: torch.Generator) -> None:  # fmt: skip
    """Net2WiderNet on every block's MLP hidden layer: widen ``H -> H'`` keeping the function.

    New hidden unit ``j >= H`` copies the incoming weights (``up`` row and bias) of a
    uniformly drawn unit ``g(j)``; every outgoing column of ``down`` is divided by the number
    of copies of its unit, so the sum over copies is the base's output exactly. The
    layers' multipliers are folded in (``down``'s fan-in changes from H to H'), so the
    function is preserved under any parameterization. Everything else is copied unchanged.

    Args:
        target: The wider model (same depth, ``mlp.up`` of H' >= H rows), already built.
        base_state: The base model's ``state_dict``.
        base_down_multiplier: The base's ``mlp.down`` output multiplier.
        generator: Draws the copied units (seeded: the same growth for the same seed).
    """
    state = target.state_dict()
    for key, tensor in state.items():
        if ".mlp.up." not in key and ".mlp.down." not in key:
            tensor.copy_(base_state[key])
    for i, block in enumerate(target.blocks):
        up, down = block.mlp.up, block.mlp.down
        w_up, w_down = base_state[f"blocks.{i}.mlp.up.weight"], base_state[f"blocks.{i}.mlp.down.weight"]
        H, H_new = w_up.shape[0], up.weight.shape[0]
        if H_new < H:
            raise ValueError(f"net2wider: target MLP hidden {H_new} is narrower than the base's {H}")
        g = torch.cat([torch.arange(H), torch.randint(0, H, (H_new - H,), generator=generator)])  # (H',)
        counts = torch.bincount(g, minlength=H).to(w_down.dtype)  # (H,)
        up.weight.copy_(w_up[g])
        if up.bias is not None:
            up.bias.copy_(base_state[f"blocks.{i}.mlp.up.bias"][g])
        effective = base_down_multiplier * w_down[:, g] / counts[g]  # (N, H')
        down.weight.copy_(effective / down.multiplier)
        if down.bias is not None:
            down.bias.copy_(base_state[f"blocks.{i}.mlp.down.bias"])


def _source_name(name: str, plan: list[dict[str, Any]]) -> str | None:
    where = _block_key(name)
    if where is None:
        return name
    entry = plan[where[0]]
    if entry["src"] is None or entry["zero"]:
        return None
    return f"blocks.{entry['src']}.{where[1]}"


@torch.no_grad()
def grow_moments(optimizer: torch.optim.Optimizer, base_optimizer_state: dict[str, Any], base_names: list[str],
                 plan: list[dict[str, Any]], branch_ratio: float = 1.0) -> int:  # fmt: skip
    """Give the grown model's Adam state the base's moments, following ``plan`` (the ablation).

    Copied blocks (and embeddings, final norm, head) start from their source's
    ``exp_avg``, ``exp_avg_sq`` and step; new and zeroed blocks start fresh. Moments of
    branch outputs scaled by ``branch_ratio`` are scaled alike (``exp_avg_sq`` squared).

    Args:
        optimizer: The grown model's Adam/AdamW, groups carrying ``param_names``.
        base_optimizer_state: The base optimizer's ``state_dict()``.
        base_names: The base's parameter names in the order of its ``state_dict`` ids.
        plan: The depth plan used for the weights.
        branch_ratio: As in ``apply_depth_plan``.

    Returns:
        The number of parameters that got moments.
    """
    by_name = {name: base_optimizer_state["state"][i] for i, name in enumerate(base_names)
               if i in base_optimizer_state["state"]}  # fmt: skip
    moved = 0
    for group in optimizer.param_groups:
        for name, p in zip(group["param_names"], group["params"], strict=True):
            src = _source_name(name, plan)
            if src not in by_name:
                continue
            st = {k: v.clone() if torch.is_tensor(v) else v for k, v in by_name[src].items()}
            if branch_ratio != 1.0 and _block_key(name) and _block_key(name)[1].startswith(_BRANCH_OUT):
                st["exp_avg"].mul_(branch_ratio)
                st["exp_avg_sq"].mul_(branch_ratio**2)
            optimizer.state[p] = {k: v.to(p.device) if torch.is_tensor(v) and k != "step" else v for k, v in st.items()}
            moved += 1
    return moved
