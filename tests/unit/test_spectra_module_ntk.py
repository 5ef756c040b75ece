"""Per-module NTK: one pass split by module, against dense per-module Jacobians."""

import pytest
import torch
from torch import nn
from torch.func import functional_call, jacrev

from traindyn.spectra import module_ntk, ntk_kernel, output_projections

torch.set_num_threads(1)


class TinyAttention(nn.Module):
    """One attention layer with a fused QKV projection, mean-pooled into class logits."""

    def __init__(self, d=8, heads=2, classes=4):
        super().__init__()
        self.heads, self.d = heads, d
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.head = nn.Linear(d, classes)

    def forward(self, x):  # x: (B, T, d)
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).unbind(2)  # (B, T, H, dh)
        att = torch.softmax(torch.einsum("bthe,bshe->bhts", q, k) / (d // self.heads), dim=-1)
        h = torch.einsum("bhts,bshe->bthe", att, v).reshape(b, t, d)
        return self.head(torch.tanh(self.proj(h)).mean(1))  # (B, classes)


def mlp():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 4))
    return model.double(), torch.randn(10, 5, dtype=torch.float64)


MLP_MODULES = {"layer0": ["0.weight", "0.bias"], "layer1": ["2.weight", "2.bias"], "layer2": ["4.weight", "4.bias"]}


def dense_jacobians(model, x):
    """name -> per-sample Jacobian of shape (n, D, *param.shape), by jacrev on the whole batch."""
    params = {n: p.detach() for n, p in model.named_parameters()}
    jac = jacrev(lambda p: functional_call(model, p, (x,)))(params)  # name -> (n, *S, *shape)
    n = x.shape[0]
    return {k: v.reshape(n, -1, *params[k].shape) for k, v in jac.items()}


def dense_module_kernel(jac, pieces, projections):
    n = next(iter(jac.values())).shape[0]
    proj = projections.reshape(projections.shape[0], -1)  # (R, D)
    kernel = torch.zeros(n, n, dtype=torch.float64)
    for name, index in pieces:
        g = torch.einsum("rd,id...->ir...", proj, jac[name])  # (n, R, *shape)
        if index is not None:
            g = g[:, :, index]
        g = g.reshape(n, -1)
        kernel += g @ g.T
    return kernel / n


@pytest.mark.parametrize("scalarisation", ["class_trace", "trace"])
def test_mlp_modules_vs_dense_and_sum_is_full(scalarisation):
    model, x = mlp()
    res = module_ntk(model, x, MLP_MODULES, scalarisation=scalarisation, n_projections=2, seed=3)
    jac = dense_jacobians(model, x)
    for m, names in MLP_MODULES.items():
        ref = dense_module_kernel(jac, [(nm, None) for nm in names], res.projections)
        torch.testing.assert_close(res.Theta[m], ref, rtol=1e-10, atol=1e-12)
        assert res.lambda_max[m] == pytest.approx(float(torch.linalg.eigvalsh(ref)[-1]), rel=1e-10)
    full = sum(res.Theta.values())
    torch.testing.assert_close(res.Theta_full, full)
    if scalarisation == "trace":  # the exact class-trace kernel is the full NTK summed over classes
        torch.testing.assert_close(res.Theta_full, ntk_kernel(model, x), rtol=1e-10, atol=1e-12)
        assert res.projections.shape == (4, 4)
    else:
        assert res.projections.shape == (2, 4)


def test_class_trace_with_all_directions_is_centred_trace():
    model, x = mlp()
    res = module_ntk(model, x, {"all": [n for n, _ in model.named_parameters()]}, n_projections=3)
    jac = dense_jacobians(model, x)
    centring = torch.eye(4, dtype=torch.float64) - 1 / 4  # projector orthogonal to the all-ones vector
    ref = dense_module_kernel(jac, [(n, None) for n in jac], centring)
    torch.testing.assert_close(res.Theta["all"], ref, rtol=1e-10, atol=1e-12)


