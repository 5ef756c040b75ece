"""The parameterizations SP, NTK, muP and depth-muP as a table of scaling exponents.

Every rule is written in "multiplier form" (docs/methods.md, scaling study): a layer holds raw
weights ``W ~ N(0, sigma^2)`` and multiplies its output by a constant. With ``N`` the
model width, ``N0`` the base width, ``gamma = sqrt(N / N0)`` and ``L`` the number of
residual blocks, each role is one row of exponents:

=============  =====  ======================  =================  ===================
role           init   multiplier              SGD LR             Adam LR
=============  =====  ======================  =================  ===================
SP, any        f^-.5  1                       1                  1
NTK, any       1      f^-.5                   1                  1
muP input      1      f^-.5                   gamma^2            1
muP hidden     1      f^-.5                   gamma^2            gamma^-1
muP readout    1      f^-.5 gamma^-1          gamma^2            1
=============  =====  ======================  =================  ===================

(``f`` is the layer's fan-in; the readout's fan-in is ``N``, so its muP multiplier is
``1 / (gamma sqrt(N))``.) Two roles cover parameters that are not weight matrices:

- ``"vector"``: biases of input/hidden layers, LayerNorm gains and biases, and anything
  else with one width-sized dimension. It is the input row at fan-in 1 (multiplier 1);
  biases start at zero. This is the mup library's "vector-like" class: MuSGD multiplies
  its LR by the width multiplier (our gamma^2), MuAdam leaves it alone.
- ``"readout_bias"``: the readout's bias has no width-sized dimension, so nothing
  scales (mup's MuReadout adds it after the 1/width multiplier and MuSGD leaves such
  "fixed" parameters alone). Giving it the table's SGD gamma^2 would make its update
  grow like N.

Weight decay: with SGD the decay per step is ``lr * wd``, so the weight decay is
divided by the LR scale (under muP: divided by gamma^2, as the muP papers prescribe).
With Adam/AdamW the weight decay is left unscaled (mup's ``decoupled_wd`` behaviour;
the papers prescribe nothing there).

Depth (``depth_alpha`` not None): each residual branch is multiplied by ``L^-alpha`` and
the LR of every parameter inside a residual block by ``L^(2 alpha - 1)`` for SGD
(1 for alpha = 1/2, L for alpha = 1: the table) and ``L^(alpha - 1)`` for Adam
(1/sqrt(L) for alpha = 1/2: the table). Both exponents come from the same count: a
block's feature update is ``L^-alpha`` times its weight update, the ``L`` blocks add
up coherently, and an SGD weight update carries one more ``L^-alpha`` through its
gradient while an Adam update does not. Adam with alpha = 1 therefore gets no depth
factor, and alpha = 0 gets ``1/L`` for both optimizers; ``depth_alpha=None`` is the
unscaled control (branch 1, LR factor 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

__all__ = [
    "NAMES",
    "OPTIMIZERS",
    "ROLES",
    "TABLE",
    "LayerRule",
    "Parameterization",
    "RoleRule",
]

NAMES = ("sp", "ntk", "mup")
ROLES = ("input", "hidden", "readout", "vector", "readout_bias")
OPTIMIZERS = ("sgd", "adam", "adamw")


class RoleRule(NamedTuple):
    """One row of the table as exponents: a value is ``fan_in**a * gamma**b``.

    Attributes:
        init_fan_in: Raw init std = ``fan_in ** init_fan_in``.
        mult_fan_in: Multiplier exponent of the fan-in.
        mult_gamma: Multiplier exponent of gamma = sqrt(N / N0).
        sgd_lr_gamma: SGD learning-rate scale = ``gamma ** sgd_lr_gamma``.
        adam_lr_gamma: Adam/AdamW learning-rate scale = ``gamma ** adam_lr_gamma``.
    """

    init_fan_in: float
    mult_fan_in: float
    mult_gamma: float
    sgd_lr_gamma: float
    adam_lr_gamma: float


_SP = RoleRule(-0.5, 0.0, 0.0, 0.0, 0.0)
_NTK = RoleRule(0.0, -0.5, 0.0, 0.0, 0.0)
_FIXED = RoleRule(0.0, 0.0, 0.0, 0.0, 0.0)

#: name -> role -> exponents; docs/methods.md, scaling study plus the two non-matrix roles.
TABLE: dict[str, dict[str, RoleRule]] = {
    "sp": {"input": _SP, "hidden": _SP, "readout": _SP, "vector": _SP, "readout_bias": _FIXED},
    "ntk": {
        "input": _NTK,
        "hidden": _NTK,
        "readout": _NTK,
        "vector": _NTK,
        "readout_bias": _FIXED,
    },
    "mup": {
        "input": RoleRule(0.0, -0.5, 0.0, 2.0, 0.0),
        "hidden": RoleRule(0.0, -0.5, 0.0, 2.0, -1.0),
        "readout": RoleRule(0.0, -0.5, -1.0, 2.0, 0.0),
        "vector": RoleRule(0.0, -0.5, 0.0, 2.0, 0.0),
        "readout_bias": _FIXED,
    },
}

#: optimizer -> (slope, intercept): depth LR factor = L ** (slope * alpha + intercept).
_DEPTH_LR = {"sgd": (2.0, -1.0), "adam": (1.0, -1.0), "adamw": (1.0, -1.0)}


class LayerRule(NamedTuple):
    """The evaluated rule of one parameter tensor.

    Attributes:
        init_std: Standard deviation of the raw weights at init.
        multiplier: Constant the layer multiplies its output by.
        lr_scale: Factor on the base learning rate eta0.
        wd_scale: Factor on the base weight decay.
    """

    init_std: float
    multiplier: float
    lr_scale: float
    wd_scale: float


@dataclass(frozen=True)
class Parameterization:
    """How init, multipliers and learning rates scale with width and depth.

    Attributes:
        name: ``"sp"``, ``"ntk"`` or ``"mup"``.
        base_width: N0, the width at which muP coincides with NTK (gamma = 1).
        depth_alpha: Residual branches are scaled by ``L^-depth_alpha`` (depth-muP);
            None means no depth scaling. Any value in [0, 1]; the studies use 0, 0.5, 1.
        attn_mult: Constant in the attention-logit scale: ``attn_mult / sqrt(d_head)``
            under SP/NTK, ``attn_mult / d_head`` under muP (the table has 1).
    """

    name: str
    base_width: int
    depth_alpha: float | None = None
    attn_mult: float = 1.0

    def __post_init__(self) -> None:
        problems = []
        if self.name not in NAMES:
            problems.append(f"name={self.name!r}: expected one of {NAMES}")
        if not isinstance(self.base_width, int) or self.base_width < 1:
            problems.append(f"base_width={self.base_width!r}: expected a positive int")
        if self.depth_alpha is not None and not 0.0 <= self.depth_alpha <= 1.0:
            problems.append(f"depth_alpha={self.depth_alpha!r}: expected None or 0 <= alpha <= 1")
        if not self.attn_mult > 0:
            problems.append(f"attn_mult={self.attn_mult!r}: expected a positive float")
        if problems:
            raise ValueError("invalid Parameterization: " + "; ".join(problems))

    @classmethod
    def from_name(
        cls, name: str, base_width: int, depth_alpha: float | None = None, attn_mult: float = 1.0
    ) -> Parameterization:
        """Build a parameterization from its name (case-insensitive).

        Args:
            name: ``"sp"``, ``"ntk"`` or ``"mup"``.
            base_width: N0.
            depth_alpha: Depth-muP exponent, or None for no depth scaling.
            attn_mult: Constant in the attention-logit scale.

        Returns:
            The frozen parameterization.

        Raises:
            ValueError: If any argument is out of range (all problems in one message).
        """
        return cls(name.lower(), base_width, depth_alpha, attn_mult)

    @property
    def tag(self) -> str:
        """Short name for run ids, e.g. ``"mup"`` or ``"mup-a0.5"``."""
        return self.name if self.depth_alpha is None else f"{self.name}-a{self.depth_alpha:g}"

    def gamma(self, width: int) -> float:
        """Return gamma = sqrt(width / base_width)."""
        return math.sqrt(width / self.base_width)

    def _row(self, role: str) -> RoleRule:
        if role not in ROLES:
            raise ValueError(f"role={role!r}: expected one of {ROLES}")
        return TABLE[self.name][role]

    def _gamma_pow(self, width: int, exponent: float) -> float:
        # (N/N0)**(e/2) rather than sqrt(N/N0)**e keeps gamma^2 = N/N0 exact.
        return (width / self.base_width) ** (exponent / 2) if exponent else 1.0

    def init_std(self, role: str, fan_in: int) -> float:
        """Return the raw init std of a weight with this role and fan-in."""
        return fan_in ** self._row(role).init_fan_in

    def multiplier(self, role: str, fan_in: int, width: int) -> float:
        """Return the constant a layer with this role multiplies its output by.

        Args:
            role: One of ``ROLES``.
            fan_in: Inputs summed per output coordinate (``in * k * k`` for a conv).
            width: Model width N (enters through gamma for the muP readout).

        Returns:
            The multiplier.
        """
        row = self._row(role)
        return fan_in**row.mult_fan_in * self._gamma_pow(width, row.mult_gamma)

    def depth_lr_factor(self, depth: int, optimizer: str) -> float:
        """Return the LR factor of parameters inside residual blocks (1 if no depth scaling).

        Args:
            depth: L, the number of residual blocks.
            optimizer: ``"sgd"``, ``"adam"`` or ``"adamw"``.

        Returns:
            ``L^(2 alpha - 1)`` for SGD, ``L^(alpha - 1)`` for Adam/AdamW.
        """
        _check_optimizer(optimizer)
        if self.depth_alpha is None:
            return 1.0
        slope, intercept = _DEPTH_LR[optimizer]
        return float(depth) ** (slope * self.depth_alpha + intercept)

    def lr_scale(
        self, role: str, width: int, optimizer: str, depth: int = 1, in_branch: bool = False
    ) -> float:
        """Return the factor on eta0 for a parameter of this role.

        Args:
            role: One of ``ROLES``.
            width: Model width N.
            optimizer: ``"sgd"``, ``"adam"`` or ``"adamw"``.
            depth: L, the number of residual blocks.
            in_branch: Whether the parameter lies inside a residual block.

        Returns:
            The width factor times, inside residual blocks, the depth factor.
        """
        _check_optimizer(optimizer)
        row = self._row(role)
        exponent = row.sgd_lr_gamma if optimizer == "sgd" else row.adam_lr_gamma
        scale = self._gamma_pow(width, exponent)
        return scale * self.depth_lr_factor(depth, optimizer) if in_branch else scale

    def wd_scale(
        self, role: str, width: int, optimizer: str, depth: int = 1, in_branch: bool = False
    ) -> float:
        """Return the factor on the base weight decay (SGD: 1 / lr_scale; Adam: 1)."""
        if optimizer == "sgd":
            return 1.0 / self.lr_scale(role, width, optimizer, depth, in_branch)
        _check_optimizer(optimizer)
        return 1.0

    def rule(
        self,
        role: str,
        fan_in: int,
        width: int,
        optimizer: str,
        depth: int = 1,
        in_branch: bool = False,
    ) -> LayerRule:
        """Evaluate the whole row for one parameter (see the other methods for the parts)."""
        return LayerRule(
            init_std=self.init_std(role, fan_in),
            multiplier=self.multiplier(role, fan_in, width),
            lr_scale=self.lr_scale(role, width, optimizer, depth, in_branch),
            wd_scale=self.wd_scale(role, width, optimizer, depth, in_branch),
        )

    def residual_scale(self, depth: int) -> float:
        """Return the residual-branch scale ``L^-alpha`` (1 without depth scaling).

        The table's extra ``1/sqrt(N)`` for NTK/muP branches is the hidden multiplier
        ``1/sqrt(fan_in)`` of the branch's last layer, already applied by that layer.
        """
        if depth < 1:
            raise ValueError(f"depth={depth}: expected at least one residual block")
        return 1.0 if self.depth_alpha is None else float(depth) ** -self.depth_alpha

    def attn_logit_scale(self, d_head: int) -> float:
        """Return the factor on ``q . k``: 1/sqrt(d_head) (SP, NTK) or 1/d_head (muP)."""
        power = 1.0 if self.name == "mup" else 0.5
        return self.attn_mult / d_head**power


def _check_optimizer(optimizer: str) -> None:
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer={optimizer!r}: expected one of {OPTIMIZERS}")
