"""The GPT's training step with its heads attending one by one vs as one batch; prints one JSON object.

Side by side in one process, on the same model (``traindyn.models.GPT``, 2 blocks x 4 heads, μP,
vocabulary 65, context 32, batch 16: the scaling study's GPT sweep) and the same tokens:
  (a) per-head: every head's own ``forward`` (forced by a no-op forward hook on each head,
      which is what makes ``MultiHeadAttention`` take that path), optimizer without foreach;
  (b) batched: one q, k, v projection and one attention call for all heads, no foreach;
  (c) batched with torch's foreach Adam, as ``make_optimizer`` builds it.
One step = forward, cross-entropy, backward, Adam step; the median over the timed steps (after
warm-up steps) of each repeat, then the median over repeats, alternating the order.

Usage: python benchmarks/bench_attention.py [--widths 32 64 128] [--steps 60] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch
from timing import median_time

from traindyn.models import GPT
from traindyn.param import Parameterization, make_optimizer
from traindyn.train import make_loss

VARIANTS = {"per_head": (True, False), "batched": (False, False), "batched_foreach": (False, True)}


def step_ms(width: int, per_head: bool, foreach: bool, steps: int, warmup: int = 10) -> float:
    """Median wall time (ms) of one training step of the GPT at ``width``."""
    torch.manual_seed(0)
    model = GPT(
        width, 2, Parameterization.from_name("mup", 32), vocab_size=65, block_size=32, n_heads=4
    )
    if per_head:
        for block in model.blocks:
            for head in block.attn.heads:
                head.register_forward_hook(lambda *_: None)
    opt = make_optimizer(model, "adam", 0.01)
    for group in opt.param_groups:
        group["foreach"] = foreach
    g = torch.Generator().manual_seed(1)
    x, y = torch.randint(0, 65, (16, 32), generator=g), torch.randint(0, 65, (16, 32), generator=g)
    loss_fn = make_loss("xent")

    def step() -> None:
        loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return 1e3 * median_time(step, steps, warmup=warmup)


def main() -> None:
    """Time every variant at every width and print the medians and the speed-ups."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", type=int, nargs="+", default=[32, 64, 128])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out: dict = {"bench": "attention", "threads": args.threads, "steps": args.steps, "widths": {}}
    for width in args.widths:
        runs: dict[str, list[float]] = {name: [] for name in VARIANTS}
        for rep in range(args.repeats):
            names = list(VARIANTS) if rep % 2 == 0 else list(reversed(VARIANTS))
            for name in names:
                runs[name].append(step_ms(width, *VARIANTS[name], args.steps))
        med = {name: statistics.median(v) for name, v in runs.items()}
        out["widths"][str(width)] = {
            **{f"{name}_ms": round(v, 3) for name, v in med.items()},
            "speedup_batched": round(med["per_head"] / med["batched"], 3),
            "speedup_batched_foreach": round(med["per_head"] / med["batched_foreach"], 3),
        }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
