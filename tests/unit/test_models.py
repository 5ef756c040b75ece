"""Models: shapes, seeded init, addressable heads, causality, residual scaling, NTK modules."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from traindyn.models import GPT, AttentionHead, ResMLP, build_model
from traindyn.param import Parameterization, ParamLayer, make_optimizer

torch.set_num_threads(1)

P = Parameterization.from_name
MUP = P("mup", 32)

SPECS = {
    "mlp": ({"arch": "mlp", "width": 32, "depth": 3}, (1, 28, 28), (10,)),
    "resmlp": ({"arch": "resmlp", "width": 32, "depth": 3}, (1, 28, 28), (10,)),
    "convnet28": ({"arch": "convnet", "width": 8}, (1, 28, 28), (10,)),
    "convnet32": ({"arch": "convnet", "width": 8, "in_channels": 3}, (3, 32, 32), (10,)),
    "vit7": ({"arch": "vit", "width": 32, "depth": 2}, (1, 28, 28), (10,)),
    "vit4mean": (
        {"arch": "vit", "width": 32, "depth": 1, "patch_size": 4, "pool": "mean"},
        (1, 28, 28),
        (10,),
    ),
    "vit32": (
        {
            "arch": "vit",
            "width": 32,
            "depth": 1,
            "image_size": 32,
            "patch_size": 8,
            "in_channels": 3,
        },
        (3, 32, 32),
        (10,),
    ),
    "gpt": (
        {"arch": "gpt", "width": 32, "depth": 2, "vocab_size": 13, "block_size": 16},
        None,
        (16, 13),
    ),
}


def _input(key: str, batch: int = 3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shape = SPECS[key][1]
    if shape is None:
        return torch.randint(0, 13, (batch, 16), generator=g)
    return torch.randn(batch, *shape, generator=g)


def _build(spec, param=MUP, seed=0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(spec, param)


def _gpt(param=MUP, width=32, depth=2, vocab=13, block=16, n_heads=4) -> GPT:
    torch.manual_seed(0)
    return GPT(width, depth, param, vocab_size=vocab, block_size=block, n_heads=n_heads)


# --- every architecture ---------------------------------------------------------------------


@pytest.mark.parametrize("key", list(SPECS))
@pytest.mark.parametrize("name", ["sp", "ntk", "mup"])
def test_forward_shape_and_attributes(key, name):
    spec, _, out_shape = SPECS[key]
    model = _build(spec, P(name, 16))
    out = model(_input(key))
    assert out.shape == (3, *out_shape)
    assert torch.isfinite(out).all()
    assert model.width == spec["width"] and model.depth == spec.get("depth", 3)


@pytest.mark.parametrize("key", list(SPECS))
def test_init_is_seeded_and_deterministic(key):
    spec = SPECS[key][0]
    a, b, c = _build(spec, seed=1), _build(spec, seed=1), _build(spec, seed=2)
    for (n, pa), (_, pb), (_, pc) in zip(
        a.state_dict().items(), b.state_dict().items(), c.state_dict().items(), strict=True
    ):
        assert torch.equal(pa, pb), n
        if pa.std() > 0:  # LayerNorm gains are constant
            assert not torch.equal(pa, pc), n


@pytest.mark.parametrize("key", list(SPECS))
def test_every_layer_is_parameterized(key):
    model = _build(SPECS[key][0])
    for name, module in model.named_modules():
        if any(True for _ in module.parameters(recurse=False)):
            assert isinstance(module, ParamLayer | nn.LayerNorm), name
        assert not isinstance(module, nn.Linear | nn.Conv2d | nn.Embedding), name


@pytest.mark.parametrize("key", list(SPECS))
def test_ntk_modules_partition_parameters(key):
    model = _build(SPECS[key][0])
    all_names = [n for n, _ in model.named_parameters()]
    full = model.ntk_modules(all_params=True)
    listed = [n for names in full.values() for n in names]
    assert sorted(listed) == sorted(all_names)  # every parameter exactly once
    assert all(full.values())
    default = model.ntk_modules()
    if hasattr(model, "head_modules"):
        assert list(default) == list(model.head_modules())
        for mod, names in default.items():
            assert names == [f"{mod}.{x}.weight" for x in "qkv"]
    else:
        assert default == full


def test_build_model_reports_every_problem():
    with pytest.raises(ValueError) as err:
        build_model({"arch": "vit", "width": 30, "depth": "2", "colour": 1, "pool": "max"}, MUP)
    msg = str(err.value)
    assert "colour" in msg and "depth='2'" in msg
    with pytest.raises(ValueError, match="n_heads.*|divisible"):
        build_model({"arch": "vit", "width": 30, "depth": 2}, MUP)
    with pytest.raises(ValueError, match="missing required key 'vocab_size'"):
        build_model({"arch": "gpt", "width": 32, "depth": 2}, MUP)
    with pytest.raises(ValueError, match="arch"):
        build_model({"arch": "resnet", "width": 32}, MUP)


def test_hessian_vector_product_and_per_sample_grads():
    """Sharpness needs double backward; the modular NTK needs vmap'd per-sample gradients."""
    model = _gpt()
    x = _input("gpt", batch=2)
    params = [p for p in model.parameters()]
    loss = model(x).logsumexp(-1).mean()
    grads = torch.autograd.grad(loss, params, create_graph=True)
    vs = [torch.randn_like(p) for p in params]
    hv = torch.autograd.grad(sum((g * v).sum() for g, v in zip(grads, vs, strict=True)), params)
    assert all(torch.isfinite(h).all() for h in hv)

    head = dict(model.ntk_modules())["blocks.1.attn.heads.2"]
    named = dict(model.named_parameters())
    frozen = {n: p.detach() for n, p in named.items() if n not in head}

    def f(sub, xi):
        out = torch.func.functional_call(model, {**frozen, **sub}, (xi[None],))
        return out[0, -1, 0]

    sub = {n: named[n].detach() for n in head}
    per_sample = torch.func.vmap(torch.func.grad(f), in_dims=(None, 0))(sub, x)
    assert per_sample[head[0]].shape == (2, *named[head[0]].shape)


