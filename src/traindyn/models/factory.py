"""``build_model(spec, param)``: a model from a strict, typed spec keyed by ``spec["arch"]``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from torch import nn

from traindyn.models._common import ACTIVATIONS
from traindyn.models.convnet import ConvNet
from traindyn.models.gpt import GPT
from traindyn.models.mlp import MLP, ResMLP
from traindyn.models.vit import ViT
from traindyn.param import Parameterization

__all__ = ["MODEL_SPECS", "ConvNetSpec", "GPTSpec", "MLPSpec", "ViTSpec", "build_model"]


@dataclass(frozen=True)
class MLPSpec:
    """Spec of ``"mlp"`` (``MLP``) and ``"resmlp"`` (``ResMLP``).

    Attributes:
        width: Hidden width N.
        depth: MLP: hidden layers; ResMLP: residual blocks L.
        in_dim: Flattened input size.
        out_dim: Output size.
        activation: ``"relu"``, ``"tanh"``, ``"gelu"`` or ``"linear"``.
        bias: Whether the layers have biases.
    """

    width: int
    depth: int
    in_dim: int = 784
    out_dim: int = 10
    activation: str = "relu"
    bias: bool = False


@dataclass(frozen=True)
class ConvNetSpec:
    """Spec of ``"convnet"``.

    Attributes:
        width: Channels of every conv layer.
        depth: Number of conv layers.
        in_channels: 1 (28x28) or 3 (32x32); any image size works (global pooling).
        out_dim: Number of classes.
        bias: Whether the layers have biases.
    """

    width: int
    depth: int = 3
    in_channels: int = 1
    out_dim: int = 10
    bias: bool = False


@dataclass(frozen=True)
class ViTSpec:
    """Spec of ``"vit"``.

    Attributes:
        width: d_model.
        depth: Number of blocks.
        image_size: Side of the square image.
        patch_size: Side of a patch; divides ``image_size``.
        in_channels: Image channels.
        out_dim: Number of classes.
        n_heads: Heads per block; divides ``width``.
        mlp_ratio: MLP hidden size over width.
        pool: ``"cls"`` or ``"mean"``.
        bias: Whether linear layers and LayerNorms have biases.
    """

    width: int
    depth: int
    image_size: int = 28
    patch_size: int = 7
    in_channels: int = 1
    out_dim: int = 10
    n_heads: int = 4
    mlp_ratio: int = 4
    pool: str = "cls"
    bias: bool = False


@dataclass(frozen=True)
class GPTSpec:
    """Spec of ``"gpt"``.

    Attributes:
        width: d_model.
        depth: Number of blocks.
        vocab_size: Number of tokens (characters).
        block_size: Maximum context length.
        n_heads: Heads per block; divides ``width``.
        mlp_ratio: MLP hidden size over width.
        bias: Whether linear layers and LayerNorms have biases.
    """

    width: int
    depth: int
    vocab_size: int
    block_size: int = 64
    n_heads: int = 4
    mlp_ratio: int = 4
    bias: bool = False


#: arch -> (spec class, model class)
MODEL_SPECS: dict[str, tuple[type, type[nn.Module]]] = {
    "mlp": (MLPSpec, MLP),
    "resmlp": (MLPSpec, ResMLP),
    "convnet": (ConvNetSpec, ConvNet),
    "vit": (ViTSpec, ViT),
    "gpt": (GPTSpec, GPT),
}


def _check(arch: str, spec: dict[str, Any]) -> list[str]:
    cls, _ = MODEL_SPECS[arch]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    problems = [f"unknown key {k!r} for arch {arch!r}" for k in spec if k not in fields]
    for name, f in fields.items():
        if name not in spec:
            if f.default is dataclasses.MISSING:
                problems.append(f"missing required key {name!r} for arch {arch!r}")
            continue
        value = spec[name]
        if f.type == "bool":
            ok, expected = isinstance(value, bool), "true or false"
        elif f.type == "int":
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
            expected = "a positive int"
        else:
            ok, expected = isinstance(value, str), "a string"
        if not ok:
            problems.append(f"{name}={value!r}: expected {expected}")
    if problems:
        return problems
    if spec.get("activation", "relu") not in ACTIVATIONS:
        problems.append(f"activation={spec['activation']!r}: expected one of {list(ACTIVATIONS)}")
    if spec.get("pool", "cls") not in ("cls", "mean"):
        problems.append(f"pool={spec['pool']!r}: expected 'cls' or 'mean'")
    if "n_heads" in fields and spec["width"] % spec.get("n_heads", fields["n_heads"].default):
        problems.append(f"width={spec['width']} is not divisible by n_heads")
    if arch == "vit" and spec.get("image_size", 28) % spec.get("patch_size", 7):
        problems.append("image_size is not divisible by patch_size")
    return problems


def build_model(spec: dict[str, Any], param: Parameterization) -> nn.Module:
    """Build a model from its spec; seed with ``torch.manual_seed`` before calling.

    Args:
        spec: ``{"arch": "mlp" | "resmlp" | "convnet" | "vit" | "gpt", ...}`` with the
            keys of the arch's spec class (``MLPSpec``, ``ConvNetSpec``, ``ViTSpec``,
            ``GPTSpec``); keys left out take the class defaults.
        param: The parameterization every layer follows.

    Returns:
        The model, with ``width``, ``depth`` and ``ntk_modules()``.

    Raises:
        ValueError: Listing every problem of the spec (unknown arch or key, missing
            key, wrong type, inconsistent sizes).
    """
    arch = spec.get("arch")
    if arch not in MODEL_SPECS:
        raise ValueError(f"arch={arch!r}: expected one of {sorted(MODEL_SPECS)}")
    rest = {k: v for k, v in spec.items() if k != "arch"}
    problems = _check(arch, rest)
    if problems:
        raise ValueError(f"invalid model spec ({arch}): " + "; ".join(problems))
    spec_cls, model_cls = MODEL_SPECS[arch]
    return model_cls(param=param, **dataclasses.asdict(spec_cls(**rest)))
