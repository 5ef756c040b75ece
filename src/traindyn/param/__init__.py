"""Parameterizations (SP, NTK, muP, depth-muP) in multiplier form: rules, layers, optimizers."""

from traindyn.param.coord_check import coord_check
from traindyn.param.layers import (
    ParamConv2d,
    ParamEmbedding,
    ParamLayer,
    ParamLinear,
    ResidualBlock,
)
from traindyn.param.optim import make_optimizer, param_groups
from traindyn.param.rules import LayerRule, Parameterization

__all__ = [
    "LayerRule",
    "ParamConv2d",
    "ParamEmbedding",
    "ParamLayer",
    "ParamLinear",
    "Parameterization",
    "ResidualBlock",
    "coord_check",
    "make_optimizer",
    "param_groups",
]
