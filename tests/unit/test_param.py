"""Parameterization rules: the table, base-width equivalences, LR groups, coordinate checks."""

from __future__ import annotations

import math

import pytest
import torch

from traindyn.models import MLP, ResMLP, build_model
from traindyn.param import (
    Parameterization,
    ParamLayer,
    coord_check,
    make_optimizer,
    param_groups,
)

torch.set_num_threads(1)

P = Parameterization.from_name
N0 = 64


def _batch(seed: int, in_dim: int = 32, n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + seed)
    return torch.randn(n, in_dim, generator=g), torch.randint(0, 10, (n,), generator=g)


def _mlp(name: str, width: int, depth: int = 3, bias: bool = False, **kw) -> MLP:
    torch.manual_seed(0)
    return MLP(width, depth, P(name, N0, **kw), in_dim=32, bias=bias)


def _sgd_step(model: torch.nn.Module, opt: torch.optim.Optimizer, x, y) -> None:
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()


# --- the table ------------------------------------------------------------------------------


@pytest.mark.parametrize("width", [64, 256])
def test_table_init_and_multipliers(width):
    f = width  # a hidden layer's fan-in
    gamma = math.sqrt(width / N0)
    sp, ntk, mup = P("sp", N0), P("ntk", N0), P("mup", N0)
    for role in ("input", "hidden", "readout"):
        assert sp.init_std(role, f) == pytest.approx(1 / math.sqrt(f))
        assert sp.multiplier(role, f, width) == 1.0
        assert ntk.init_std(role, f) == 1.0
        assert ntk.multiplier(role, f, width) == pytest.approx(1 / math.sqrt(f))
        assert mup.init_std(role, f) == 1.0
    assert mup.multiplier("hidden", f, width) == pytest.approx(1 / math.sqrt(f))
    assert mup.multiplier("readout", width, width) == pytest.approx(1 / (gamma * math.sqrt(width)))
    # Biases and norm gains are fan-in-1 weights: multiplier 1 everywhere.
    for p in (sp, ntk, mup):
        assert p.multiplier("vector", 1, width) == 1.0
        assert p.multiplier("readout_bias", 1, width) == 1.0


def test_attention_logit_scale():
    assert P("sp", N0).attn_logit_scale(16) == pytest.approx(0.25)
    assert P("ntk", N0).attn_logit_scale(16) == pytest.approx(0.25)
    assert P("mup", N0).attn_logit_scale(16) == pytest.approx(1 / 16)
    assert P("mup", N0, attn_mult=4.0).attn_logit_scale(16) == pytest.approx(0.25)


def test_parameterization_validates_and_names():
    with pytest.raises(ValueError, match="name=.*depth_alpha"):
        Parameterization("mu", 64, depth_alpha=2.0)
    assert P("MUP", 64).name == "mup"
    assert P("mup", 64, 0.5).tag == "mup-a0.5"
    assert P("ntk", 64).tag == "ntk"


