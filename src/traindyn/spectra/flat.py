"""Flat vectors over a model's trainable parameters, and the linear-operator type on them."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

__all__ = [
    "LinearOperator",
    "flatten",
    "parameter_vector",
    "trainable_parameters",
    "unflatten",
]


@dataclass(frozen=True)
class LinearOperator:
    """A symmetric linear operator on flat vectors, given by its matrix-vector product.

    Attributes:
        matvec: ``matvec(v) -> A v`` for ``v`` of shape ``(dim,)``; accepts any floating
            dtype on ``device`` and returns a vector of shape ``(dim,)`` in ``dtype``.
        dim: Size of the vectors it acts on.
        dtype: The dtype in which ``matvec`` computes (the model's parameter dtype).
        device: Where ``matvec`` computes.
    """

    matvec: Callable[[torch.Tensor], torch.Tensor]
    dim: int
    dtype: torch.dtype
    device: torch.device

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        """Apply the operator: same as ``matvec(v)``."""
        return self.matvec(v)


def trainable_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """List the parameters that require grad, in ``model.named_parameters()`` order.

    This order defines the layout of every flat vector in ``traindyn.spectra``.

    Args:
        model: Any module.

    Returns:
        ``(name, parameter)`` pairs.

    Raises:
        ValueError: If the model has no trainable parameter.
    """
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError(f"{type(model).__name__} has no parameter with requires_grad=True")
    return named


def flatten(tensors: Iterable[torch.Tensor]) -> torch.Tensor:
    """Concatenate tensors into one flat vector (a copy).

    Args:
        tensors: Tensors of any shapes, on one device and of one dtype.

    Returns:
        A tensor of shape ``(sum of numels,)``.
    """
    return torch.cat([t.reshape(-1) for t in tensors])


def unflatten(vector: torch.Tensor, like: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Split a flat vector into views shaped like ``like`` (the inverse of ``flatten``).

    Args:
        vector: Shape ``(sum of numels of like,)``.
        like: Tensors whose shapes define the split.

    Returns:
        Views of ``vector``, one per tensor of ``like``, with its shape.

    Raises:
        ValueError: If the sizes do not add up.
    """
    sizes = [t.numel() for t in like]
    if vector.ndim != 1 or vector.numel() != sum(sizes):
        raise ValueError(
            f"vector of shape {tuple(vector.shape)} does not match {len(sizes)} tensors "
            f"with {sum(sizes)} elements in all"
        )
    return [chunk.view(t.shape) for chunk, t in zip(vector.split(sizes), like, strict=True)]


def parameter_vector(model: nn.Module) -> torch.Tensor:
    """Copy the trainable parameters into one flat vector.

    Args:
        model: Any module with trainable parameters.

    Returns:
        A detached tensor of shape ``(P,)``, P = number of trainable parameters.
    """
    return flatten(p.detach() for _, p in trainable_parameters(model))


@contextmanager
def _eval_mode(model: nn.Module, enabled: bool = True) -> Iterator[None]:
    """Put ``model`` in eval mode inside the block and restore every submodule's mode."""
    if not enabled:
        yield
        return
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def _as_operator_input(v: torch.Tensor, dim: int, dtype: torch.dtype, device: torch.device):
    """Check a flat input vector and cast it to the operator's dtype and device."""
    if v.shape != (dim,):
        raise ValueError(f"expected a vector of shape ({dim},), got {tuple(v.shape)}")
    return v.to(device=device, dtype=dtype)
