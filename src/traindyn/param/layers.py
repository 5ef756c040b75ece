"""Layers in multiplier form: raw weights initialised by the rule, output times a constant."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from traindyn.param.rules import Parameterization

__all__ = ["ParamConv2d", "ParamEmbedding", "ParamLayer", "ParamLinear", "ResidualBlock"]


class ParamLayer(nn.Module):
    """Base of every parameterized layer: role, fan-in, width and the multiplier.

    Subclasses own ``weight`` (role ``self.role``) and optionally ``bias``, which is
    treated as a fan-in-1 weight: multiplier 1, zero init, role ``"vector"`` (or
    ``"readout_bias"`` on the readout), so it is added after the multiplier.

    Attributes:
        role: ``"input"``, ``"hidden"`` or ``"readout"``.
        fan_in: Inputs summed per output coordinate.
        width: Model width N the layer was built for.
        param: The parameterization.
        multiplier: The constant the output is multiplied by.
    """

    weight: nn.Parameter
    bias: nn.Parameter | None

    def __init__(self, *, role: str, fan_in: int, width: int, param: Parameterization) -> None:
        super().__init__()
        if role not in ("input", "hidden", "readout"):
            raise ValueError(f"role={role!r}: a layer is 'input', 'hidden' or 'readout'")
        self.role = role
        self.fan_in = fan_in
        self.width = width
        self.param = param
        self.multiplier = param.multiplier(role, fan_in, width)

    def param_roles(self) -> dict[str, str]:
        """Map this layer's own parameter names (``weight``, ``bias``) to their roles."""
        roles = {"weight": self.role}
        if self.bias is not None:
            roles["bias"] = "readout_bias" if self.role == "readout" else "vector"
        return roles

    def reset_parameters(self) -> None:
        """Draw ``weight ~ N(0, init_std^2)`` from torch's global generator; zero the bias."""
        nn.init.normal_(self.weight, mean=0.0, std=self.param.init_std(self.role, self.fan_in))
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def _scale(self, y: torch.Tensor) -> torch.Tensor:
        return y if self.multiplier == 1.0 else y * self.multiplier

    def extra_repr(self) -> str:
        """Describe role, fan-in and multiplier in the module's repr."""
        return f"role={self.role}, fan_in={self.fan_in}, multiplier={self.multiplier:.4g}"


class ParamLinear(ParamLayer):
    """Linear layer ``y = m * x W^T + b`` with ``W`` initialised and ``m`` set by the rule.

    Args:
        in_features: Input size.
        out_features: Output size.
        role: ``"input"``, ``"hidden"`` or ``"readout"``.
        param: The parameterization.
        width: Model width N.
        bias: Whether to add a (zero-initialised) bias.
        fan_in: Overrides ``in_features`` as the fan-in (e.g. 1 for one-hot inputs).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        role: str,
        param: Parameterization,
        width: int,
        bias: bool = False,
        fan_in: int | None = None,
    ) -> None:
        super().__init__(role=role, fan_in=fan_in or in_features, width=width, param=param)
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        self.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the layer: (..., in_features) -> (..., out_features)."""
        y = self._scale(F.linear(x, self.weight))  # (..., out)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        """Describe sizes, bias and the rule in the module's repr."""
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}, " + (
            super().extra_repr()
        )


class ParamConv2d(ParamLayer):
    """2-D convolution ``y = m * conv(x, W) + b``; fan-in = in_channels * k * k.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: Square kernel size k.
        role: ``"input"``, ``"hidden"`` or ``"readout"``.
        param: The parameterization.
        width: Model width N.
        stride: Convolution stride.
        padding: Zero padding on each side.
        bias: Whether to add a (zero-initialised) bias.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        role: str,
        param: Parameterization,
        width: int,
        stride: int = 1,
        padding: int = 0,
        bias: bool = False,
    ) -> None:
        super().__init__(role=role, fan_in=in_channels * kernel_size**2, width=width, param=param)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the convolution: (B, C_in, H, W) -> (B, C_out, H', W')."""
        y = self._scale(F.conv2d(x, self.weight, None, self.stride, self.padding))
        return y if self.bias is None else y + self.bias[:, None, None]

    def extra_repr(self) -> str:
        """Describe channels, kernel, stride, padding and the rule in the module's repr."""
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, " + super().extra_repr()
        )


class ParamEmbedding(ParamLayer):
    """Lookup table: a ``ParamLinear`` on one-hot inputs, so its fan-in is 1.

    The weight keeps ``nn.Embedding``'s layout ``(num_embeddings, embedding_dim)``.
    With fan-in 1 every parameterization gives raw std 1 and multiplier 1.

    Args:
        num_embeddings: Number of rows (vocabulary size or positions).
        embedding_dim: Row size (the model width).
        param: The parameterization.
        width: Model width N.
    """

    def __init__(
        self, num_embeddings: int, embedding_dim: int, *, param: Parameterization, width: int
    ) -> None:
        super().__init__(role="input", fan_in=1, width=width, param=param)
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.weight = nn.Parameter(torch.empty(num_embeddings, embedding_dim))
        self.bias = None
        self.reset_parameters()

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Look up rows: (...) integer indices -> (..., embedding_dim)."""
        return self._scale(F.embedding(idx, self.weight))

    def extra_repr(self) -> str:
        """Describe the table size and the rule in the module's repr."""
        return f"{self.num_embeddings}, {self.embedding_dim}, " + super().extra_repr()


class ResidualBlock(nn.Module):
    """Marker base of a residual block ``h + branch_scale * F(h)``.

    ``param_groups`` gives every parameter inside a ``ResidualBlock`` the depth LR
    factor. ``branch_scale`` is a plain float, so a deep copy carries it; after growing
    a model to a new depth, set it again from ``param.residual_scale(new_depth)``.

    Args:
        param: The parameterization.
        depth: L, the number of residual blocks of the model.
    """

    def __init__(self, param: Parameterization, depth: int) -> None:
        super().__init__()
        self.branch_scale = param.residual_scale(depth)
