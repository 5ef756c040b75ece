"""The scaling study's entry in the registry (``traindyn.studies``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..train.spec import RunSpec

__all__ = ["aggregate", "callbacks", "checks", "runs"]


def runs(cfg: dict[str, Any]) -> dict[str, RunSpec]:
    """Every run of the scaling study, keyed by run id."""
    from .grid import scaling_runs

    return scaling_runs(cfg["scaling"])


def callbacks(spec: RunSpec) -> list:
    """The spectra callback for runs that measure sharpness (``extra["spectra"]``)."""
    if "spectra" not in spec.extra:
        return []
    from ..spectra import SpectraCallback

    return [SpectraCallback(**spec.extra["spectra"], seed=spec.seed)]


def aggregate(run_dirs: list[Path], out_dir: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    """Runs -> runs / curves / lr_transfer / spectra parquet and summary.json."""
    from .analysis import aggregate_scaling

    return aggregate_scaling(run_dirs, out_dir)


def checks(cfg: dict[str, Any]) -> list[str]:
    """Cross-key problems of the ``scaling`` section (called only when it passed the schema)."""
    problems = []
    sc = cfg["scaling"]
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
    problems += _gpt_checks(cfg)
    if ws["enabled"] and ws["base_width"] > min(ws["widths"]):
        problems.append(
            f"scaling.width_sweep.base_width={ws['base_width']} exceeds the smallest width "
            f"{min(ws['widths'])}: muP's base width must be one of the narrowest"
        )
    return problems


def _gpt_checks(cfg: dict[str, Any]) -> list[str]:
    gs = cfg["scaling"]["gpt_sweep"]
    if not gs["enabled"]:
        return []
    problems = []
    if gs["dataset"] not in cfg["data"]["datasets"]:
        problems.append(f"scaling.gpt_sweep.dataset is {gs['dataset']!r} but data.datasets "
                        f"{cfg['data']['datasets']} does not prepare it: add it to data.datasets")  # fmt: skip
    odd = [w for w in gs["widths"] if w % gs["n_heads"]]
    if odd:
        problems.append(f"scaling.gpt_sweep.widths {odd} are not divisible by "
                        f"scaling.gpt_sweep.n_heads={gs['n_heads']}: pick multiples of it")  # fmt: skip
    if gs["base_width"] > min(gs["widths"]):
        problems.append(f"scaling.gpt_sweep.base_width={gs['base_width']} exceeds the smallest width "
                        f"{min(gs['widths'])}: muP's base width must be one of the narrowest")  # fmt: skip
    sh = gs["sharpness"]
    if sh["enabled"]:
        for param in gs["parameterizations"]:
            if sh["lrs"][param] not in gs["lrs"][param]:
                problems.append(f"scaling.gpt_sweep.sharpness.lrs.{param}={sh['lrs'][param]} is not on the grid "
                                f"scaling.gpt_sweep.lrs.{param}={gs['lrs'][param]}: pick one of those")  # fmt: skip
        if "preconditioned" in sh["measures"] and gs["training"]["optimizer"] == "sgd":
            problems.append("scaling.gpt_sweep.sharpness.measures lists 'preconditioned', which needs "
                            "scaling.gpt_sweep.training.optimizer adam or adamw")  # fmt: skip
    ds = gs["depth_sweep"]
    if ds["enabled"]:
        if ds["width"] % gs["n_heads"]:
            problems.append(f"scaling.gpt_sweep.depth_sweep.width={ds['width']} is not divisible by "
                            f"scaling.gpt_sweep.n_heads={gs['n_heads']}: pick a multiple of it")  # fmt: skip
        if gs["base_width"] > ds["width"]:
            problems.append(f"scaling.gpt_sweep.depth_sweep.width={ds['width']} is below "
                            f"scaling.gpt_sweep.base_width={gs['base_width']}: pick at least the base width")  # fmt: skip
        if sh["enabled"] and ds["sharpness_lr"] not in ds["lrs"]:
            problems.append(f"scaling.gpt_sweep.depth_sweep.sharpness_lr={ds['sharpness_lr']} is not on the grid "
                            f"scaling.gpt_sweep.depth_sweep.lrs={ds['lrs']}: pick one of those")  # fmt: skip
    return problems
