"""The scaling study's grid: every (sweep, parameterization, width/depth, LR, seed) as a RunSpec."""

from __future__ import annotations

from typing import Any

from ..train.spec import RunSpec, run_id

__all__ = ["STUDY", "scaling_runs", "spectra_settings"]

STUDY = "scaling"


def _base(cfg: dict[str, Any], training: dict[str, Any] | None = None, dataset: str | None = None) -> dict[str, Any]:
    t = training or cfg["training"]
    return {
        "study": STUDY, "dataset": dataset or cfg["dataset"], "optimizer": t["optimizer"],
        "momentum": t["momentum"], "weight_decay": t["weight_decay"], "loss": t["loss"],
        "steps": t["steps"], "batch_size": t["batch_size"], "schedule": t["schedule"],
        "warmup_steps": t["warmup_steps"], "eval_every": t["eval_every"],
        "eval_examples": t["eval_examples"], "checkpoint_every": t["checkpoint_every"],
        "loss_cap": t["loss_cap"], "grad_clip": t["grad_clip"],
    }  # fmt: skip


def spectra_settings(cfg: dict[str, Any], sharpness: dict[str, Any] | None = None) -> dict[str, Any]:
    """``SpectraCallback`` arguments from the ``scaling.sharpness`` section (``cfg`` = ``scaling``).

    Args:
        cfg: The ``scaling`` section.
        sharpness: A sweep's own measurement section (``gpt_sweep.sharpness``) whose keys
            override ``scaling.sharpness``.
    """
    sh = {**cfg["sharpness"], **(sharpness or {})}
    return {"every": sh["every"], "measures": list(sh["measures"]), "n_ntk": sh["n_ntk"],
            "tol": sh["tol"], "max_iter": sh["max_iter"]}  # fmt: skip


def scaling_runs(cfg: dict[str, Any]) -> dict[str, RunSpec]:
    """Return every run of the scaling study, keyed by its readable id, in grid order.

    Args:
        cfg: The resolved ``scaling`` section of the config.
    """
    runs: dict[str, RunSpec] = {}
    if not cfg["enabled"]:
        return runs
    base, loss = _base(cfg), cfg["training"]["loss"]
    sh = cfg["sharpness"]
    measured = {"spectra": spectra_settings(cfg), "fixed_batch_size": sh["batch_size"]}
    ws = cfg["width_sweep"]
    if ws["enabled"]:
        for param in ws["parameterizations"]:
            for width in ws["widths"]:
                model = {"arch": ws["arch"], "width": width, "depth": ws["depth"]}
                for lr in ws["lrs"][param]:
                    for seed in cfg["seeds"]:
                        spectra = sh["enabled"] and lr == sh["lrs"][param] and seed in sh["seeds"]
                        rid = run_id(param, width, ws["depth"], lr, seed, loss=loss)
                        runs[rid] = RunSpec(
                            run=rid, model=model, param=param, base_width=ws["base_width"],
                            depth_alpha=None, lr=lr, seed=seed,
                            fixed_batch_size=sh["batch_size"] if spectra else 256,
                            extra={"sweep": "width", **({"spectra": measured["spectra"]} if spectra else {})},
                            **base,
                        )  # fmt: skip
                        if spectra and sh["mse"] and loss != "mse":
                            mse_lr = float(f"{lr * sh['mse_lr_factor']:.4g}")
                            rid = run_id(param, width, ws["depth"], mse_lr, seed, loss="mse")
                            runs[rid] = RunSpec(
                                run=rid, model=model, param=param, base_width=ws["base_width"],
                                depth_alpha=None, lr=mse_lr, seed=seed, fixed_batch_size=sh["batch_size"],
                                extra={"sweep": "sharpness-mse", "spectra": measured["spectra"]},
                                **{**base, "loss": "mse"},
                            )  # fmt: skip
    runs.update(_gpt_runs(cfg))
    ds = cfg["depth_sweep"]
    if ds["enabled"]:
        for alpha in ds["alphas"]:
            for depth in ds["depths"]:
                for lr in ds["lrs"]:
                    for seed in ds["seeds"] or cfg["seeds"]:
                        spectra = (sh["enabled"] and lr == sh["depth_lr"] and alpha in sh["depth_alphas"]
                                   and seed in sh["seeds"])  # fmt: skip
                        rid = run_id("mup", ds["width"], depth, lr, seed, alpha=alpha, loss=loss)
                        runs[rid] = RunSpec(
                            run=rid, model={"arch": "resmlp", "width": ds["width"], "depth": depth},
                            param="mup", base_width=ds["base_width"], depth_alpha=float(alpha),
                            lr=lr, seed=seed, fixed_batch_size=sh["batch_size"] if spectra else 256,
                            extra={"sweep": "depth", **({"spectra": measured["spectra"]} if spectra else {})},
                            **base,
                        )  # fmt: skip
    return runs


def _gpt_runs(cfg: dict[str, Any]) -> dict[str, RunSpec]:
    """The GPT char-LM sweeps trained with Adam.

    Width x LR x parameterization x seed, and depth x LR x alpha x seed under muP at one
    width (``gpt_sweep.depth_sweep``).
    """
    gs = cfg["gpt_sweep"]
    runs: dict[str, RunSpec] = {}
    if not gs["enabled"]:
        return runs
    base = {**_base(cfg, gs["training"], gs["dataset"]), "context": gs["context"]}
    sh = gs["sharpness"]
    measured = spectra_settings(cfg, {"every": sh["every"], "measures": sh["measures"]})
    for param in gs["parameterizations"]:
        for width in gs["widths"]:
            model = {"arch": "gpt", "width": width, "depth": gs["depth"], "n_heads": gs["n_heads"]}
            for lr in gs["lrs"][param]:
                for seed in gs["seeds"]:
                    spectra = sh["enabled"] and lr == sh["lrs"][param]
                    rid = run_id(param, width, gs["depth"], lr, seed, arch="gpt")
                    runs[rid] = RunSpec(
                        run=rid, model=model, param=param, base_width=gs["base_width"], depth_alpha=None,
                        lr=lr, seed=seed, fixed_batch_size=sh["batch_size"],
                        extra={"sweep": "gpt", **({"spectra": measured} if spectra else {})}, **base,
                    )  # fmt: skip
    ds = gs["depth_sweep"]
    if not ds["enabled"]:
        return runs
    for alpha in ds["alphas"]:
        # alpha 0 is the standard pre-LN GPT: no branch scale and no depth LR factor, which is
        # depth_alpha None (depth-muP's own alpha = 0 would divide the blocks' Adam LR by L).
        depth_alpha = float(alpha) if alpha else None
        for depth in ds["depths"]:
            model = {"arch": "gpt", "width": ds["width"], "depth": depth, "n_heads": gs["n_heads"]}
            for lr in ds["lrs"]:
                for seed in gs["seeds"]:
                    spectra = sh["enabled"] and lr == ds["sharpness_lr"]
                    rid = run_id("mup", ds["width"], depth, lr, seed, alpha=alpha, arch="gpt")
                    runs[rid] = RunSpec(
                        run=rid, model=model, param="mup", base_width=gs["base_width"], depth_alpha=depth_alpha,
                        lr=lr, seed=seed, fixed_batch_size=sh["batch_size"],
                        extra={"sweep": "gpt-depth", "alpha": float(alpha),
                               **({"spectra": measured} if spectra else {})}, **base,
                    )  # fmt: skip
    return runs
