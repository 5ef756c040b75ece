"""The lag study's grid: base runs, grown runs per strategy, probes and stages of adaptive stacking."""

from __future__ import annotations

from typing import Any

from ..train.spec import RunSpec
from .plans import depth_plan, duplicate_plan, grown_depth

__all__ = ["STUDY", "dependencies", "lag_runs", "param_tag", "stack_schedules"]

STUDY = "lag"


def param_tag(param: str, alpha: float | None) -> str:
    """Run-id prefix of a parameterization: ``sp`` or ``mup-a0.5`` (depth-muP)."""
    return param if alpha is None else f"{param}-a{alpha:g}"


def _spec(cfg: dict[str, Any], run: str, seed: int, depth: int, steps: int, param: str, alpha: float | None,
          extra: dict[str, Any], lr: float | None = None, schedule: str = "cosine", warmup: int | None = None,
          eval_every: int | None = None, mlp_ratio: int | None = None) -> RunSpec:  # fmt: skip
    m, t = cfg["model"], cfg["training"]
    model = {"arch": "gpt", "width": m["width"], "depth": depth, "n_heads": m["n_heads"],
             "mlp_ratio": mlp_ratio or m["mlp_ratio"]}  # fmt: skip
    return RunSpec(
        study=STUDY, run=run, dataset=cfg["dataset"], model=model, param=param, base_width=m["width"],
        depth_alpha=alpha, optimizer=t["optimizer"], lr=lr or t["lr"], momentum=0.0,
        weight_decay=t["weight_decay"], loss="xent", steps=steps, batch_size=t["batch_size"],
        schedule=schedule, warmup_steps=t["warmup_steps"] if warmup is None else warmup,
        eval_every=eval_every or steps, eval_examples=t["eval_examples"], checkpoint_every=t["checkpoint_every"],
        loss_cap=t["loss_cap"], seed=seed, context=m["context"], grad_clip=t["grad_clip"], extra=extra,
    )  # fmt: skip


def _lags(cfg: dict[str, Any], steps: int) -> dict[str, Any]:
    return {"lags": sorted({*(k for k in cfg["lags"] if k <= steps), steps}), "examples": cfg["lag_examples"]}


def _base(cfg, tag, param, alpha, seed, depth, steps, optimizer_state, name="base") -> tuple[str, RunSpec]:
    run = f"{tag}-{name}-d{depth}-s{seed}"
    b = cfg["base"]
    extra = {"role": "base", "strategy": name, "save": {"optimizer": optimizer_state}}
    return run, _spec(cfg, run, seed, depth, steps, param, alpha, extra, warmup=b["warmup_steps"],
                      eval_every=b["eval_every"])  # fmt: skip


def _grown(cfg, tag, param, alpha, seed, base_run, strategy, group, lr=None, moments=False) -> tuple[str, RunSpec]:
    g = cfg["grow"]
    L, b, T = cfg["base"]["depth"], g["added"], g["steps"]
    depth = grown_depth(strategy, L, b)
    name = strategy + ("-moments" if moments else "")
    run = f"{tag}-{name}-d{depth}" + (f"-lr{lr:g}" if lr else "") + f"-s{seed}"
    extra: dict[str, Any] = {"role": "grown", "group": group, "strategy": name, "lag": _lags(cfg, T)}
    mlp_ratio = None
    if strategy == "net2wider":
        mlp_ratio = cfg["model"]["mlp_ratio"] * g["net2wider_factor"]
        extra["grow"] = {"base": base_run, "kind": "net2wider", "strategy": name}
    elif strategy != "scratch":
        extra["grow"] = {"base": base_run, "kind": "depth", "plan": depth_plan(strategy, L, b),
                         "rescale": g["rescale"], "moments": moments, "strategy": name}  # fmt: skip
    return run, _spec(cfg, run, seed, depth, T, param, alpha, extra, lr=lr, mlp_ratio=mlp_ratio)


def stack_schedules(cfg: dict[str, Any]) -> dict[str, int]:
    """Adaptive stacking's compute per stage: candidates c and probe overhead (c - 1) k at each new depth."""
    a = cfg["adaptive"]
    return {f"d{L + 1}": (L - 1) * a["lag"] for L in range(a["start_depth"], a["end_depth"])}


