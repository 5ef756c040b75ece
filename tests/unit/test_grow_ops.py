"""Growth plans and operators on a tiny GPT: plans, function preservation, independence, Net2WiderNet."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from traindyn.grow.ops import apply_depth_plan, grow_moments, net2wider
from traindyn.grow.plans import (
    DEPTH_STRATEGIES,
    STRATEGIES,
    depth_plan,
    duplicate_plan,
    grown_depth,
    plan_string,
)
from traindyn.models import build_model
from traindyn.param import Parameterization, make_optimizer

V, T, N = 11, 8, 16


def _gpt(depth, param=None, mlp_ratio=4, seed=0):
    torch.manual_seed(seed)
    param = param or Parameterization.from_name("sp", N)
    spec = {"arch": "gpt", "width": N, "depth": depth, "n_heads": 2, "vocab_size": V, "block_size": T,
            "mlp_ratio": mlp_ratio}  # fmt: skip
    return build_model(spec, param)


def _trained(depth, param=None, steps=5):
    """A base whose blocks differ (a few Adam steps), so copies are told apart."""
    model = _gpt(depth, param)
    opt = make_optimizer(model, "adamw", 1e-2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        x = torch.randint(0, V, (4, T), generator=gen)
        loss = F.cross_entropy(model(x).reshape(-1, V), x.roll(1, 1).reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model, opt


def _loss(model, x):
    with torch.no_grad():
        return float(F.cross_entropy(model(x).reshape(-1, V), x.roll(1, 1).reshape(-1)))


@pytest.mark.parametrize(("strategy", "L", "b", "expected"), [
    ("copy_top", 4, 2, "012323"), ("copy_middle", 4, 2, "012123"), ("copy_bottom", 4, 2, "010123"),
    ("interleave", 4, 2, "001233"), ("interleave", 3, 3, "001122"), ("stack", 3, 3, "012012"),
    ("random_top", 4, 2, "0123nn"), ("random_middle", 4, 2, "01nn23"), ("fp_copy_top", 4, 2, "0123zz"),
    ("fp_copy_middle", 4, 2, "012zz3"), ("fp_random_middle", 4, 1, "01z23"), ("copy_middle", 5, 1, "012234"),
])  # fmt: skip
def test_each_plan_on_a_tiny_model(strategy, L, b, expected):
    plan = depth_plan(strategy, L, b)
    assert plan_string(plan) == expected
    assert grown_depth(strategy, L, b) == len(expected)
    # every base block appears; without the added blocks the base stack is left in order
    assert {e["src"] for e in plan} - {None} == set(range(L))
    added = [i for i, c in enumerate(expected) if c in "nz"]
    if added:
        assert [e["src"] for i, e in enumerate(plan) if i not in added] == list(range(L))


def test_fp_copies_keep_their_source():
    assert [e["src"] for e in depth_plan("fp_copy_top", 4, 2)] == [0, 1, 2, 3, 2, 3]


def test_bad_plans_are_refused():
    with pytest.raises(ValueError, match="doubles the depth"):
        depth_plan("stack", 4, 2)
    with pytest.raises(ValueError, match="expected one of"):
        depth_plan("copy_sideways", 4, 2)
    with pytest.raises(ValueError, match="added"):
        depth_plan("copy_top", 2, 3)
    with pytest.raises(ValueError, match="not a block"):
        duplicate_plan(3, 3)
    assert set(DEPTH_STRATEGIES) < set(STRATEGIES)


def test_duplicate_plan_of_the_last_block_is_copy_top():
    assert duplicate_plan(4, 3) == depth_plan("copy_top", 4, 1)
    assert plan_string(duplicate_plan(4, 1)) == "01123"


@pytest.mark.parametrize("strategy", ["fp_copy_top", "fp_copy_middle", "fp_random_middle", "fp_random_top"])
@pytest.mark.parametrize("alpha", [None, 0.5])
def test_function_preserving_growth_reproduces_the_base_loss(strategy, alpha):
    param = Parameterization.from_name("sp" if alpha is None else "mup", N, alpha)
    base, _ = _trained(4, param)
    grown = _gpt(6, param, seed=1)
    ratio = base.blocks[0].branch_scale / grown.blocks[0].branch_scale
    apply_depth_plan(grown, base.state_dict(), depth_plan(strategy, 4, 2), branch_ratio=ratio)
    x = torch.randint(0, V, (8, T), generator=torch.Generator().manual_seed(3))
    assert abs(_loss(grown, x) - _loss(base, x)) < 1e-6
    torch.testing.assert_close(grown(x), base(x), atol=1e-5, rtol=0)


def test_copy_growth_is_not_function_preserving():
    base, _ = _trained(4)
    grown = _gpt(6, seed=1)
    apply_depth_plan(grown, base.state_dict(), depth_plan("copy_top", 4, 2))
    x = torch.randint(0, V, (8, T), generator=torch.Generator().manual_seed(3))
    assert abs(_loss(grown, x) - _loss(base, x)) > 1e-4


def test_copies_are_deep_and_independent():
    base, _ = _trained(4)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    grown = _gpt(6, seed=1)
    apply_depth_plan(grown, base.state_dict(), depth_plan("copy_top", 4, 2))
    for i, src in enumerate([0, 1, 2, 3, 2, 3]):
        for (k, a), (_, b) in zip(grown.blocks[i].state_dict().items(), base.blocks[src].state_dict().items(), strict=False):
            assert torch.equal(a, b), k
    assert torch.equal(grown.head.weight, base.head.weight) and torch.equal(grown.wte.weight, base.wte.weight)
    with torch.no_grad():
        grown.blocks[4].mlp.up.weight.add_(1.0)  # change the copy of block 2
        grown.wte.weight.add_(1.0)
    assert torch.equal(grown.blocks[2].mlp.up.weight, base.blocks[2].mlp.up.weight)  # the other copy
    for k, v in base.state_dict().items():  # the source
        assert torch.equal(v, before[k]), k
    ptrs = [p.data_ptr() for p in grown.parameters()]
    assert len(ptrs) == len(set(ptrs))  # no tied weights


def test_random_blocks_keep_the_target_init():
    base, _ = _trained(4)
    grown = _gpt(6, seed=1)
    fresh = {k: v.clone() for k, v in grown.state_dict().items()}
    apply_depth_plan(grown, base.state_dict(), depth_plan("random_top", 4, 2))
    assert torch.equal(grown.blocks[5].attn.o.weight, fresh["blocks.5.attn.o.weight"])
    assert torch.equal(grown.blocks[3].attn.o.weight, base.blocks[3].attn.o.weight)


def test_plan_length_must_match_the_target():
    base, _ = _trained(4)
    with pytest.raises(ValueError, match="plan has 6 blocks"):
        apply_depth_plan(_gpt(5), base.state_dict(), depth_plan("copy_top", 4, 2))


@pytest.mark.parametrize("name", ["sp", "mup"])
def test_net2wider_reproduces_the_outputs(name):
    param = Parameterization.from_name(name, N)
    base, _ = _trained(3, param)
    wide = _gpt(3, param, mlp_ratio=8, seed=1)
    mult = base.blocks[0].mlp.down.multiplier
    net2wider(wide, base.state_dict(), mult, torch.Generator().manual_seed(0))
    assert wide.blocks[0].mlp.up.weight.shape[0] == 2 * base.blocks[0].mlp.up.weight.shape[0]
    x = torch.randint(0, V, (8, T), generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(wide(x), base(x), atol=1e-5, rtol=1e-5)
    # the new units are copies (a random unit's incoming weights), not the init
    rows = {tuple(r.tolist()) for r in base.blocks[0].mlp.up.weight}
    assert all(tuple(r.tolist()) in rows for r in wide.blocks[0].mlp.up.weight)


def test_grown_moments_follow_the_plan():
    base, opt = _trained(4)
    names = [n for g in opt.param_groups for n in g["param_names"]]
    grown = _gpt(6, seed=1)
    plan = depth_plan("fp_copy_top", 4, 2)
    apply_depth_plan(grown, base.state_dict(), plan)
    gopt = make_optimizer(grown, "adamw", 1e-2)
    moved = grow_moments(gopt, opt.state_dict(), names, plan)
    params = dict(base.named_parameters())
    for g in gopt.param_groups:
        for n, p in zip(g["param_names"], g["params"], strict=False):
            if n.startswith(("blocks.4.", "blocks.5.")):
                assert p not in gopt.state  # zeroed new blocks start fresh
            else:
                src = n.replace("blocks.", "blocks.", 1)
                torch.testing.assert_close(gopt.state[p]["exp_avg"], opt.state[params[src]]["exp_avg"])
    assert moved == sum(1 for n in dict(grown.named_parameters()) if not n.startswith(("blocks.4.", "blocks.5.")))
    gopt.step()  # the grown state is usable
