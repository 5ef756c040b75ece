"""MAT's costs on the default GPT (4 blocks x 4 heads, d=64, context 64); prints one JSON object.

Measured on synthetic tokens (shapes are what matter), one thread, median over repeats:
  - every head's lambda_max in one pass (``traindyn.spectra.module_ntk`` on the 16 heads)
    against one full-NTK lambda_max (every parameter as one module) on the same probe set:
    the issue's bound is a ratio <= 2;
  - one training step (forward, backward, Adam) with every head training against one with
    half the heads gated off (requires_grad False), in seconds and in analytic GEMM FLOPs:
    whether a FLOPs saving shows in wall time;
  - one MAT measurement (``measure_modules``) in seconds and FLOPs, in training steps.

Usage: python benchmarks/bench_mat.py [--repeats 5] [--threads 1] [--batch 16] [--probe 32]
"""

from __future__ import annotations

import argparse
import json

import torch
from timing import median_time

from traindyn.mat.callback import measurement_flops
from traindyn.mat.flops import GemmCounter
from traindyn.mat.measure import measure_modules
from traindyn.mat.registry import module_registry
from traindyn.models import build_model
from traindyn.param import Parameterization, make_optimizer
from traindyn.spectra import module_ntk
from traindyn.train import make_loss

MAX_RATIO = 2.0


def main() -> None:
    """Run the benchmark and print its JSON."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--probe", type=int, default=32)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    spec = {"arch": "gpt", "width": 64, "depth": 4, "vocab_size": 65, "block_size": 64, "n_heads": 4}
    model = build_model(spec, Parameterization.from_name("sp", 64, None))
    reg = module_registry(model)
    gen = torch.Generator().manual_seed(1)
    probe = torch.randint(0, 65, (args.probe, 64), generator=gen)
    x, y = torch.randint(0, 65, (args.batch, 64), generator=gen), torch.randint(0, 65, (args.batch, 64), generator=gen)
    heads = {m: list(g.params) for m, g in reg.items()}
    everything = {"all": [n for n, _ in model.named_parameters()]}
    t_heads = median_time(lambda: module_ntk(model, probe, heads), args.repeats)
    t_full = median_time(lambda: module_ntk(model, probe, everything), args.repeats)
    opt = make_optimizer(model, "adam", 1e-3)
    loss_fn = make_loss("xent")

    def step():
        loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    counter = GemmCounter(model, x)
    flops_full = counter.count()["total"]
    t_step_full = median_time(step, args.repeats * 4)
    off = [m for g in range(4) for m in list(reg)[4 * g : 4 * g + 2]]  # two heads of every block
    for m in off:
        for n in reg[m].params:
            model.get_parameter(n).requires_grad_(False)
    flops_gated = counter.count()["total"]
    t_step_gated = median_time(step, args.repeats * 4)
    for p in model.parameters():
        p.requires_grad_(True)
    t_measure = median_time(lambda: measure_modules(model, probe, reg), args.repeats)
    f_measure = measurement_flops(model, probe, reg, 4)
    out = {
        "bench": "mat", "threads": args.threads, "probe_examples": args.probe, "batch": args.batch,
        "heads": len(reg), "all_heads_one_pass_s": t_heads, "full_ntk_s": t_full,
        "ratio_all_heads_over_full": t_heads / t_full, "target_ratio": MAX_RATIO,
        "ratio_ok": t_heads / t_full <= MAX_RATIO,
        "step_s_all_heads": t_step_full, "step_s_half_heads_gated": t_step_gated,
        "step_flops_all_heads": flops_full, "step_flops_half_heads_gated": flops_gated,
        "flops_saved_pct_half_gated": 100 * (1 - flops_gated / flops_full),
        "wall_saved_pct_half_gated": 100 * (1 - t_step_gated / t_step_full),
        "measure_s": t_measure, "measure_flops": f_measure,
        "measure_in_steps_flops": f_measure / flops_full, "measure_in_steps_wall": t_measure / t_step_full,
    }  # fmt: skip
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
