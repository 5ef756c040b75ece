"""Curvature operators of the training loss on a fixed batch: Hessian, Gauss-Newton, Adam-preconditioned."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from traindyn.spectra.flat import (
    LinearOperator,
    _as_operator_input,
    _eval_mode,
    flatten,
    trainable_parameters,
    unflatten,
)
from traindyn.spectra.jacobian import Jacobian

__all__ = [
    "adam_preconditioner",
    "gauss_newton_operator",
    "hessian_operator",
    "hutchinson_trace",
    "preconditioned_hessian_operator",
]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def hessian_operator(
    model: nn.Module,
    loss_fn: LossFn,
    batch: tuple[torch.Tensor, torch.Tensor],
    *,
    eval_mode: bool = True,
) -> LinearOperator:
    """Hessian-vector products of the loss ``loss_fn(model(x), y)`` on a fixed batch.

    Double backward on a retained graph: the gradient and its graph are built once,
    then each product is one backward pass through the gradient's graph. On CPU one
    product costs 1-2.3x one gradient, against 2.6-5.5x for forward-over-reverse
    (``torch.func.jvp`` over ``torch.func.grad``), which re-runs forward and backward
    each time (``benchmarks/bench_spectra.py``, 270k-parameter MLP). The operator is a
    snapshot: changing the parameters in place afterwards makes it raise.

    Args:
        model: The model; vectors are over its trainable parameters in
            ``named_parameters()`` order (see ``flatten``/``unflatten``).
        loss_fn: ``loss_fn(outputs, targets) -> scalar``, the mean over the batch.
        batch: ``(x, y)`` on the model's device.
        eval_mode: Evaluate in eval mode (dropout off, BatchNorm on running
            statistics) so the operator is deterministic; modes are restored.

    Returns:
        The operator H on vectors of shape ``(P,)``, computing in the parameters' dtype.
    """
    params = [p for _, p in trainable_parameters(model)]
    x, y = batch
    with _eval_mode(model, eval_mode), torch.enable_grad():
        loss = loss_fn(model(x), y)
    grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
    live = [(g, i) for i, g in enumerate(grads) if g is not None and g.requires_grad]
    dim = sum(p.numel() for p in params)
    dtype, device = params[0].dtype, params[0].device

    def matvec(v: torch.Tensor) -> torch.Tensor:
        chunks = unflatten(_as_operator_input(v, dim, dtype, device), params)
        if not live:
            return torch.zeros(dim, dtype=dtype, device=device)
        products = torch.autograd.grad(
            [g for g, _ in live],
            params,
            grad_outputs=[chunks[i] for _, i in live],
            retain_graph=True,
            allow_unused=True,
        )
        return flatten([torch.zeros_like(p) if h is None else h for h, p in zip(products, params, strict=True)])

    return LinearOperator(matvec=matvec, dim=dim, dtype=dtype, device=device)


def gauss_newton_operator(
    model: nn.Module,
    loss_fn: LossFn,
    batch: tuple[torch.Tensor, torch.Tensor],
    *,
    eval_mode: bool = True,
) -> LinearOperator:
    """Gauss-Newton-vector products G v = J^T H_out J v on a fixed batch.

    J = d model(x) / d theta and H_out is the Hessian of ``loss_fn(f, y)`` with
    respect to the outputs f (any loss: MSE, cross-entropy, ...). Each product is
    J v (``Jacobian.jvp``), then H_out (J v) (double backward through the loss
    only), then J^T (``Jacobian.vjp``). The Hessian is G plus the residual term
    sum_k dL/df_k * Hessian(f_k). For L = mean over the batch of
    0.5 * ||f_i - y_i||^2, H_out = I / n and G = J^T J / n has the nonzero spectrum
    of the full NTK (see ``ntk_operator(kernel="full")``).

    Args:
        model: The model; vectors are over its trainable parameters.
        loss_fn: ``loss_fn(outputs, targets) -> scalar``, the mean over the batch.
        batch: ``(x, y)`` on the model's device.
        eval_mode: Evaluate in eval mode; modes are restored.

    Returns:
        The operator G on vectors of shape ``(P,)``.
    """
    x, y = batch
    jac = Jacobian(model, x, eval_mode=eval_mode)
    f = jac.outputs.detach().requires_grad_(True)
    with torch.enable_grad():
        (grad_f,) = torch.autograd.grad(loss_fn(f, y), f, create_graph=True)

    def matvec(v: torch.Tensor) -> torch.Tensor:
        jv = jac.jvp(v)  # (n, *S)
        h_jv = None
        if grad_f.requires_grad:
            (h_jv,) = torch.autograd.grad(
                grad_f, f, grad_outputs=jv, retain_graph=True, allow_unused=True
            )
        if h_jv is None:  # loss linear in the outputs
            h_jv = torch.zeros_like(jv)
        return jac.vjp(h_jv)

    return LinearOperator(matvec=matvec, dim=jac.dim, dtype=jac.dtype, device=jac.device)


def adam_preconditioner(model: nn.Module, optimizer: torch.optim.Optimizer) -> torch.Tensor:
    """Adam's denominator P = sqrt(v_hat) + eps, read from the optimizer's state.

    v_hat = v / (1 - beta2^t) is the bias-corrected second moment (the running
    maximum of v with ``amsgrad``), as ``torch.optim.Adam``/``AdamW`` use it.

    Args:
        model: The model whose trainable parameters the optimizer updates.
        optimizer: A ``torch.optim.Adam`` or ``torch.optim.AdamW`` that has stepped.

    Returns:
        Flat tensor of shape ``(P,)`` in the parameters' dtype.

    Raises:
        TypeError: If the optimizer is not Adam or AdamW.
        ValueError: If a trainable parameter has no Adam state yet (before the
            first step, or not in the optimizer).
    """
    if not isinstance(optimizer, torch.optim.Adam | torch.optim.AdamW):
        raise TypeError(f"need torch.optim.Adam or AdamW, got {type(optimizer).__name__}")
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    pieces, missing = [], []
    for name, p in trainable_parameters(model):
        state = optimizer.state.get(p, {})
        if id(p) not in group_of or "exp_avg_sq" not in state:
            missing.append(name)
            continue
        group = group_of[id(p)]
        step = float(state["step"])
        v = state["max_exp_avg_sq"] if group.get("amsgrad", False) else state["exp_avg_sq"]
        v_hat = v / (1.0 - group["betas"][1] ** step)
        pieces.append(v_hat.sqrt() + group["eps"])
    if missing:
        raise ValueError(
            f"no Adam state for {missing}: take an optimizer step first, and give every "
            "trainable parameter to the optimizer"
        )
    return flatten(pieces).to(trainable_parameters(model)[0][1].dtype)


def preconditioned_hessian_operator(
    model: nn.Module,
    loss_fn: LossFn,
    batch: tuple[torch.Tensor, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    *,
    eval_mode: bool = True,
    hessian: LinearOperator | None = None,
) -> LinearOperator:
    """Preconditioned Hessian P^-1/2 H P^-1/2 with P Adam's denominator (sqrt(v_hat)+eps).

    Its top eigenvalue is the preconditioned sharpness of adaptive optimizers; it
    has the spectrum of P^-1 H. H is the Hessian of the loss alone (an L2 term that
    Adam adds to the gradient is not included).

    Args:
        model: The model; vectors are over its trainable parameters.
        loss_fn: ``loss_fn(outputs, targets) -> scalar``, the mean over the batch.
        batch: ``(x, y)`` on the model's device.
        optimizer: The run's ``torch.optim.Adam``/``AdamW``, after at least one step.
        eval_mode: Evaluate in eval mode; modes are restored.
        hessian: An existing ``hessian_operator`` of the same model and batch to
            reuse (``loss_fn``, ``batch`` and ``eval_mode`` are then unused).

    Returns:
        The operator on vectors of shape ``(P,)``.

    Raises:
        TypeError: If the optimizer is not Adam or AdamW.
        ValueError: If the optimizer has no state for some trainable parameter.
    """
    d = adam_preconditioner(model, optimizer).rsqrt()  # (P,) = P^-1/2
    if hessian is None:
        hessian = hessian_operator(model, loss_fn, batch, eval_mode=eval_mode)

    def matvec(v: torch.Tensor) -> torch.Tensor:
        v = _as_operator_input(v, hessian.dim, hessian.dtype, hessian.device)
        return d * hessian.matvec(d * v)

    return LinearOperator(matvec=matvec, dim=hessian.dim, dtype=hessian.dtype, device=hessian.device)


def hutchinson_trace(
    matvec: LinearOperator | Callable[[torch.Tensor], torch.Tensor],
    dim: int | None = None,
    n_probes: int = 100,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> tuple[float, float]:
    """Hutchinson's estimate of tr(A) = E[z^T A z] with Rademacher probes z.

    Args:
        matvec: The operator (dim, dtype, device taken from a ``LinearOperator``).
        dim: Vector length; required for a plain function.
        n_probes: Number of probes (= products).
        generator: Random source (CPU); a generator seeded with 0 if None.
        dtype: Dtype of the probes passed to ``matvec`` (default: the operator's).
        device: Device of the probes (default: the operator's, else CPU).

    Returns:
        ``(trace, stderr)``: the mean of z^T A z over probes and its standard error
        (std / sqrt(n_probes); nan for one probe).

    Raises:
        ValueError: If ``dim`` is missing or ``n_probes < 1``.
    """
    if isinstance(matvec, LinearOperator):
        dim = matvec.dim if dim is None else dim
        dtype = matvec.dtype if dtype is None else dtype
        device = matvec.device if device is None else device
    if dim is None:
        raise ValueError("dim is required when matvec is a plain function")
    if n_probes < 1:
        raise ValueError(f"n_probes must be >= 1, got {n_probes}")
    generator = torch.Generator().manual_seed(0) if generator is None else generator
    dtype = torch.float64 if dtype is None else dtype
    samples = []
    for _ in range(n_probes):
        z = torch.randint(0, 2, (dim,), generator=generator).to(device=device, dtype=dtype)
        z = 2 * z - 1
        samples.append(float(z.double() @ matvec(z).double()))
    values = torch.tensor(samples, dtype=torch.float64)
    stderr = float(values.std() / n_probes**0.5) if n_probes > 1 else float("nan")
    return float(values.mean()), stderr