# --- residual MLP ---------------------------------------------------------------------------


def _final_rms_ratio(alpha, depth, width=256):
    torch.manual_seed(0)
    model = ResMLP(width, depth, P("mup", 64, alpha), in_dim=32)
    x = torch.randn(64, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        h0 = model.input(x)  # (B, N)
        h = h0
        for block in model.blocks:
            h = block(h)  # (B, N)
    return (h.pow(2).mean() / h0.pow(2).mean()).sqrt().item()


def test_resmlp_activations_order_one_in_depth_for_alpha_half():
    """q_L = q_0 (1 + 1/(2L))^L -> e^(1/2) q_0, so the RMS ratio tends to e^(1/4) ~ 1.28."""
    ratios = [_final_rms_ratio(0.5, L) for L in (2, 8, 32, 64)]
    assert all(1.0 < r < 1.45 for r in ratios), ratios
    assert max(ratios) / min(ratios) < 1.15, ratios
    assert ratios[-1] == pytest.approx(math.exp(0.25), rel=0.08)
    assert _final_rms_ratio(1.0, 64) == pytest.approx(1.0, rel=0.08)
    # Without depth scaling (alpha = 0) the residual stream grows like 1.5^(L/2).
    assert _final_rms_ratio(0.0, 32) > 100


@pytest.mark.parametrize("name", ["ntk", "mup"])
def test_resmlp_branch_is_order_one_in_width(name):
    """The hidden multiplier already makes F(h) O(1): an extra 1/sqrt(N) would make it vanish."""
    sizes = {}
    for width in (64, 1024):
        torch.manual_seed(0)
        block = ResMLP(width, 1, P(name, 64), in_dim=8).blocks[0]
        h = torch.randn(32, width, generator=torch.Generator().manual_seed(1))  # (B, N)
        with torch.no_grad():
            sizes[width] = block.fc2(torch.relu(block.fc1(h))).pow(2).mean().sqrt().item()
    assert sizes[1024] / sizes[64] == pytest.approx(1.0, rel=0.1)
    assert sizes[64] == pytest.approx(math.sqrt(0.5), rel=0.1)


# --- GPT --------------------------------------------------------------------------------------


def test_gpt_heads_are_addressable_modules():
    model = _gpt(depth=3, n_heads=4)
    heads = model.head_modules()
    assert list(heads) == [f"blocks.{b}.attn.heads.{h}" for b in range(3) for h in range(4)]
    for name, head in heads.items():
        assert isinstance(head, AttentionHead)
        assert model.get_submodule(name) is head
        assert [n for n, _ in head.named_parameters()] == ["q.weight", "k.weight", "v.weight"]
        assert head.q.weight.shape == (8, 32)  # (d_head, d_model)
    # Separate tensors: freezing one head leaves every other gradient intact.
    frozen = heads["blocks.1.attn.heads.2"]
    frozen.requires_grad_(False)
    model(_input("gpt")).sum().backward()
    assert all(p.grad is None for p in frozen.parameters())
    assert all(p.grad is not None for p in heads["blocks.1.attn.heads.1"].parameters())


def test_gpt_frozen_head_is_not_moved_by_the_optimizer():
    model = _gpt()
    opt = make_optimizer(model, "sgd", 0.1, momentum=0.9, weight_decay=0.1)
    head = model.head_modules()["blocks.0.attn.heads.0"]
    x = _input("gpt")
    for step in range(3):
        head.requires_grad_(step == 0)  # trained once (momentum), then skipped
        before = [p.detach().clone() for p in head.parameters()]
        opt.zero_grad(set_to_none=True)
        model(x).logsumexp(-1).mean().backward()
        opt.step()
        moved = any(not torch.equal(b, p) for b, p in zip(before, head.parameters(), strict=True))
        assert moved == (step == 0)


def test_gpt_is_causal():
    model = _gpt()
    x = _input("gpt", batch=2)
    t = 7
    y = x.clone()
    y[:, t + 1 :] = (y[:, t + 1 :] + 1) % 13
    with torch.no_grad():
        a, b = model(x), model(y)
    torch.testing.assert_close(a[:, : t + 1], b[:, : t + 1], rtol=0, atol=0)
    assert not torch.allclose(a[:, t + 1 :], b[:, t + 1 :])


@pytest.mark.parametrize(
    ("name", "scale"), [("sp", 1 / math.sqrt(8)), ("ntk", 1 / math.sqrt(8)), ("mup", 1 / 8)]
)
def test_gpt_attention_logit_scale(name, scale):
    model = _gpt(P(name, 32))
    head = model.head_modules()["blocks.0.attn.heads.1"]
    assert head.logit_scale == pytest.approx(scale)  # d_head = 32 / 4 = 8
    x = torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(0))  # (B, T, N)
    q, k, v = head.q(x), head.k(x), head.v(x)  # (B, T, D)
    logits = (q @ k.transpose(-2, -1)) * scale  # (B, T, T)
    logits = logits.masked_fill(torch.ones(5, 5, dtype=torch.bool).triu(1), float("-inf"))
    torch.testing.assert_close(head(x), logits.softmax(-1) @ v)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("bias", [False, True])
