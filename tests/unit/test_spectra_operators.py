"""Hessian, Gauss-Newton, Adam-preconditioned operators and Hutchinson against dense references."""

import pytest
import torch
from torch import nn
from torch.func import functional_call, hessian, jacrev

from traindyn.spectra import (
    adam_preconditioner,
    flatten,
    gauss_newton_operator,
    hessian_operator,
    hutchinson_trace,
    lanczos,
    parameter_vector,
    preconditioned_hessian_operator,
    trainable_parameters,
    unflatten,
)

torch.set_num_threads(1)
# torch.func.hessian (forward-mode AD) triggers a deprecation inside torch itself.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")


class ResMLP(nn.Module):
    def __init__(self, d_in=4, width=8, d_out=3, depth=2):
        super().__init__()
        self.inp = nn.Linear(d_in, width)
        self.blocks = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))
        self.out = nn.Linear(width, d_out)

    def forward(self, x):
        h = torch.tanh(self.inp(x))
        for block in self.blocks:
            h = h + torch.tanh(block(h))
        return self.out(h)


def mlp(d_in=4, hidden=8, d_out=3):
    return nn.Sequential(
        nn.Linear(d_in, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, d_out)
    )


def make(kind="mlp", loss="ce", n=16, seed=0):
    torch.manual_seed(seed)
    model = (mlp() if kind == "mlp" else ResMLP()).double()
    x = torch.randn(n, 4, dtype=torch.float64)
    if loss == "ce":
        y = torch.randint(0, 3, (n,))
        loss_fn = nn.functional.cross_entropy
    else:
        y = torch.randn(n, 3, dtype=torch.float64)
        loss_fn = half_mse
    return model, loss_fn, (x, y)


def half_mse(f, y):
    return 0.5 * ((f - y) ** 2).sum(-1).mean()


def flat_call(model, x):
    named = trainable_parameters(model)

    def f(theta):
        params = dict(zip([n for n, _ in named], unflatten(theta, [p for _, p in named]), strict=True))
        return functional_call(model, params, (x,))

    return f


def dense(op):
    return torch.stack([op(e) for e in torch.eye(op.dim, dtype=torch.float64)], dim=1)


def dense_hessian(model, loss_fn, batch):
    x, y = batch
    f = flat_call(model, x)
    return hessian(lambda theta: loss_fn(f(theta), y))(parameter_vector(model))


def test_flatten_roundtrip():
    model, _, _ = make()
    params = [p for _, p in trainable_parameters(model)]
    vec = flatten(params)
    assert vec.shape == (sum(p.numel() for p in params),)
    assert all(torch.equal(a, b) for a, b in zip(unflatten(vec, params), params, strict=True))
    with pytest.raises(ValueError):
        unflatten(vec[:-1], params)


@pytest.mark.parametrize("kind", ["mlp", "res"])
@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_hessian_top_k_vs_dense(kind, loss):
    model, loss_fn, batch = make(kind, loss)
    h_dense = dense_hessian(model, loss_fn, batch)
    op = hessian_operator(model, loss_fn, batch)
    torch.testing.assert_close(dense(op), h_dense, rtol=1e-10, atol=1e-12)
    res = lanczos(op, k=3, tol=1e-10, max_iter=op.dim)
    ref = torch.linalg.eigvalsh(h_dense).flip(0)[:3]
    assert res.converged
    assert ((res.eigenvalues - ref).abs() / ref.abs()).max() <= 1e-6


def test_operators_restore_mode_and_eval_by_default():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Tanh(), nn.Linear(8, 3)).double()
    model.train()
    x, y = torch.randn(8, 4, dtype=torch.float64), torch.randint(0, 3, (8,))
    op = hessian_operator(model, nn.functional.cross_entropy, (x, y))
    assert model.training and model[1].training
    model.eval()
    h_eval = dense_hessian(model, nn.functional.cross_entropy, (x, y))
    torch.testing.assert_close(dense(op), h_eval)


@pytest.mark.parametrize("kind", ["mlp", "res"])
@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_gauss_newton_plus_residual_is_hessian(kind, loss):
    model, loss_fn, (x, y) = make(kind, loss)
    theta = parameter_vector(model)
    f = flat_call(model, x)
    g_dense = dense(gauss_newton_operator(model, loss_fn, (x, y)))
    # Reference J^T H_out J from the explicit Jacobian and output Hessian.
    out = f(theta)
    jac = jacrev(f)(theta).reshape(out.numel(), -1)  # (n C, P)
    h_out = hessian(lambda o: loss_fn(o, y))(out).reshape(out.numel(), out.numel())
    torch.testing.assert_close(g_dense, jac.T @ h_out @ jac, rtol=1e-9, atol=1e-12)
    # Residual term sum_k dL/df_k * Hessian(f_k), with dL/df held fixed.
    dl_df = torch.func.grad(lambda o: loss_fn(o, y))(out).detach()
    residual = hessian(lambda t: (f(t) * dl_df).sum())(theta)
    torch.testing.assert_close(g_dense + residual, dense_hessian(model, loss_fn, (x, y)), rtol=1e-9, atol=1e-12)
    # G is positive semidefinite.
    assert torch.linalg.eigvalsh(g_dense).min() >= -1e-10


