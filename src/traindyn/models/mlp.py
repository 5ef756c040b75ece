"""Fully connected networks: a plain MLP and a residual MLP with depth-scaled branches."""

from __future__ import annotations

import torch
from torch import nn

from traindyn.models._common import ACTIVATIONS, module_params
from traindyn.param import Parameterization, ParamLinear, ResidualBlock

__all__ = ["MLP", "ResMLP", "ResMLPBlock"]


class MLP(nn.Module):
    """``in_dim -> width -> ... -> width -> out_dim`` with ``depth`` hidden layers.

    ``layers[0]`` is the input layer, ``layers[1:]`` the hidden layers, ``readout`` the
    readout; the activation follows every layer but the readout. Inputs are flattened,
    so images ``(B, C, H, W)`` with ``C*H*W = in_dim`` are accepted.

    Args:
        width: Hidden width N.
        depth: Number of hidden layers (activations), at least 1.
        param: The parameterization.
        in_dim: Input size.
        out_dim: Output size.
        activation: ``"relu"``, ``"tanh"``, ``"gelu"`` or ``"linear"``.
        bias: Whether the layers have biases.
    """

    def __init__(
        self,
        width: int,
        depth: int,
        param: Parameterization,
        in_dim: int = 784,
        out_dim: int = 10,
        activation: str = "relu",
        bias: bool = False,
    ) -> None:
        super().__init__()
        self.width, self.depth, self.param = width, depth, param
        self.act = ACTIVATIONS[activation]
        kw = {"param": param, "width": width, "bias": bias}
        self.layers = nn.ModuleList(
            [ParamLinear(in_dim, width, role="input", **kw)]
            + [ParamLinear(width, width, role="hidden", **kw) for _ in range(depth - 1)]
        )
        self.readout = ParamLinear(width, out_dim, role="readout", **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map inputs (B, ...) to outputs (B, out_dim)."""
        h = x.flatten(1)  # (B, in_dim)
        for layer in self.layers:
            h = self.act(layer(h))  # (B, N)
        return self.readout(h)  # (B, out_dim)

    def ntk_modules(self, all_params: bool = False) -> dict[str, list[str]]:
        """Map each layer (``layers.{i}``, ``readout``) to its parameter names.

        Args:
            all_params: Accepted for a uniform API; the layers already cover everything.

        Returns:
            Module name -> parameter names, in forward order.
        """
        return module_params(self, [f"layers.{i}" for i in range(self.depth)] + ["readout"])


class ResMLPBlock(ResidualBlock):
    """``h + branch_scale * W2 act(W1 h)`` with two hidden-role layers.

    Args:
        width: Width N.
        param: The parameterization.
        depth: L, the number of blocks in the model (sets ``branch_scale``).
        activation: Name of the activation.
        bias: Whether the layers have biases.
    """

    def __init__(
        self, width: int, param: Parameterization, depth: int, activation: str, bias: bool
    ) -> None:
        super().__init__(param, depth)
        self.act = ACTIVATIONS[activation]
        self.fc1 = ParamLinear(width, width, role="hidden", param=param, width=width, bias=bias)
        self.fc2 = ParamLinear(width, width, role="hidden", param=param, width=width, bias=bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Apply the block: (B, N) -> (B, N)."""
        return h + self.branch_scale * self.fc2(self.act(self.fc1(h)))  # (B, N)


class ResMLP(nn.Module):
    """Residual MLP: input layer, ``depth`` residual blocks, readout.

    Why the branch carries only ``L^-alpha`` and no extra ``1/sqrt(N)``: the table's
    NTK/muP branch ``F(h)/sqrt(N)`` is written for a branch ending in a raw ``N(0, 1)``
    matrix, where ``1/sqrt(N)`` is that layer's fan-in multiplier. In multiplier form
    ``fc2`` already multiplies by ``1/sqrt(fan_in)``, so ``F(h)`` has O(1) coordinates
    at every width (as under SP); dividing again would make every branch, and every
    branch's feature update, vanish like ``1/sqrt(N)``. With ``q_l`` the mean square
    of ``h_l`` and ReLU, ``q_{l+1} = q_l (1 + s^2 / 2)`` at init, so the branch scale
    ``s = L^-alpha`` gives ``q_L -> q_0 e^{1/2}`` for alpha = 1/2 (O(1) at any depth),
    ``q_0 (3/2)^L`` for alpha = 0 and ``q_0`` for alpha = 1.

    Args:
        width: Width N.
        depth: L, the number of residual blocks, at least 1.
        param: The parameterization (its ``depth_alpha`` sets the branch scale).
        in_dim: Input size.
        out_dim: Output size.
        activation: Activation inside the branches.
        bias: Whether the layers have biases.
    """

    def __init__(
        self,
        width: int,
        depth: int,
        param: Parameterization,
        in_dim: int = 784,
        out_dim: int = 10,
        activation: str = "relu",
        bias: bool = False,
    ) -> None:
        super().__init__()
        self.width, self.depth, self.param = width, depth, param
        kw = {"param": param, "width": width, "bias": bias}
        self.input = ParamLinear(in_dim, width, role="input", **kw)
        self.blocks = nn.ModuleList(
            [ResMLPBlock(width, param, depth, activation, bias) for _ in range(depth)]
        )
        self.readout = ParamLinear(width, out_dim, role="readout", **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map inputs (B, ...) to outputs (B, out_dim)."""
        h = self.input(x.flatten(1))  # (B, N)
        for block in self.blocks:
            h = block(h)  # (B, N)
        return self.readout(h)  # (B, out_dim)

    def ntk_modules(self, all_params: bool = False) -> dict[str, list[str]]:
        """Map each layer (``input``, ``blocks.{l}.fc1``, ``blocks.{l}.fc2``, ``readout``) to its parameters.

        Args:
            all_params: Accepted for a uniform API; the layers already cover everything.

        Returns:
            Module name -> parameter names, in forward order.
        """
        blocks = [f"blocks.{i}.{fc}" for i in range(self.depth) for fc in ("fc1", "fc2")]
        return module_params(self, ["input", *blocks, "readout"])