# --- muP at the base width ------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["mlp", "resmlp", "gpt"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_mup_equals_ntk_at_base_width_bitwise(arch, optimizer):
    """In multiplier form gamma = 1 at N = N0, so muP *is* NTK there: same init, forward, steps."""
    if arch == "gpt":
        spec = {"arch": "gpt", "width": 16, "depth": 2, "vocab_size": 11, "block_size": 8}
        x = torch.randint(0, 11, (4, 8), generator=torch.Generator().manual_seed(0))
        y = torch.randint(0, 11, (4, 8), generator=torch.Generator().manual_seed(1))
        # d_head = 4: muP's attn_mult/d_head = 2/4 equals NTK's 1/sqrt(4) exactly.
        params = {"mup": P("mup", 16, attn_mult=2.0), "ntk": P("ntk", 16)}
    else:
        spec = {"arch": arch, "width": N0, "depth": 2, "in_dim": 32, "bias": True}
        x, y = _batch(0)
        params = {"mup": P("mup", N0), "ntk": P("ntk", N0)}
    models, outs = {}, {}
    for name, param in params.items():
        torch.manual_seed(0)
        models[name] = build_model(spec, param)
        opt = make_optimizer(models[name], optimizer, 0.05 if optimizer == "sgd" else 1e-2)
        outs[name] = [models[name](x).detach()]
        for _ in range(2):
            opt.zero_grad()
            out = models[name](x)
            torch.nn.functional.cross_entropy(
                out.reshape(-1, out.shape[-1]), y.reshape(-1)
            ).backward()
            opt.step()
            outs[name].append(models[name](x).detach())
    for a, b in zip(outs["mup"], outs["ntk"], strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(outs["mup"][0], outs["mup"][-1])  # the steps did move the model


def _standard_form_groups(mup_model, sp_model, lr, power, eps=1e-8):
    """SP groups reproducing muP's steps: lr * m**power per layer (SGD: 2, Adam: 1).

    Adam sees raw gradients m times the effective ones, so its eps maps to eps / m.
    """
    groups = []
    sp_layers = dict(sp_model.named_modules())
    for name, layer in mup_model.named_modules():
        if isinstance(layer, ParamLayer):
            sp_layer = sp_layers[name]
            m = layer.multiplier
            groups.append({"params": [sp_layer.weight], "lr": lr * m**power, "eps": eps / m})
            if sp_layer.bias is not None:
                groups.append({"params": [sp_layer.bias], "lr": lr})
    return groups


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_mup_is_sp_in_standard_form_at_base_width(optimizer):
    """At N0, muP and SP draw the same effective weights: the same function at init.

    They train alike once each SP layer's LR is muP's LR mapped to standard form,
    W_eff = m W: SGD lr * m^2, Adam lr * m and eps / m (mup's "muP equals SP at base width", here
    with the NTK-style per-layer LR that multiplier form implies). With one shared LR
    the two differ: that is why each parameterization needs its own LR grid per parameterization.
    """
    x, y = _batch(0)
    mup, sp, sp_plain = _mlp("mup", N0, bias=True), _mlp("sp", N0, bias=True), _mlp("sp", N0)
    torch.testing.assert_close(mup(x), sp(x), rtol=1e-5, atol=1e-6)
    lr, cls = (0.5, torch.optim.SGD) if optimizer == "sgd" else (1e-2, torch.optim.Adam)
    opt_mup = make_optimizer(mup, optimizer, lr)
    opt_sp = cls(_standard_form_groups(mup, sp, lr, 2 if optimizer == "sgd" else 1), lr=lr)
    opt_plain = cls(sp_plain.parameters(), lr=lr)
    for _ in range(3):
        _sgd_step(mup, opt_mup, x, y)
        _sgd_step(sp, opt_sp, x, y)
        _sgd_step(sp_plain, opt_plain, x, y)
    torch.testing.assert_close(mup(x), sp(x), rtol=1e-4, atol=1e-5)
    assert (mup(x) - sp_plain(x)).abs().max() > 1e-2


def test_mup_differs_from_ntk_away_from_base_width():
    mup, ntk = _mlp("mup", 4 * N0), _mlp("ntk", 4 * N0)
    assert mup.readout.multiplier == pytest.approx(ntk.readout.multiplier / 2)  # 1/gamma
    assert mup.layers[1].multiplier == ntk.layers[1].multiplier


# --- learning-rate and weight-decay groups --------------------------------------------------


def _by_role(groups):
    out = {}
    for g in groups:
        assert g["role"] not in out or out[g["role"]]["lr"] == g["lr"]
        out[g["role"]] = g
    return out


@pytest.mark.parametrize("width", [64, 256, 1024])
def test_adam_groups_mup(width):
    eta0, wd = 1e-3, 0.1
    model = _mlp("mup", width, bias=True)
    for opt in ("adam", "adamw"):
        g = _by_role(param_groups(model, opt, eta0, wd, width, depth=3))
        assert g["hidden"]["lr"] == pytest.approx(eta0 * math.sqrt(N0 / width))
        assert g["input"]["lr"] == pytest.approx(eta0)
        assert g["readout"]["lr"] == pytest.approx(eta0)
        assert g["vector"]["lr"] == pytest.approx(eta0)  # biases: input-like
        assert g["readout_bias"]["lr"] == pytest.approx(eta0)
        assert all(x["weight_decay"] == wd for x in g.values())


@pytest.mark.parametrize("width", [64, 256, 1024])
def test_sgd_groups_mup(width):
    eta0, wd = 0.1, 1e-3
    model = _mlp("mup", width, bias=True)
    g = _by_role(param_groups(model, "sgd", eta0, wd, width, depth=3))
    for role in ("input", "hidden", "readout", "vector"):
        assert g[role]["lr"] == pytest.approx(eta0 * width / N0)  # eta0 gamma^2
        assert g[role]["weight_decay"] == pytest.approx(wd * N0 / width)  # wd / gamma^2
    assert g["readout_bias"]["lr"] == pytest.approx(eta0)
    assert g["readout_bias"]["weight_decay"] == pytest.approx(wd)


@pytest.mark.parametrize("name", ["sp", "ntk"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_sp_ntk_groups_unscaled(name, optimizer):
    model = _mlp(name, 512, bias=True)
    for g in param_groups(model, optimizer, 0.1, 0.01, 512, depth=3):
        assert (g["lr"], g["weight_decay"]) == (pytest.approx(0.1), pytest.approx(0.01))


def test_groups_partition_parameters_with_names():
    torch.manual_seed(0)
    model = build_model({"arch": "gpt", "width": 32, "depth": 2, "vocab_size": 7}, P("mup", 16))
    groups = param_groups(model, "adamw", 1e-3, 0.1, 32, 2)
    names = [n for g in groups for n in g["param_names"]]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters())
    params = dict(model.named_parameters())
    for g in groups:
        assert all(p is params[n] for n, p in zip(g["param_names"], g["params"], strict=True))
    in_branch = {n for g in groups if g["in_branch"] for n in g["param_names"]}
    assert in_branch == {n for n in names if n.startswith("blocks.")}


def test_make_optimizer_builds_and_checks():
    model = _mlp("mup", 128)
    sgd = make_optimizer(model, "sgd", 0.1, momentum=0.9, weight_decay=1e-4)
    assert isinstance(sgd, torch.optim.SGD) and all(g["momentum"] == 0.9 for g in sgd.param_groups)
    assert isinstance(make_optimizer(model, "adamw", 1e-3), torch.optim.AdamW)
    with pytest.raises(ValueError, match="optimizer=.*momentum"):
        make_optimizer(model, "rmsprop", 1e-3, momentum=0.9)
    with pytest.raises(ValueError, match="width=256"):
        param_groups(model, "sgd", 0.1, 0.0, width=256, depth=3)
    # Extra group keys survive a checkpoint round trip.
    x, y = _batch(0)
    _sgd_step(model, sgd, x, y)
    fresh = make_optimizer(model, "sgd", 0.1, momentum=0.9, weight_decay=1e-4)
    fresh.load_state_dict(sgd.state_dict())
    assert fresh.param_groups[1]["role"] == "hidden"


# --- depth ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alpha", "sgd_factor", "adam_factor"),
    [
        (0.0, lambda L: 1 / L, lambda L: 1 / L),
        (0.5, lambda L: 1.0, lambda L: 1 / math.sqrt(L)),
        (1.0, lambda L: L, lambda L: 1.0),
        (None, lambda L: 1.0, lambda L: 1.0),
    ],
)
def test_depth_residual_scale_and_lr_factors(alpha, sgd_factor, adam_factor):
    param = P("mup", N0, alpha)
    for L in (1, 4, 16):
        assert param.residual_scale(L) == pytest.approx(1.0 if alpha is None else L**-alpha)
        assert param.depth_lr_factor(L, "sgd") == pytest.approx(sgd_factor(L))
        assert param.depth_lr_factor(L, "adam") == pytest.approx(adam_factor(L))
    L, width, eta0 = 16, 128, 0.1
    torch.manual_seed(0)
    model = ResMLP(width, L, param, in_dim=32)
    assert all(b.branch_scale == pytest.approx(param.residual_scale(L)) for b in model.blocks)
    for optimizer, factor in (("sgd", sgd_factor), ("adam", adam_factor)):
        for g in param_groups(model, optimizer, eta0, 0.0, width, L):
            width_scale = param.lr_scale(g["role"], width, optimizer)
            expected = eta0 * width_scale * (factor(L) if g["in_branch"] else 1.0)
            assert g["lr"] == pytest.approx(expected)
            assert g["in_branch"] == (g["role"] == "hidden")


# --- coordinate checks ----------------------------------------------------------------------


def _delta_ratios(df, small, large, step=3):
    d = df[(df.step == step) & (df.statistic == "delta_act_l1")]
    d = d.groupby(["module", "width"]).value.mean().unstack()
    return d[large] / d[small]


def _mlp_check(name, optimizer, lr):
    df = coord_check(
        lambda w: build_model({"arch": "mlp", "width": w, "depth": 3, "in_dim": 32}, P(name, N0)),
        [64, 1024],
        _batch,
        steps=3,
        lr=lr,
        optimizer=optimizer,
        seeds=[0, 1],
    )
    return _delta_ratios(df, 64, 1024)


def test_coord_check_frame():
    df = coord_check(lambda w: _mlp("mup", w), [64, 128], _batch, steps=2, lr=0.5, seeds=[0])
    assert list(df.columns) == ["width", "seed", "step", "module", "statistic", "value"]
    assert set(df.statistic) == {"act_l1", "delta_act_l1"}
    assert {"layers.0", "layers.2", "readout", "output"} <= set(df.module)
    assert sorted(df.step.unique()) == [0, 1, 2]
    assert (df[(df.step == 0) & (df.statistic == "delta_act_l1")].value == 0).all()
    assert (df[(df.step == 2) & (df.statistic == "delta_act_l1")].value > 0).all()


@pytest.mark.parametrize(("optimizer", "lr"), [("sgd", 1.0), ("adam", 1e-2)])
def test_coord_check_mup_flat_in_width(optimizer, lr):
    ratios = _mlp_check("mup", optimizer, lr)
    assert ((ratios > 0.5) & (ratios < 2.0)).all(), ratios


@pytest.mark.parametrize(("optimizer", "lr"), [("sgd", 0.1), ("adam", 1e-2)])
def test_coord_check_sp_grows_with_width(optimizer, lr):
    ratios = _mlp_check("sp", optimizer, lr)
    assert ratios["readout"] > 4.0, ratios
    assert ratios["layers.1"] > 2.0 and ratios["layers.2"] > 2.0, ratios


def test_coord_check_ntk_features_freeze_with_width():
    ratios = _mlp_check("ntk", "sgd", 1.0)
    # Hidden features move like 1/sqrt(N): a 16x wider net moves 4x less.
    assert (ratios[["layers.0", "layers.1", "layers.2"]] < 0.4).all(), ratios


@pytest.mark.parametrize(
    ("alpha", "optimizer", "lr"),
    [(0.5, "sgd", 1.0), (0.5, "adam", 1e-2), (1.0, "sgd", 1.0), (1.0, "adam", 1e-2)],
)
def test_coord_check_depth_mup_flat_in_depth(alpha, optimizer, lr):
    """The last block's feature change after 3 steps is the same at depth 2 and 32."""
    deltas = {}
    for L in (2, 32):
        df = coord_check(
            lambda w, L=L: ResMLP(w, L, P("mup", N0, alpha), in_dim=32),
            [128],
            _batch,
            steps=3,
            lr=lr,
            optimizer=optimizer,
        )
        row = df[
            (df.step == 3) & (df.statistic == "delta_act_l1") & (df.module == f"blocks.{L - 1}")
        ]
        deltas[L] = row.value.item()
    assert 0.5 < deltas[32] / deltas[2] < 2.0, deltas
