"""The cmd study's grid: trajectories (SGD with online CMD, P-SGD, embedded CMD) and the width sweep."""

from __future__ import annotations

from typing import Any

from ..train.spec import RunSpec, run_id

__all__ = ["STUDY", "cmd_runs", "psgd_rank"]

STUDY = "cmd"


def psgd_rank(cfg: dict[str, Any]) -> int:
    """The rank d of P-SGD: the main fit's M time-varying dimensions, at most F - 1."""
    return min(cfg["modes"], cfg["warmup"] - 1)


def _spec(cfg: dict[str, Any], run: str, m: dict[str, Any], param: str, width: int, base_width: int,
          lr: float, seed: int, extra: dict[str, Any]) -> RunSpec:  # fmt: skip
    model = {"arch": m["arch"], "width": width, "depth": m["depth"]}
    if m["arch"] == "gpt":
        model["n_heads"] = m["n_heads"]
    return RunSpec(
        study=STUDY, run=run, dataset=m["dataset"], model=model, param=param, base_width=base_width,
        depth_alpha=None, optimizer="sgd", lr=lr, momentum=0.0, weight_decay=0.0, loss="xent",
        steps=m["steps"], batch_size=m["batch_size"], schedule="constant", warmup_steps=0,
        eval_every=m["steps"], eval_examples=cfg["eval_examples"], checkpoint_every=m["checkpoint_every"],
        loss_cap=20.0, seed=seed, context=m.get("context", 64), snapshot_every=m["stride"], extra=extra,
    )  # fmt: skip


def cmd_runs(cfg: dict[str, Any]) -> dict[str, RunSpec]:
    """Every run of the cmd study, keyed by its readable id, e.g. ``mlp-sp-w128-d2-lr0.1-s0``.

    Per model and seed: the SGD run (trajectory + online CMD), its ``-psgd`` twin and one
    ``-emb{fraction}`` run per embedded fraction (where the model asks for them). The width
    sweep adds ``sweep-{param}-w{width}-...`` MLP runs (trajectory only).

    Args:
        cfg: The resolved ``cmd`` section.
    """
    runs: dict[str, RunSpec] = {}
    if not cfg["enabled"]:
        return runs
    online = {"k": cfg["k"], "m": cfg["modes"], "warmup": cfg["warmup"]}
    for arch_key, m in cfg["models"].items():
        if not m["enabled"]:
            continue
        for seed in cfg["seeds"]:
            base = f"{arch_key}-{run_id(m['param'], m['width'], m['depth'], m['lr'], seed)}"
            variants = [("sgd", base, {}), ("psgd", f"{base}-psgd", {"rank": psgd_rank(cfg)})]
            if m["embedded"]:
                variants += [("embedded", f"{base}-emb{f:g}", {"max_fraction": f, "interval": cfg["interval"],
                                                               "percent": cfg["percent"]})
                             for f in cfg["embedded_fractions"]]  # fmt: skip
            for kind, rid, more in variants:
                extra = {"kind": kind, "model_key": arch_key, "base_run": base, "cmd": {**online, **more}}
                runs[rid] = _spec(cfg, rid, m, m["param"], m["width"], m["width"], m["lr"], seed, extra)
    sw = cfg["width_sweep"]
    if sw["enabled"]:
        m = {**sw, "arch": "mlp", "checkpoint_every": 0}
        for param in sw["parameterizations"]:
            for width in sw["widths"]:
                for seed in sw["seeds"]:
                    lr = sw["lrs"][param]
                    rid = f"sweep-{run_id(param, width, sw['depth'], lr, seed)}"
                    extra = {"kind": "sweep", "model_key": "sweep", "base_run": rid, "cmd": online}
                    runs[rid] = _spec(cfg, rid, m, param, width, sw["base_width"], lr, seed, extra)
    return runs
