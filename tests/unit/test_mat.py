"""MAT: gated modules are really skipped, FLOPs are counted exactly, the registry and measurements."""

import copy

import pytest
import torch

from traindyn.mat.callback import measurement_flops
from traindyn.mat.flops import GemmCounter, gemm_table, torch_step_flops
from traindyn.mat.measure import effective_rank, measure_modules
from traindyn.mat.registry import module_registry
from traindyn.models import build_model
from traindyn.param import Parameterization, make_optimizer
from traindyn.spectra import module_ntk
from traindyn.train import make_loss

GPT = {"arch": "gpt", "width": 16, "depth": 2, "vocab_size": 11, "block_size": 8, "n_heads": 2}
VIT = {"arch": "vit", "width": 16, "depth": 2, "n_heads": 4}


def _gpt(seed=0, param="sp"):
    torch.manual_seed(seed)
    return build_model(GPT, Parameterization.from_name(param, 16, None))


def _batch(seed=1, b=4):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 11, (b, 8), generator=gen), torch.randint(0, 11, (b, 8), generator=gen)


def _gate(model, registry, off):
    for m in off:
        for name in registry[m].params:
            model.get_parameter(name).requires_grad_(False)


def _step(model, opt, batch):
    x, y = batch
    loss = make_loss("xent")(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


@pytest.mark.parametrize("name,kw", [("sgd", {"momentum": 0.9, "weight_decay": 0.1}),
                                     ("adam", {"weight_decay": 0.1}), ("adamw", {"weight_decay": 0.1})])  # fmt: skip
def test_gated_module_params_and_optimizer_state_are_bit_identical(name, kw):
    model = _gpt()
    opt = make_optimizer(model, name, 1e-2, **kw)
    reg = module_registry(model)
    for s in range(3):  # every parameter gets momentum / Adam moments first
        _step(model, opt, _batch(s))
    off = ["blocks.0.attn.heads.1", "blocks.1.attn.heads.0"]
    frozen = [n for m in off for n in reg[m].params]
    before = {n: model.get_parameter(n).detach().clone() for n in frozen}
    state_before = {n: copy.deepcopy(opt.state[model.get_parameter(n)]) for n in frozen}
    trained = "blocks.0.attn.heads.0.q.weight"
    other = model.get_parameter(trained).detach().clone()
    _gate(model, reg, off)
    for s in range(3, 5):
        _step(model, opt, _batch(s))
        assert all(model.get_parameter(n).grad is None for n in frozen)  # weight-grad not computed
    for n in frozen:
        assert torch.equal(model.get_parameter(n), before[n]), n
        state = opt.state[model.get_parameter(n)]
        assert state.keys() == state_before[n].keys()
        for k, v in state.items():
            assert torch.equal(v, state_before[n][k]), (n, k)
    assert not torch.equal(model.get_parameter(trained), other)


def test_counted_flops_drop_by_exactly_the_skipped_weight_grads_and_match_torch():
    model, (x, y) = _gpt(), _batch()
    reg = module_registry(model)
    full = {g.weight: g for g in gemm_table(model, x)}
    counter = GemmCounter(model, x)
    all_on = counter.count()
    assert all_on["total"] == torch_step_flops(model, x, y, make_loss("xent"))
    off = ["blocks.0.attn.heads.0", "blocks.1.attn.heads.1"]
    _gate(model, reg, off)
    gated = counter.count()
    skipped = sum(full[n].weight_grad for m in off for n in reg[m].params)
    # q, k, v of a head: 3 weights of 2 * (B T) * d_model * d_head each
    assert skipped == 2 * 3 * 2 * (4 * 8) * 16 * 8
    assert all_on["total"] - gated["total"] == skipped
    assert all_on["forward"] == gated["forward"] and all_on["input_grad"] == gated["input_grad"]
    torch_count = torch_step_flops(model, x, y, make_loss("xent"))
    assert abs(gated["total"] - torch_count) <= 0.05 * torch_count


def test_vit_and_convnet_counts_match_torch_including_lost_input_grads():
    torch.manual_seed(0)
    sp = Parameterization.from_name("sp", 16, None)
    x, y = torch.randn(3, 1, 28, 28), torch.randint(0, 10, (3,))
    for spec in (VIT, {"arch": "convnet", "width": 8, "depth": 3}):
        model = build_model(spec, sp)
        reg = module_registry(model)
        _gate(model, reg, [list(reg)[0]])  # a ConvNet's first layer: later input-grads vanish too
        assert GemmCounter(model, x).count()["total"] == torch_step_flops(model, x, y, make_loss("xent"))


def test_measurement_flops_agree_with_torch_counter():
    model, (x, _) = _gpt(), _batch(b=6)
    reg = module_registry(model)
    res = measure_modules(model, x, reg, n_projections=3, count_flops=True)
    est = measurement_flops(model, x, reg, n_projections=3)
    assert abs(est - res.flops) <= 0.05 * res.flops


def test_registry_heads_layers_and_wo_ablation():
    model = _gpt()
    reg = module_registry(model)
    assert list(reg) == [f"blocks.{b}.attn.heads.{h}" for b in range(2) for h in range(2)]
    assert reg["blocks.1.attn.heads.0"].layer == 1
    assert reg["blocks.1.attn.heads.0"].params == tuple(
        f"blocks.1.attn.heads.0.{p}.weight" for p in "qkv")
    with_o = module_registry(model, include_o=True)
    assert with_o["blocks.0.attn.heads.1"].pieces[-1] == (
        "blocks.0.attn.o.weight", (slice(None), slice(8, 16)))
    conv = module_registry(build_model({"arch": "convnet", "width": 4, "depth": 2},
                                       Parameterization.from_name("sp", 4, None)))  # fmt: skip
    assert list(conv) == ["convs.0", "convs.1", "readout"] and {g.layer for g in conv.values()} == {0}


def test_wo_column_blocks_partition_the_kernel_of_wo():
    model, (x, _) = _gpt(), _batch(b=5)
    blocks = {f"h{h}": [("blocks.0.attn.o.weight", (slice(None), slice(8 * h, 8 * h + 8)))] for h in range(2)}
    res = module_ntk(model, x, blocks, n_projections=2)
    whole = module_ntk(model, x, {"o": ["blocks.0.attn.o.weight"]}, n_projections=2)
    torch.testing.assert_close(res.Theta["h0"] + res.Theta["h1"], whole.Theta["o"])
    with pytest.raises(ValueError, match="overlaps"):
        module_ntk(model, x, {"a": [("blocks.0.attn.o.weight", (slice(None), slice(0, 9)))],
                              "b": [("blocks.0.attn.o.weight", (slice(None), slice(8, 16)))]})  # fmt: skip


def test_measurement_matches_dense_kernel_and_effective_rank_bounds():
    model, (x, _) = _gpt(), _batch(b=4)
    reg = module_registry(model)
    res = measure_modules(model, x, reg, scalarisation="trace")
    # dense reference: the per-sample Jacobian of all outputs w.r.t. one head's q, k, v
    names = reg["blocks.1.attn.heads.0"].params
    rows = []
    model.eval()
    for i in range(4):
        out = model(x[i : i + 1]).reshape(-1)
        grads = [torch.cat([g.reshape(-1) for g in torch.autograd.grad(o, [model.get_parameter(n) for n in names],
                                                                        retain_graph=True)]) for o in out]  # fmt: skip
        rows.append(torch.stack(grads))  # (D, P)
    J = torch.stack(rows).double()  # (n, D, P)
    theta = torch.einsum("idp,jdp->ij", J, J) / 4
    assert res.lambda_max["blocks.1.attn.heads.0"] == pytest.approx(float(torch.linalg.eigvalsh(theta)[-1]), rel=1e-6)
    assert res.trace["blocks.1.attn.heads.0"] == pytest.approx(float(theta.trace()), rel=1e-6)
    assert all(1.0 <= r <= 8 for r in res.erank.values())  # d_head = 8
    assert effective_rank(torch.outer(torch.arange(1.0, 6), torch.ones(3))) == pytest.approx(1.0)
    assert effective_rank(torch.eye(4)) == pytest.approx(4.0)
