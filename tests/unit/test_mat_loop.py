"""MATCallback in the one training loop: heads gated off stay bit-identical, tables and FLOP check."""

import pandas as pd
import torch

from traindyn.mat.callback import MATCallback
from traindyn.train import Callback, RunSpec, train


class _Watch(Callback):
    """Keeps every head's q weight after each step."""

    def __init__(self):
        self.weights = []

    def on_step_end(self, state, loss):
        self.weights.append({n: p.detach().clone() for n, p in state.model.named_parameters()
                             if n.endswith(".q.weight")})  # fmt: skip


def _spec(**kw):
    base = {"study": "mat", "run": "vit-mat-s0", "dataset": "digits",
            "model": {"arch": "vit", "width": 16, "depth": 2, "n_heads": 4, "patch_size": 4},
            "param": "sp", "base_width": 16, "depth_alpha": None, "optimizer": "adamw", "lr": 1e-2,
            "momentum": 0.0, "weight_decay": 0.1, "loss": "xent", "steps": 12, "batch_size": 16,
            "schedule": "constant", "warmup_steps": 0, "eval_every": 4, "eval_examples": 64,
            "checkpoint_every": 0, "loss_cap": 20.0, "seed": 0, "fixed_batch_size": 16}  # fmt: skip
    return RunSpec(**{**base, **kw})


def test_mat_in_the_loop_skips_gated_heads_and_checks_its_flops(digits, tmp_path):
    mat = MATCallback("mat", digits, every=4, warmup_steps=4, alpha=1.0, ema=0.0, probe_examples=8,
                      test_examples=32, seed=0)  # fmt: skip
    watch = _Watch()
    final = train(_spec(), digits, tmp_path, callbacks=[mat, watch], progress=False)
    assert not final["diverged"]
    lam = pd.read_parquet(tmp_path / "mat_lambda.parquet")
    steps = pd.read_parquet(tmp_path / "mat_steps.parquet")
    check = pd.read_parquet(tmp_path / "mat_flopcheck.parquet")
    assert set(lam["step"]) == {0, 4, 8, 12} and len(lam) == 4 * 8  # 8 heads, measured at 0, 4, 8, end
    assert (lam[lam["step"] == 0]["active"]).all()  # warm-up
    assert check["rel_error"].max() < 1e-9  # analytic == FlopCounterMode on a gated step
    gated = steps[steps["active"] < steps["modules"]]
    assert len(gated) > 0 and (gated["flops"] < steps["flops"].max()).all()
    # every head off during steps 5..8 keeps its weights bit for bit (AdamW: no moment, no decay drift)
    off = lam[(lam["step"] == 4) & ~lam["active"]]["module"]
    assert len(off) > 0
    for m in off:
        name = f"{m}.q.weight"
        for s in range(5, 8):  # weights after steps 5..8 (index s = after step s + 1)
            assert torch.equal(watch.weights[s][name], watch.weights[4][name]), (m, s)
    on = lam[(lam["step"] == 4) & lam["active"]]["module"]
    assert any(not torch.equal(watch.weights[7][f"{m}.q.weight"], watch.weights[4][f"{m}.q.weight"]) for m in on)
    assert pd.read_parquet(tmp_path / "mat_test.parquet")["test_loss"].iloc[0] > 0


def test_random_variant_matches_the_mat_runs_active_counts(digits, tmp_path):
    mat = MATCallback("mat", digits, every=4, warmup_steps=4, ema=0.0, probe_examples=8, test_examples=32)
    train(_spec(), digits, tmp_path / "mat", callbacks=[mat], progress=False)
    rnd = MATCallback("random", digits, every=4, probe_examples=8, test_examples=32,
                      match=str(tmp_path / "mat" / "mat_lambda.parquet"), seed=0)  # fmt: skip
    train(_spec(run="vit-random-s0"), digits, tmp_path / "rnd", callbacks=[rnd], progress=False)
    a = pd.read_parquet(tmp_path / "mat" / "mat_steps.parquet")
    b = pd.read_parquet(tmp_path / "rnd" / "mat_steps.parquet")
    assert list(a["active"]) == list(b["active"])
    assert b["charged"].sum() == 0 and a["charged"].all()
