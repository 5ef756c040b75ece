"""Per-module NTK Theta_m = J_m J_m^T / n and its principal eigenvalue, for all modules in one pass."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from traindyn.spectra.flat import _eval_mode
from traindyn.spectra.jacobian import projected_jacobian

__all__ = ["ModuleNTK", "module_ntk", "output_projections"]

Scalarisation = Literal["class_trace", "trace"]
Piece = str | tuple[str, int | slice | tuple]


@dataclass(frozen=True)
class ModuleNTK:
    """Per-module kernels on n probe inputs and their principal eigenvalues.

    Attributes:
        Theta: Module name -> Theta_m, shape ``(n, n)``, float64.
        Theta_cos: Module name -> cosine-normalised kernel
            ``Theta_m[i, j] / sqrt(Theta_m[i, i] Theta_m[j, j]) / n`` (the kernel of
            L2-normalised gradient rows, divided by n: trace 1, lambda_max in
            [1/n, 1]); rows with a zero gradient are zero.
        lambda_max: Module name -> largest eigenvalue of Theta_m.
        lambda_max_cos: Module name -> largest eigenvalue of the cosine kernel.
        Theta_full: Sum of the modules' kernels, the NTK of their union
            (the full NTK when the modules cover every parameter).
        lambda_max_full: Largest eigenvalue of ``Theta_full``.
        projections: The output projections used, shape ``(R, *S)``.
    """

    Theta: dict[str, torch.Tensor]
    Theta_cos: dict[str, torch.Tensor]
    lambda_max: dict[str, float]
    lambda_max_cos: dict[str, float]
    Theta_full: torch.Tensor
    lambda_max_full: float
    projections: torch.Tensor


def output_projections(
    out_shape: Sequence[int],
    scalarisation: Scalarisation = "class_trace",
    n_projections: int = 4,
    seed: int = 0,
) -> torch.Tensor:
    """Output projections r_1..r_R that scalarise f(x) in R^S into <f(x), r>.

    The kernel is then ``sum_r g_r g_r^T / n`` with g_r the per-sample gradients of
    <f, r>.

    - ``"class_trace"``: R random orthonormal directions of the subspace U of
      outputs that sum to zero over the last (class) dim, scaled by
      sqrt(dim U / R). The all-ones direction (per position) is left out because
      the softmax is invariant to it. The kernel is an unbiased estimate of the
      class-trace kernel of the centred outputs, and exact when R = dim U.
    - ``"trace"``: the D = prod(S) one-hot directions: the exact class-trace
      kernel sum_c J_c J_c^T / n (cost grows with D: for few classes).

    Args:
        out_shape: S, the output shape of one sample (last dim: classes).
        scalarisation: ``"class_trace"`` or ``"trace"``.
        n_projections: R for ``"class_trace"``, capped at dim U (where the estimate
            is exact); ignored for ``"trace"``.
        seed: Seed of the random directions (drawn on the CPU).

    Returns:
        Float64 tensor of shape ``(R, *S)`` on the CPU.

    Raises:
        ValueError: On an unknown scalarisation, R < 1, or a single class.
    """
    out_shape = tuple(out_shape)
    n_out = int(torch.Size(out_shape).numel())
    if scalarisation == "trace":
        return torch.eye(n_out, dtype=torch.float64).reshape(n_out, *out_shape)
    if scalarisation != "class_trace":
        raise ValueError(f"scalarisation must be 'class_trace' or 'trace', got {scalarisation!r}")
    n_classes = out_shape[-1] if out_shape else 1
    dim_u = n_out // n_classes * (n_classes - 1)
    if n_projections < 1 or dim_u < 1:
        raise ValueError(
            f"class_trace needs n_projections >= 1 and at least 2 classes; got "
            f"n_projections={n_projections} for outputs of shape {out_shape}"
        )
    n_projections = min(n_projections, dim_u)
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n_out // n_classes, n_classes, n_projections, generator=gen, dtype=torch.float64)
    z = z - z.mean(dim=1, keepdim=True)  # centre over classes
    q, _ = torch.linalg.qr(z.reshape(n_out, n_projections))  # (D, R), orthonormal in U
    r = q.T * (dim_u / n_projections) ** 0.5
    return r.reshape(n_projections, *out_shape)


def module_ntk(
    model: nn.Module,
    x: torch.Tensor,
    modules: Mapping[str, Sequence[Piece]],
    *,
    scalarisation: Scalarisation = "class_trace",
    n_projections: int = 4,
    seed: int = 0,
    chunk_size: int | None = None,
    max_bytes: int = 2**30,
) -> ModuleNTK:
    """Every module's kernel Theta_m and lambda_max from one pass of per-sample gradients.

    The per-sample gradients of the scalarised outputs (``output_projections``) are
    computed once for the parameters of all modules together and split by module;
    Theta_m accumulates in float64 and lambda_max is exact (``eigvalsh`` on the
    n x n kernel). The model runs in eval mode (one sample at a time) and its
    modes are restored.

    Args:
        model: The model.
        x: Probe inputs, shape ``(n, ...)`` (n = 32..64 typically).
        modules: Module name -> its parameters: each a parameter name (as in
            ``named_parameters()``, frozen ones included) or ``(name, index)`` for
            rows ``param[index]`` along dim 0 (an int or a slice: a head's rows of
            a fused QKV weight), or a tuple index ``param[i0, i1, ...]`` (a block:
            one head's columns of W_O). Modules must be disjoint (tuple blocks are
            checked against tuple blocks of the same parameter).
        scalarisation: ``"class_trace"`` (default) or ``"trace"``.
        n_projections: R for ``"class_trace"`` (capped at dim U, see ``output_projections``).
        seed: Seed of the projections.
        chunk_size: Samples per vmapped chunk (bounds memory).
        max_bytes: Memory budget for one chunk of per-sample gradients; projections
            are processed in as few chunks as fit (one, when R n P fits).

    Returns:
        The kernels, their eigenvalues and the projections.

    Raises:
        ValueError: If ``modules`` is empty, a module is empty, or modules overlap.
        KeyError: If a name is not a parameter of the model.
    """
    pieces = _check_modules(model, modules)
    names = list(dict.fromkeys(name for plist in pieces.values() for name, _ in plist))
    params = dict(model.named_parameters())
    n = x.shape[0]
    with _eval_mode(model), torch.no_grad():
        out_shape = model(x[:1]).shape[1:]
        projections = output_projections(out_shape, scalarisation, n_projections, seed)
        itemsize = params[names[0]].element_size()
        per_projection = n * sum(params[nm].numel() for nm in names) * itemsize
        step = max(1, max_bytes // max(per_projection, 1))
        gram = {m: torch.zeros(n, n, dtype=torch.float64, device=x.device) for m in pieces}
        for start in range(0, projections.shape[0], step):
            jac = projected_jacobian(
                model, x, projections[start : start + step], names, chunk_size=chunk_size
            )  # name -> (n, R_chunk, *shape)
            for m, plist in pieces.items():
                for name, index in plist:
                    g = jac[name]
                    if index is not None:
                        g = g[(slice(None), slice(None), *_as_tuple(index))]
                    g = g.reshape(n, -1).double()  # (n, R_chunk * P_piece)
                    gram[m] += g @ g.T
            del jac
    theta = {m: k / n for m, k in gram.items()}
    theta_cos = {m: _cosine(k) / n for m, k in gram.items()}
    names_m = list(theta)
    top = torch.linalg.eigvalsh(torch.stack([theta[m] for m in names_m]))[:, -1]
    top_cos = torch.linalg.eigvalsh(torch.stack([theta_cos[m] for m in names_m]))[:, -1]
    theta_full = torch.stack([theta[m] for m in names_m]).sum(0)
    return ModuleNTK(
        Theta=theta,
        Theta_cos=theta_cos,
        lambda_max={m: float(v) for m, v in zip(names_m, top, strict=True)},
        lambda_max_cos={m: float(v) for m, v in zip(names_m, top_cos, strict=True)},
        Theta_full=theta_full,
        lambda_max_full=float(torch.linalg.eigvalsh(theta_full)[-1]),
        projections=projections,
    )


def _as_tuple(index: int | slice | tuple) -> tuple:
    return index if isinstance(index, tuple) else (index,)


def _cosine(gram: torch.Tensor) -> torch.Tensor:
    """Normalise a Gram matrix to cosines; rows of zero norm give zeros."""
    norms = gram.diagonal().clamp_min(0).sqrt()
    inv = torch.where(norms > 0, 1.0 / norms, torch.zeros_like(norms))
    return gram * inv[:, None] * inv[None, :]


def _check_modules(
    model: nn.Module, modules: Mapping[str, Sequence[Piece]]
) -> dict[str, list[tuple[str, int | slice | tuple | None]]]:
    """Normalise a module spec to ``(name, index or None)`` pieces and check it is disjoint."""
    if not modules:
        raise ValueError("modules is empty: give at least one module name -> parameter names")
    params = dict(model.named_parameters())
    problems: list[str] = []
    owner: dict[tuple[str, int], str] = {}
    masks: dict[str, torch.Tensor] = {}
    pieces: dict[str, list[tuple[str, int | slice | tuple | None]]] = {}
    for m, plist in modules.items():
        if not plist:
            problems.append(f"module {m!r} has no parameter")
        pieces[m] = []
        for piece in plist:
            name, index = (piece, None) if isinstance(piece, str) else piece
            if name not in params:
                raise KeyError(f"module {m!r}: {name!r} is not a parameter of {type(model).__name__}")
            if index is not None and params[name].ndim == 0:
                problems.append(f"module {m!r}: {name!r} is a scalar and has no rows to index")
                continue
            if isinstance(index, tuple):  # a block, e.g. W_O's columns of one head
                mask = masks.setdefault(name, torch.zeros(params[name].shape, dtype=torch.bool))
                if mask[index].any():
                    problems.append(f"{name}{list(index)} overlaps another module (in {m!r})")
                mask[index] = True
                pieces[m].append((name, index))
                continue
            rows = range(params[name].shape[0] if params[name].ndim else 1)
            selected = rows if index is None else rows[index]
            for row in [selected] if isinstance(selected, int) else selected:
                if (name, row) in owner:
                    problems.append(f"{name}[{row}] is in modules {owner[(name, row)]!r} and {m!r}")
                    break
                owner[(name, row)] = m
            pieces[m].append((name, index))
    if problems:
        raise ValueError("invalid modules: " + "; ".join(problems))
    return pieces