def test_batched_heads_match_each_head_forward(causal, bias):
    """The one-projection path equals concatenating every head's own forward: values,
    gradients, a forward-mode JVP and a Hessian-vector product (the spectra use all three)."""
    from traindyn.models import MultiHeadAttention

    torch.manual_seed(0)
    attn = MultiHeadAttention(32, 4, MUP, causal=causal, bias=bias).double()
    if bias:
        for p in attn.parameters():
            p.data.add_(0.1 * torch.randn_like(p))
    x = torch.randn(3, 7, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    params = dict(attn.named_parameters())

    def per_head(p):
        return torch.func.functional_call(attn, p, (x,))

    def reference(p):  # what the module computed before the heads were batched
        outs = [
            torch.func.functional_call(
                h,
                {
                    k.split(f"heads.{i}.", 1)[1]: v
                    for k, v in p.items()
                    if k.startswith(f"heads.{i}.")
                },
                (x,),
            )
            for i, h in enumerate(attn.heads)
        ]
        return torch.func.functional_call(
            attn.o, {k[2:]: v for k, v in p.items() if k.startswith("o.")}, (torch.cat(outs, -1),)
        )

    torch.testing.assert_close(per_head(params), reference(params), rtol=1e-12, atol=1e-12)
    tangent = {k: torch.randn_like(v) for k, v in params.items()}
    _, jvp_batched = torch.func.jvp(per_head, (params,), (tangent,))
    _, jvp_ref = torch.func.jvp(reference, (params,), (tangent,))
    torch.testing.assert_close(jvp_batched, jvp_ref, rtol=1e-10, atol=1e-12)

    def loss(f, p):
        return f(p).square().sum()

    g = torch.func.grad(lambda p: loss(per_head, p))(params)
    g_ref = torch.func.grad(lambda p: loss(reference, p))(params)
    hvp = torch.func.jvp(torch.func.grad(lambda p: loss(per_head, p)), (params,), (tangent,))[1]
    hvp_ref = torch.func.jvp(torch.func.grad(lambda p: loss(reference, p)), (params,), (tangent,))[
        1
    ]
    for k in params:
        torch.testing.assert_close(g[k], g_ref[k], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(hvp[k], hvp_ref[k], rtol=1e-9, atol=1e-11)
    # with one head frozen the trained and frozen heads are two batches: no weight-gradient
    # work for the frozen head (one concatenated projection would do it and throw it away),
    # and the same values and gradients as the per-head reference
    from torch.utils.flop_counter import FlopCounterMode

    def step_flops():
        with FlopCounterMode(display=False) as counter:
            attn(x).square().sum().backward()
        attn.zero_grad(set_to_none=True)
        return counter.get_total_flops()

    all_trained = step_flops()
    attn.heads[1].requires_grad_(False)
    # the frozen head's whole backward is skipped (x needs no gradient): the weight gradients
    # of q, k, v, (B T rows) x (D out) x (N in), and its 4 attention bmm's of B x (T x T x D),
    # 2 flops per multiply-add
    (B, T, N), D = x.shape, attn.heads[1].q.out_features
    head_backward = 3 * 2 * B * T * D * N + 4 * 2 * B * T * T * D
    assert step_flops() == all_trained - head_backward
    xg = x.clone().requires_grad_(True)
    attn(xg).square().sum().backward()
    grads = {k: v.grad.clone() for k, v in params.items() if v.grad is not None}
    dx = xg.grad.clone()
    attn.zero_grad(set_to_none=True)
    assert not any(k.startswith("heads.1.") for k in grads)
    xr = x.clone().requires_grad_(True)
    per_head = [h(xr) for h in attn.heads]  # the per-head reference, head 1 still frozen
    attn.o(torch.cat(per_head, -1)).square().sum().backward()
    for k, g_k in grads.items():
        torch.testing.assert_close(g_k, params[k].grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(dx, xr.grad, rtol=1e-10, atol=1e-12)
    attn.zero_grad(set_to_none=True)
    attn.heads[1].requires_grad_(True)
    # a forward hook on a head takes the per-head path, so the hook sees the head's output
    expected, seen = reference(params), []
    attn.heads[2].register_forward_hook(lambda _m, _i, out: seen.append(out.shape))
    torch.testing.assert_close(attn(x), expected, rtol=1e-12, atol=1e-12)
    assert seen == [(3, 7, 8)]


def test_gpt_depth_growth_by_deep_copy():
    model = _gpt(depth=2)
    x = _input("gpt")
    model.blocks.append(copy.deepcopy(model.blocks[-1]))
    assert model.depth == 3
    assert model(x).shape == (3, 16, 13)
    assert model.blocks[2].attn.heads[0].q.weight is not model.blocks[1].attn.heads[0].q.weight
    assert "blocks.2.attn.heads.3" in model.head_modules()
    assert len(model.ntk_modules()) == 12


def test_block_with_zeroed_output_projections_is_identity():
    model = _gpt()
    x = _input("gpt")
    with torch.no_grad():
        base = model(x)
        new = copy.deepcopy(model.blocks[0])
        new.attn.o.weight.zero_()
        new.mlp.down.weight.zero_()
        model.blocks.insert(1, new)
        torch.testing.assert_close(model(x), base, rtol=0, atol=1e-6)
