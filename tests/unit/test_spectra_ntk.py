"""Empirical NTK operator and exact kernel against the explicit Jacobian; its relation to Gauss-Newton."""

import pytest
import torch
from torch import nn
from torch.func import functional_call, jacrev

from traindyn.spectra import (
    Jacobian,
    gauss_newton_operator,
    lanczos,
    ntk_kernel,
    ntk_operator,
    parameter_vector,
    trainable_parameters,
    unflatten,
)

torch.set_num_threads(1)


def make(d_out=3, n=12, seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 10), nn.Tanh(), nn.Linear(10, 10), nn.Tanh(), nn.Linear(10, d_out))
    return model.double(), torch.randn(n, 4, dtype=torch.float64)


def explicit_jacobian(model, x):
    """J of shape (n, D, P) by torch.func.jacrev."""
    named = trainable_parameters(model)

    def f(theta):
        params = dict(zip([n for n, _ in named], unflatten(theta, [p for _, p in named]), strict=True))
        return functional_call(model, params, (x,))

    jac = jacrev(f)(parameter_vector(model))  # (n, D, P)
    return jac.reshape(x.shape[0], -1, jac.shape[-1])


def dense(op):
    return torch.stack([op(e) for e in torch.eye(op.dim, dtype=torch.float64)], dim=1)


def test_jacobian_products_match_explicit():
    model, x = make()
    jac = explicit_jacobian(model, x).reshape(-1, sum(p.numel() for p in model.parameters()))
    products = Jacobian(model, x)
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(jac.shape[1], generator=gen, dtype=torch.float64)
    u = torch.randn(jac.shape[0], generator=gen, dtype=torch.float64)
    torch.testing.assert_close(products.jvp(v).reshape(-1), jac @ v)
    torch.testing.assert_close(products.vjp(u), jac.T @ u)


@pytest.mark.parametrize("kernel", ["class_sum", "full"])
def test_operator_and_exact_kernel_match_explicit_jacobian(kernel):
    model, x = make()
    n = x.shape[0]
    jac = explicit_jacobian(model, x)  # (n, D, P)
    if kernel == "class_sum":
        ref = torch.einsum("icp,jcp->ij", jac, jac) / n
    else:
        flat = jac.reshape(-1, jac.shape[-1])
        ref = flat @ flat.T / n
    op = ntk_operator(model, x, kernel=kernel)
    torch.testing.assert_close(dense(op), ref, rtol=1e-10, atol=1e-12)
    exact = ntk_kernel(model, x, kernel=kernel, chunk_size=5)
    torch.testing.assert_close(exact, ref, rtol=1e-10, atol=1e-12)
    res = lanczos(op, k=2, tol=1e-10, max_iter=op.dim)
    top = torch.linalg.eigvalsh(ref).flip(0)[:2]
    assert ((res.eigenvalues - top).abs() / top).max() <= 1e-8


def test_gauss_newton_spectrum_is_full_ntk_spectrum():
    # Convention: L = mean_i 0.5 * ||f(x_i) - y_i||^2, so H_out = I / n and
    # G = J^T J / n shares its nonzero eigenvalues with K_full = J J^T / n.
    model, x = make(d_out=3, n=8)
    y = torch.randn(8, 3, dtype=torch.float64)
    gn = gauss_newton_operator(model, lambda f, t: 0.5 * ((f - t) ** 2).sum(-1).mean(), (x, y))
    gn_top = lanczos(gn, k=5, tol=1e-10, max_iter=gn.dim).eigenvalues
    ntk_top = lanczos(ntk_operator(model, x, kernel="full"), k=5, tol=1e-10, max_iter=24).eigenvalues
    torch.testing.assert_close(gn_top, ntk_top, rtol=1e-8, atol=0)
    # torch's F.mse_loss averages over n * D entries without the 1/2: G = (2 / D) J^T J / n.
    gn_torch = gauss_newton_operator(model, nn.functional.mse_loss, (x, y))
    torch.testing.assert_close(
        lanczos(gn_torch, tol=1e-10, max_iter=gn.dim).eigenvalues[0], 2 / 3 * ntk_top[0], rtol=1e-8, atol=0
    )
    # The class-summed kernel only brackets it: lambda_full in [lambda_sum / D, D * lambda_sum].
    lam_sum = float(torch.linalg.eigvalsh(ntk_kernel(model, x))[-1])
    assert lam_sum / 3 <= float(ntk_top[0]) <= 3 * lam_sum


def test_single_output_kernels_coincide_with_gauss_newton():
    model, x = make(d_out=1, n=10)
    k_sum = ntk_kernel(model, x, kernel="class_sum")
    torch.testing.assert_close(k_sum, ntk_kernel(model, x, kernel="full"))
    y = torch.randn(10, 1, dtype=torch.float64)
    gn = gauss_newton_operator(model, lambda f, t: 0.5 * ((f - t) ** 2).sum(-1).mean(), (x, y))
    torch.testing.assert_close(
        lanczos(gn, k=3, tol=1e-10, max_iter=gn.dim).eigenvalues,
        torch.linalg.eigvalsh(k_sum).flip(0)[:3],
        rtol=1e-8,
        atol=0,
    )


def test_unknown_kernel_raises():
    model, x = make()
    with pytest.raises(ValueError, match="kernel must be"):
        ntk_operator(model, x, kernel="trace")