def _adaptive(cfg: dict[str, Any], seed: int) -> dict[str, RunSpec]:
    a, runs = cfg["adaptive"], {}
    tag, S, k = "sp", a["stage_steps"], a["lag"]
    # its own id: the pool's base may have the same depth but not the same steps
    start, spec = _base(cfg, tag, "sp", None, seed, a["start_depth"], a["start_steps"], False, name="stack_base")
    runs[start] = spec
    prev = dict.fromkeys(("adaptive", "stack_top", "stack_middle", "stack_top_pc", "stack_middle_pc"), start)
    overhead = stack_schedules(cfg)
    stage_lags = {"lags": [0, k, S], "examples": cfg["lag_examples"]}
    for L in range(a["start_depth"], a["end_depth"]):
        d = L + 1
        candidates = {}
        for pos in range(L):  # every position to duplicate; pos = L - 1 is copy top
            run = f"sp-adaptive-d{d}-p{pos}-s{seed}"
            extra = {"role": "probe", "group": "adaptive", "strategy": f"dup{pos}", "stage": d,
                     "lag": {"lags": [0, k], "examples": cfg["lag_examples"]},
                     "grow": {"base": prev["adaptive"], "kind": "depth", "plan": duplicate_plan(L, pos),
                              "rescale": False, "moments": False, "strategy": f"dup{pos}"}}  # fmt: skip
            # the first k steps of a stage: warm-up then constant (the cosine barely decays by k)
            runs[run] = _spec(cfg, run, seed, d, k, "sp", None, extra, schedule="warmup")
            candidates[run] = duplicate_plan(L, pos)
        plans = {"adaptive": None, "stack_top": depth_plan("copy_top", L, 1),
                 "stack_middle": depth_plan("copy_middle", L, 1)}  # fmt: skip
        plans |= {"stack_top_pc": plans["stack_top"], "stack_middle_pc": plans["stack_middle"]}
        for sched, plan in plans.items():
            run = f"sp-{sched}-d{d}-s{seed}"
            grow = {"base": prev[sched], "kind": "depth", "rescale": False, "moments": False, "strategy": sched}
            grow |= {"candidates": candidates, "choose_lag": k} if plan is None else {"plan": plan}
            steps = S + (overhead[f"d{d}"] if sched.endswith("_pc") else 0)
            extra = {"role": "stage", "group": "adaptive", "strategy": sched, "stage": d, "grow": grow,
                     "lag": {**stage_lags, "lags": sorted({0, k, steps})}}  # fmt: skip
            runs[run] = _spec(cfg, run, seed, d, steps, "sp", None, extra)
            prev[sched] = run
    total = a["start_steps"] + S * (a["end_depth"] - a["start_depth"])
    for sched, steps in (("stack_scratch", total), ("stack_scratch_pc", total + sum(overhead.values()))):
        run = f"sp-{sched}-d{a['end_depth']}-s{seed}"
        extra = {"role": "stage", "group": "adaptive", "strategy": sched, "stage": a["end_depth"],
                 "lag": {"lags": [0, steps], "examples": cfg["lag_examples"]}}  # fmt: skip
        runs[run] = _spec(cfg, run, seed, a["end_depth"], steps, "sp", None, extra)
    return runs


def _add(runs: dict[str, RunSpec], new: dict[str, RunSpec]) -> None:
    clash = sorted(r for r in new if r in runs and runs[r] != new[r])
    if clash:
        raise ValueError(f"lag runs {clash} would name two different runs: the grid's ids must be unique")
    runs.update(new)


def lag_runs(cfg: dict[str, Any]) -> dict[str, RunSpec]:
    """Every run of the lag study, keyed by its readable id (empty when disabled).

    Args:
        cfg: The resolved ``lag`` section of the config.
    """
    runs: dict[str, RunSpec] = {}
    if not cfg["enabled"]:
        return runs
    g, dm, sweep = cfg["grow"], cfg["depth_mup"], cfg["lr_sweep"]
    params = [("sp", None, cfg["seeds"], g["strategies"])]
    if dm["enabled"]:
        params.append(("mup", float(dm["alpha"]), dm["seeds"], dm["strategies"] or g["strategies"]))
    for param, alpha, seeds, strategies in params:
        tag = param_tag(param, alpha)
        for seed in seeds:
            base, spec = _base(cfg, tag, param, alpha, seed, cfg["base"]["depth"], cfg["base"]["steps"],
                               bool(g["moments"]))  # fmt: skip
            runs[base] = spec
            for strategy in strategies:
                runs.update([_grown(cfg, tag, param, alpha, seed, base, strategy, "pool")])
            if param == "sp":
                for strategy in g["moments"]:
                    runs.update([_grown(cfg, tag, param, alpha, seed, base, strategy, "moments", moments=True)])
            if sweep["enabled"] and seed in sweep["seeds"]:
                for factor in sweep["factors"]:
                    lr = float(f"{cfg['training']['lr'] * factor:.4g}")
                    runs.update([_grown(cfg, tag, param, alpha, seed, base, sweep["strategy"], "lr", lr=lr)])
    if cfg["adaptive"]["enabled"]:
        for seed in cfg["adaptive"]["seeds"]:
            _add(runs, _adaptive(cfg, seed))
    return runs


def dependencies(spec: RunSpec) -> list[str]:
    """Run ids whose outputs this run reads: its base (weights) and, for a stage, its probes."""
    grow = spec.extra.get("grow")
    if not grow:
        return []
    return [grow["base"], *grow.get("candidates", {})]
