"""The mat study's grid: (model, variant, seed) runs and the CV-across-heads runs, as RunSpecs."""

from __future__ import annotations

from typing import Any

from ..train.spec import RunSpec

__all__ = ["STUDY", "mat_run_id", "mat_runs"]

STUDY = "mat"
TEXT = ("shakespeare", "wikitext2")


def mat_run_id(model: str, variant: str, seed: int, param: str | None = None, width: int | None = None) -> str:
    """Readable id: ``gpt-mat-s0``; a CV run ``cv-gpt-mup-w128-s0``."""
    if variant == "cv":
        return f"cv-{model}-{param}-w{width}-s{seed}"
    return f"{model}-{variant}-s{seed}"


def _callback_args(cfg: dict[str, Any], variant: str, dataset: str, context: int,
                   match: str | None) -> dict[str, Any]:  # fmt: skip
    g, m = cfg["gating"], cfg["measure"]
    return {"variant": variant, "data_dir": f"results/data/{dataset}", "every": g["every"],
            "warmup_steps": g["warmup_steps"], "alpha": g["alpha"], "ema": g["ema"],
            "min_active_per_layer": g["min_active_per_layer"], "tol": g["tol"], "patience": g["patience"],
            "signal": g["signal"], "probe_examples": m["probe_examples"], "scalarisation": m["scalarisation"],
            "n_projections": m["n_projections"], "include_o": m["include_o"],
            "test_examples": m["test_examples"], "context": context, "match": match}  # fmt: skip


def _spec(cfg: dict[str, Any], name: str, rid: str, variant: str, seed: int, param: str, width: int,
          base_width: int, steps: int, match: str | None) -> RunSpec:  # fmt: skip
    mc, t = cfg["models"][name], cfg["training"]
    text = mc["dataset"] in TEXT
    model = {"arch": name, "width": width, "depth": mc["depth"], "n_heads": mc["n_heads"]}
    if not text:
        model["patch_size"] = mc["patch_size"]
    return RunSpec(
        study=STUDY, run=rid, dataset=mc["dataset"], model=model, param=param, base_width=base_width,
        depth_alpha=None, optimizer=t["optimizer"], lr=mc["lr"], momentum=0.0,
        weight_decay=t["weight_decay"], loss="xent", steps=steps, batch_size=mc["batch_size"],
        schedule=t["schedule"], warmup_steps=t["warmup_steps"], eval_every=t["eval_every"],
        eval_examples=t["eval_examples"], checkpoint_every=t["checkpoint_every"], loss_cap=t["loss_cap"],
        seed=seed, context=mc["context"], fixed_batch_size=mc["batch_size"],
        extra={"model_name": name, "variant": variant,
               "mat": _callback_args(cfg, "full" if variant == "cv" else variant, mc["dataset"],
                                     mc["context"], match)},
    )  # fmt: skip


def mat_runs(cfg: dict[str, Any]) -> dict[str, RunSpec]:
    """Every run of the mat study, keyed by its readable id, in grid order.

    Each seed fixes the initialisation and the data order, the same for every variant.
    A ``random`` run matches, step by step, the active count of the ``mat`` run of its
    seed (``extra["mat"]["match"]`` names that run's ``mat_lambda.parquet``).

    Args:
        cfg: The resolved ``mat`` section of the config.
    """
    runs: dict[str, RunSpec] = {}
    if not cfg["enabled"]:
        return runs
    for name, mc in cfg["models"].items():
        if not mc["enabled"]:
            continue
        for variant in cfg["variants"]:
            for seed in cfg["seeds"]:
                rid = mat_run_id(name, variant, seed)
                match = (f"results/runs/{STUDY}/{mat_run_id(name, 'mat', seed)}/mat_lambda.parquet"
                         if variant == "random" else None)  # fmt: skip
                runs[rid] = _spec(cfg, name, rid, variant, seed, "sp", mc["width"], mc["width"],
                                  mc["steps"], match)  # fmt: skip
    cv = cfg["cv"]
    if cv["enabled"] and cfg["models"]["gpt"]["enabled"]:
        for param in cv["parameterizations"]:
            for width in cv["widths"]:
                for seed in cfg["seeds"]:
                    rid = mat_run_id("gpt", "cv", seed, param, width)
                    runs[rid] = _spec(cfg, "gpt", rid, "cv", seed, param, width, cv["base_width"],
                                      cv["steps"], None)  # fmt: skip
    return runs
