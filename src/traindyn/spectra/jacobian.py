"""Products with the Jacobian J = d f(X) / d theta of a model's outputs on a fixed batch."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.func import functional_call, jacrev, vmap

from traindyn.spectra.flat import _as_operator_input, _eval_mode, flatten, trainable_parameters

__all__ = ["Jacobian", "projected_jacobian"]


class Jacobian:
    """Jacobian-vector and vector-Jacobian products of ``model(x)``; J is never formed.

    One forward pass is taken at construction and its graph is retained, so the
    products are a snapshot at the parameters of that moment. ``vjp`` is one backward
    pass. ``jvp`` uses the double-vjp identity ``J v = d/du <J^T u, v>``: J^T u is
    linear in u, so one backward through the graph of J^T u gives J v. On CPU this
    was as fast as or up to 3.8x faster than forward-mode AD (``torch.func.jvp``),
    which re-runs the forward pass with dual numbers at every call
    (``benchmarks/bench_spectra.py``).

    Attributes:
        outputs: ``model(x)``, shape ``(n, *S)``, detached.
        dim: P, the number of trainable parameters.
        dtype: The parameters' dtype.
        device: The parameters' device.
    """

    def __init__(self, model: nn.Module, x: torch.Tensor, *, eval_mode: bool = True) -> None:
        """Run the forward pass on ``x`` and keep its graph.

        Args:
            model: The model; its trainable parameters are theta, in
                ``named_parameters()`` order.
            x: Inputs, shape ``(n, ...)``, on the model's device.
            eval_mode: Evaluate in eval mode (dropout off, BatchNorm on running
                statistics); every submodule's mode is restored afterwards.
        """
        named = trainable_parameters(model)
        self._params = [p for _, p in named]
        self.dim = sum(p.numel() for p in self._params)
        self.dtype = self._params[0].dtype
        self.device = self._params[0].device
        with _eval_mode(model, eval_mode), torch.enable_grad():
            self._out = model(x)
        self.outputs = self._out.detach()
        self._u: torch.Tensor | None = None
        self._jtu: list[torch.Tensor] | None = None

    def vjp(self, u: torch.Tensor) -> torch.Tensor:
        """Compute J^T u.

        Args:
            u: Cotangent of shape ``(n, *S)`` (or its flattening, ``(n * prod(S),)``).

        Returns:
            Flat vector of shape ``(P,)`` in the parameters' dtype.
        """
        u = u.to(device=self.device, dtype=self.dtype).reshape(self._out.shape)
        grads = torch.autograd.grad(
            self._out, self._params, grad_outputs=u, retain_graph=True, allow_unused=True
        )
        return flatten(
            torch.zeros_like(p) if g is None else g for g, p in zip(grads, self._params, strict=True)
        )

    def jvp(self, v: torch.Tensor) -> torch.Tensor:
        """Compute J v.

        Args:
            v: Flat tangent of shape ``(P,)``.

        Returns:
            Shape ``(n, *S)``, the outputs' shape, in the parameters' dtype.
        """
        v = _as_operator_input(v, self.dim, self.dtype, self.device)
        if self._jtu is None:
            self._u = torch.zeros_like(self._out, requires_grad=True)
            self._jtu = list(
                torch.autograd.grad(
                    self._out, self._params, grad_outputs=self._u, create_graph=True,
                    allow_unused=True,
                )
            )
        pairs = [
            (g, t)
            for g, t in zip(self._jtu, v.split([p.numel() for p in self._params]), strict=True)
            if g is not None and g.requires_grad
        ]
        if not pairs:
            return torch.zeros_like(self.outputs)
        (jv,) = torch.autograd.grad(
            [g for g, _ in pairs],
            self._u,
            grad_outputs=[t.view(g.shape) for g, t in pairs],
            retain_graph=True,
            allow_unused=True,
        )
        return torch.zeros_like(self.outputs) if jv is None else jv


def projected_jacobian(
    model: nn.Module,
    x: torch.Tensor,
    projections: torch.Tensor,
    names: Sequence[str] | None = None,
    *,
    chunk_size: int | None = None,
) -> dict[str, torch.Tensor]:
    """Per-sample gradients of projected outputs, g_{i,r} = d <f(x_i), r> / d theta.

    One vmapped pass over the samples: every projection and every parameter come
    out of the same forward pass per sample (``torch.func.jacrev`` over the R
    projected outputs). With ``projections`` the identity this is the per-sample
    Jacobian. The model is called on single samples (batch of one), so it must not
    mix samples (call it in eval mode: no batch statistics).

    Args:
        model: The model (its mode is left as it is).
        x: Inputs, shape ``(n, ...)``.
        projections: Shape ``(R, *S)``, where ``(n, *S)`` is the output shape.
        names: Parameter names to differentiate (default: every trainable parameter);
            the others are held constant.
        chunk_size: Samples per vmapped chunk (default: all at once); bounds memory.

    Returns:
        ``name -> tensor of shape (n, R, *param.shape)``, in the parameters' dtype.

    Raises:
        KeyError: If a name is not a parameter of the model.
    """
    params = dict(model.named_parameters())
    names = [n for n, p in params.items() if p.requires_grad] if names is None else list(names)
    missing = [n for n in names if n not in params]
    if missing:
        raise KeyError(f"not parameters of {type(model).__name__}: {missing}")
    theta = {n: params[n].detach() for n in names}
    proj = projections.to(device=x.device, dtype=next(iter(theta.values())).dtype)
    proj = proj.reshape(proj.shape[0], -1)  # (R, D)

    def scalarised(theta_: dict[str, torch.Tensor], x_i: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, theta_, (x_i.unsqueeze(0),))  # (1, *S)
        return proj @ out.reshape(-1)  # (R,)

    # no_grad keeps autograd from recording the constant parameters; jacrev ignores it.
    with torch.no_grad():
        return vmap(jacrev(scalarised), in_dims=(None, 0), chunk_size=chunk_size)(theta, x)
