"""Empirical neural tangent kernel: a matrix-free operator and the exact kernel matrix."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from traindyn.spectra.flat import LinearOperator, _as_operator_input, _eval_mode
from traindyn.spectra.jacobian import Jacobian, projected_jacobian

__all__ = ["ntk_kernel", "ntk_operator"]

Kernel = Literal["class_sum", "full"]


def ntk_operator(
    model: nn.Module,
    x: torch.Tensor,
    *,
    kernel: Kernel = "class_sum",
    eval_mode: bool = True,
) -> LinearOperator:
    """The empirical NTK on n samples as a matrix-free operator (J is never formed).

    With outputs f(x_i) in R^D (D = prod of the trailing output dims) and J_c the
    n x P Jacobian of output c:

    - ``"class_sum"``: K = sum_c J_c J_c^T / n, n x n (docs/methods.md, scaling study). One
      product costs D vector-Jacobian plus D Jacobian-vector products.
    - ``"full"``: K = J J^T / n, (n D) x (n D), indexed sample-major (i * D + c).
      One product costs one of each. Its nonzero eigenvalues are those of the
      Gauss-Newton matrix J^T J / n of L = mean_i 0.5 * ||f(x_i) - y_i||^2
      (``gauss_newton_operator`` with that loss); for D = 1 both kernels coincide.
      For D > 1 they are related only by lambda_max(full) in
      [lambda_max(class_sum) / D, D * lambda_max(class_sum)].

    Args:
        model: The model; J is taken over its trainable parameters.
        x: Inputs, shape ``(n, ...)``, on the model's device.
        kernel: ``"class_sum"`` or ``"full"``.
        eval_mode: Evaluate in eval mode; modes are restored.

    Returns:
        The operator, on vectors of shape ``(n,)`` or ``(n * D,)``.

    Raises:
        ValueError: If ``kernel`` is unknown.
    """
    if kernel not in ("class_sum", "full"):
        raise ValueError(f"kernel must be 'class_sum' or 'full', got {kernel!r}")
    jac = Jacobian(model, x, eval_mode=eval_mode)
    n = jac.outputs.shape[0]
    out_flat = jac.outputs.reshape(n, -1)  # (n, D)
    n_out = out_flat.shape[1]

    if kernel == "full":

        def matvec(v: torch.Tensor) -> torch.Tensor:
            v = _as_operator_input(v, n * n_out, jac.dtype, jac.device)
            return jac.jvp(jac.vjp(v)).reshape(-1) / n

        return LinearOperator(matvec=matvec, dim=n * n_out, dtype=jac.dtype, device=jac.device)

    def matvec_class_sum(v: torch.Tensor) -> torch.Tensor:
        v = _as_operator_input(v, n, jac.dtype, jac.device)
        out = torch.zeros_like(v)
        for c in range(n_out):
            u = torch.zeros_like(out_flat)
            u[:, c] = v
            out += jac.jvp(jac.vjp(u)).reshape(n, n_out)[:, c]
        return out / n

    return LinearOperator(matvec=matvec_class_sum, dim=n, dtype=jac.dtype, device=jac.device)


def ntk_kernel(
    model: nn.Module,
    x: torch.Tensor,
    *,
    kernel: Kernel = "class_sum",
    eval_mode: bool = True,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """The exact empirical NTK matrix in float64, for small n (see ``ntk_operator``).

    Built from per-sample Jacobians (one vmapped pass); memory n * D * P. Use
    ``torch.linalg.eigvalsh`` on the result for its spectrum.

    Args:
        model: The model; J is taken over its trainable parameters.
        x: Inputs, shape ``(n, ...)``.
        kernel: ``"class_sum"`` (n x n) or ``"full"`` ((n D) x (n D), sample-major).
        eval_mode: Evaluate in eval mode; modes are restored. The model sees one
            sample at a time, so train-mode BatchNorm would change the function.
        chunk_size: Samples per vmapped chunk (bounds memory).

    Returns:
        The kernel, float64, on the model's device.

    Raises:
        ValueError: If ``kernel`` is unknown.
    """
    if kernel not in ("class_sum", "full"):
        raise ValueError(f"kernel must be 'class_sum' or 'full', got {kernel!r}")
    n = x.shape[0]
    with _eval_mode(model, eval_mode), torch.no_grad():
        out_shape = model(x[:1]).shape[1:]
        n_out = out_shape.numel()
        eye = torch.eye(n_out, device=x.device).reshape(n_out, *out_shape)
        jac = projected_jacobian(model, x, eye, chunk_size=chunk_size)
    if kernel == "full":
        theta = torch.zeros(n * n_out, n * n_out, dtype=torch.float64, device=x.device)
        for g in jac.values():
            g = g.reshape(n * n_out, -1).double()  # (n D, P_p)
            theta += g @ g.T
        return theta / n
    theta = torch.zeros(n, n, dtype=torch.float64, device=x.device)
    for g in jac.values():
        g = g.reshape(n, n_out, -1).transpose(0, 1).double()  # (D, n, P_p)
        theta += (g @ g.transpose(1, 2)).sum(0)
    return theta / n
