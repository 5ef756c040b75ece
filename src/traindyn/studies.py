"""The registry of studies: which runs each has (by readable id) and cross-key config checks."""

from __future__ import annotations

import difflib
from typing import Any

from .train.spec import RunSpec

__all__ = ["STUDIES", "cross_checks", "run_spec", "study_runs"]

STUDIES = ("scaling",)


def study_runs(cfg: dict[str, Any], study: str) -> dict[str, RunSpec]:
    """Every run of ``study`` in the resolved config, keyed by run id."""
    if study == "scaling":
        from .scaling.grid import scaling_runs

        return scaling_runs(cfg["scaling"])
    raise ValueError(f"unknown study {study!r}; choose one of {list(STUDIES)}")


def run_spec(cfg: dict[str, Any], study: str, run: str) -> RunSpec:
    """The spec of one run, found by its readable id.

    Raises:
        ValueError: If the config has no such run (naming the closest ids).
    """
    runs = study_runs(cfg, study)
    if run not in runs:
        close = difflib.get_close_matches(run, list(runs), n=3)
        hint = f"; did you mean {close}?" if close else f"; the study has {len(runs)} runs"
        raise ValueError(f"run {run!r} is not in study {study!r} of this config{hint}")
    return runs[run]


def cross_checks(cfg: dict[str, Any]) -> list[str]:
    """Return problems that span several keys of a resolved config (empty when fine)."""
    problems = []
    sc = cfg.get("scaling", {})
    if sc.get("enabled"):
        if sc["dataset"] not in cfg["data"]["datasets"]:
            problems.append(
                f"scaling.dataset is {sc['dataset']!r} but data.datasets {cfg['data']['datasets']} "
                "does not prepare it: add it to data.datasets"
            )
        ws, sh, ds = sc["width_sweep"], sc["sharpness"], sc["depth_sweep"]
        text = sc["dataset"] in ("shakespeare", "wikitext2")
        if ws["enabled"] and (ws["arch"] == "gpt") != text:
            problems.append(
                f"scaling.width_sweep.arch={ws['arch']!r} does not fit scaling.dataset="
                f"{sc['dataset']!r}: gpt trains on shakespeare or wikitext2, the others on images"
            )
        if ds["enabled"] and text:
            problems.append("scaling.depth_sweep (a residual MLP) needs an image dataset: "
                            "disable it (scaling.depth_sweep.enabled=false) for a text dataset")
        if sh["enabled"] and ws["enabled"]:
            for param in ws["parameterizations"]:
                if sh["lrs"][param] not in ws["lrs"][param]:
                    problems.append(
                        f"scaling.sharpness.lrs.{param}={sh['lrs'][param]} is not on the grid "
                        f"scaling.width_sweep.lrs.{param}={ws['lrs'][param]}: pick one of those"
                    )
        if sh["enabled"] and ds["enabled"] and sh["depth_alphas"] and sh["depth_lr"] not in ds["lrs"]:
            problems.append(
                f"scaling.sharpness.depth_lr={sh['depth_lr']} is not on the grid "
                f"scaling.depth_sweep.lrs={ds['lrs']}: pick one of those"
            )
        if ws["enabled"] and ws["base_width"] > min(ws["widths"]):
            problems.append(
                f"scaling.width_sweep.base_width={ws['base_width']} exceeds the smallest width "
                f"{min(ws['widths'])}: muP's base width must be one of the narrowest"
            )
    return problems
