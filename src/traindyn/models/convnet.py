"""A small ConvNet with a width multiplier: stride-2 conv stack, global average pool, readout."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from traindyn.models._common import module_params
from traindyn.param import ParamConv2d, Parameterization, ParamLinear

__all__ = ["ConvNet"]


class ConvNet(nn.Module):
    """``depth`` 3x3 conv layers of ``width`` channels, ReLU, global average pool, readout.

    The first conv (input role, fan-in ``in_channels * 9``) keeps the resolution, each
    later conv (hidden role, fan-in ``width * 9``) halves it: 28 -> 28 -> 14 -> 7 and
    32 -> 32 -> 16 -> 8 for the default depth 3.

    Args:
        width: Channels of every conv layer (N).
        depth: Number of conv layers, at least 1.
        param: The parameterization.
        in_channels: Input channels (1 for 28x28 MNIST-like, 3 for 32x32 CIFAR-like).
        out_dim: Number of classes.
        bias: Whether the layers have biases.
    """

    def __init__(
        self,
        width: int,
        depth: int,
        param: Parameterization,
        in_channels: int = 1,
        out_dim: int = 10,
        bias: bool = False,
    ) -> None:
        super().__init__()
        self.width, self.depth, self.param = width, depth, param
        kw = {"param": param, "width": width, "bias": bias, "padding": 1}
        self.convs = nn.ModuleList(
            [ParamConv2d(in_channels, width, 3, role="input", stride=1, **kw)]
            + [
                ParamConv2d(width, width, 3, role="hidden", stride=2, **kw)
                for _ in range(depth - 1)
            ]
        )
        self.readout = ParamLinear(
            width, out_dim, role="readout", param=param, width=width, bias=bias
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map images (B, C, H, W) to logits (B, out_dim)."""
        h = x
        for conv in self.convs:
            h = F.relu(conv(h))  # (B, N, H', W')
        return self.readout(h.mean(dim=(2, 3)))  # (B, out_dim)

    def ntk_modules(self, all_params: bool = False) -> dict[str, list[str]]:
        """Map each layer (``convs.{i}``, ``readout``) to its parameter names.

        Args:
            all_params: Accepted for a uniform API; the layers already cover everything.

        Returns:
            Module name -> parameter names, in forward order.
        """
        return module_params(self, [f"convs.{i}" for i in range(self.depth)] + ["readout"])