def adam_steps(opt_cls, steps=3, **kwargs):
    model, loss_fn, batch = make("res", "ce")
    opt = opt_cls(model.parameters(), lr=1e-2, **kwargs)
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(model(batch[0]), batch[1]).backward()
        opt.step()
    return model, loss_fn, batch, opt


@pytest.mark.parametrize(
    ("opt_cls", "kwargs"),
    [(torch.optim.Adam, {}), (torch.optim.AdamW, {"weight_decay": 0.1}), (torch.optim.Adam, {"amsgrad": True})],
)
def test_preconditioned_hessian_vs_dense(opt_cls, kwargs):
    model, loss_fn, batch, opt = adam_steps(opt_cls, **kwargs)
    beta2, eps = opt.param_groups[0]["betas"][1], opt.param_groups[0]["eps"]
    key = "max_exp_avg_sq" if kwargs.get("amsgrad") else "exp_avg_sq"
    p_ref = flatten(
        (opt.state[p][key] / (1 - beta2 ** float(opt.state[p]["step"]))).sqrt() + eps
        for _, p in trainable_parameters(model)
    )
    torch.testing.assert_close(adam_preconditioner(model, opt), p_ref)
    d = p_ref.rsqrt()
    ref = d[:, None] * dense_hessian(model, loss_fn, batch) * d[None, :]
    op = preconditioned_hessian_operator(model, loss_fn, batch, opt)
    torch.testing.assert_close(dense(op), ref, rtol=1e-9, atol=1e-9)
    res = lanczos(op, k=2, tol=1e-10, max_iter=op.dim)
    top = torch.linalg.eigvalsh(ref).flip(0)[:2]
    assert ((res.eigenvalues - top).abs() / top.abs()).max() <= 1e-6


def test_preconditioner_errors():
    model, loss_fn, batch = make()
    with pytest.raises(TypeError, match="Adam"):
        adam_preconditioner(model, torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(ValueError, match="no Adam state"):
        adam_preconditioner(model, torch.optim.Adam(model.parameters()))


def test_hutchinson_trace_close_to_dense():
    model, loss_fn, batch = make("res", "mse")
    h_dense = dense_hessian(model, loss_fn, batch)
    op = hessian_operator(model, loss_fn, batch)
    trace, stderr = hutchinson_trace(op, n_probes=2000, generator=torch.Generator().manual_seed(0))
    exact = float(torch.trace(h_dense))
    # Rademacher variance is 2 * sum_{i != j} H_ij^2; check against it, not just the estimate.
    sd = float((2 * (h_dense.pow(2).sum() - h_dense.diagonal().pow(2).sum())).sqrt()) / 2000**0.5
    assert stderr == pytest.approx(sd, rel=0.2)
    assert abs(trace - exact) <= 4 * sd
    assert abs(trace - exact) <= 0.05 * abs(exact)


def test_unused_parameter_gets_zero_curvature():
    torch.manual_seed(0)
    model = mlp().double()
    model.register_parameter("unused", nn.Parameter(torch.ones(3, dtype=torch.float64)))
    x, y = torch.randn(8, 4, dtype=torch.float64), torch.randint(0, 3, (8,))
    names = [n for n, _ in trainable_parameters(model)]
    for build in (hessian_operator, gauss_newton_operator):
        op = build(model, nn.functional.cross_entropy, (x, y))
        out = op(torch.ones(op.dim, dtype=torch.float64))
        blocks = dict(zip(names, unflatten(out, [p for _, p in trainable_parameters(model)]), strict=True))
        assert torch.equal(blocks["unused"], torch.zeros(3, dtype=torch.float64))
        assert blocks["0.weight"].abs().sum() > 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_operators_on_cuda_match_cpu():
    model, loss_fn, (x, y) = make("res", "ce")
    cpu = lanczos(hessian_operator(model, loss_fn, (x, y)), k=2, tol=1e-10, max_iter=model_dim(model))
    model_cuda = model.cuda()
    op = hessian_operator(model_cuda, loss_fn, (x.cuda(), y.cuda()))
    assert op.device.type == "cuda"
    res = lanczos(op, k=2, tol=1e-10, max_iter=op.dim)
    assert res.eigenvectors.device.type == "cuda"
    torch.testing.assert_close(res.eigenvalues.cpu(), cpu.eigenvalues, rtol=1e-8, atol=0)
    gn = lanczos(gauss_newton_operator(model_cuda, loss_fn, (x.cuda(), y.cuda())), tol=1e-8)
    assert gn.eigenvalues.device.type == "cuda"


def model_dim(model):
    return sum(p.numel() for p in model.parameters())