def test_projections_orthogonal_to_ones_and_seeded():
    r = output_projections((6, 5), "class_trace", n_projections=4, seed=1)
    assert r.shape == (4, 6, 5)
    torch.testing.assert_close(r.sum(-1), torch.zeros(4, 6, dtype=torch.float64), atol=1e-12, rtol=0)
    gram = r.reshape(4, -1) @ r.reshape(4, -1).T
    torch.testing.assert_close(gram, torch.eye(4, dtype=torch.float64) * 6 * 4 / 4)
    assert torch.equal(r, output_projections((6, 5), "class_trace", n_projections=4, seed=1))
    assert output_projections((3,), "class_trace", n_projections=3).shape == (2, 3)  # capped at C - 1
    with pytest.raises(ValueError, match="at least 2 classes"):
        output_projections((1,), "class_trace")


def test_head_slices_of_fused_qkv():
    torch.manual_seed(0)
    model = TinyAttention().double()
    x = torch.randn(6, 5, 8, dtype=torch.float64)
    dh = 4
    modules = {
        f"head{h}": [
            piece
            for block in range(3)  # the head's rows of W_q, W_k and W_v
            for piece in (
                ("qkv.weight", slice(block * 8 + h * dh, block * 8 + (h + 1) * dh)),
                ("qkv.bias", slice(block * 8 + h * dh, block * 8 + (h + 1) * dh)),
            )
        ]
        for h in range(2)
    }
    modules |= {"proj": ["proj.weight", "proj.bias"], "head": ["head.weight", "head.bias"]}
    model.train()
    res = module_ntk(model, x, modules, n_projections=3)
    assert model.training
    jac = dense_jacobians(model, x)
    for m, pieces in modules.items():
        pieces = [(p, None) if isinstance(p, str) else p for p in pieces]
        ref = dense_module_kernel(jac, pieces, res.projections)
        torch.testing.assert_close(res.Theta[m], ref, rtol=1e-10, atol=1e-12)
        assert res.lambda_max[m] == pytest.approx(float(torch.linalg.eigvalsh(ref)[-1]), rel=1e-10)
    # The heads partition the fused QKV rows: their kernels add up to the QKV kernel.
    qkv = module_ntk(model, x, {"qkv": ["qkv.weight", "qkv.bias"]}, n_projections=3)
    torch.testing.assert_close(res.Theta["head0"] + res.Theta["head1"], qkv.Theta["qkv"])
    whole = module_ntk(model, x, {"all": [n for n, _ in model.named_parameters()]}, n_projections=3)
    torch.testing.assert_close(res.Theta_full, whole.Theta["all"])
    assert res.lambda_max_full == pytest.approx(whole.lambda_max["all"], rel=1e-12)


def test_cosine_kernel():
    model, x = mlp()
    res = module_ntk(model, x, MLP_MODULES, max_bytes=1)  # one projection per chunk
    for m, theta in res.Theta.items():
        d = theta.diagonal().sqrt()
        torch.testing.assert_close(res.Theta_cos[m], theta / d[:, None] / d[None, :] / x.shape[0])
        assert 1 / x.shape[0] - 1e-12 <= res.lambda_max_cos[m] <= 1 + 1e-12


def test_invalid_modules():
    model, x = mlp()
    with pytest.raises(ValueError, match="in modules"):
        module_ntk(model, x, {"a": ["0.weight"], "b": [("0.weight", 1)]})
    with pytest.raises(ValueError, match="in modules"):
        module_ntk(model, x, {"a": [("0.weight", slice(0, 4))], "b": [("0.weight", slice(3, 5))]})
    with pytest.raises(KeyError, match="not a parameter"):
        module_ntk(model, x, {"a": ["nope"]})
    with pytest.raises(ValueError, match="empty"):
        module_ntk(model, x, {})
