"""The cmd study's entry in the registry (``traindyn.studies``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..train.spec import RunSpec

__all__ = ["aggregate", "callbacks", "checks", "runs"]

TEXT = ("shakespeare", "wikitext2")


def runs(cfg: dict[str, Any]) -> dict[str, RunSpec]:
    """Every run of the cmd study, keyed by run id."""
    from .grid import cmd_runs

    return cmd_runs(cfg["cmd"])


def callbacks(spec: RunSpec) -> list:
    """Online CMD for SGD runs, embedded CMD or P-SGD for their twins; none for sweep runs."""
    from .callbacks import EmbeddedCMDCallback, OnlineCMDCallback, PSGDCallback

    kind, c = spec.extra["kind"], spec.extra["cmd"]
    every = spec.snapshot_every
    if kind == "sgd":
        return [OnlineCMDCallback(every=every, warmup=c["warmup"], k=c["k"], m=c["m"], seed=spec.seed)]
    if kind == "psgd":
        return [PSGDCallback(every=every, warmup=c["warmup"], rank=c["rank"])]
    if kind == "embedded":
        return [EmbeddedCMDCallback(interval=c["interval"], percent=c["percent"], max_fraction=c["max_fraction"],
                                    every=every, warmup=c["warmup"], k=c["k"], m=c["m"], seed=spec.seed)]  # fmt: skip
    return []


def aggregate(run_dirs: list[Path], out_dir: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    """Per-run CMD fits (``cmdfit.json`` and tables) -> study tables and summary.json.

    The ``cmdfit`` jobs' deferred tracking records (``RUN/cmdfit/``) are imported with the
    training jobs' by the study's ``track`` job (``traindyn.track.study_records``).
    """
    from .analysis import aggregate_cmd

    return aggregate_cmd(run_dirs, out_dir, cfg["cmd"])


def checks(cfg: dict[str, Any]) -> list[str]:
    """Cross-key problems of the ``cmd`` section (called only when it passed the schema)."""
    problems = []
    c = cfg["cmd"]
    models = dict(c["models"].items())
    if c["width_sweep"]["enabled"]:
        models["width_sweep"] = {**c["width_sweep"], "arch": "mlp", "enabled": True}
    for key, m in models.items():
        if not m["enabled"]:
            continue
        where = f"cmd.{key}" if key == "width_sweep" else f"cmd.models.{key}"
        if m["dataset"] not in cfg["data"]["datasets"]:
            problems.append(f"{where}.dataset is {m['dataset']!r} but data.datasets {cfg['data']['datasets']} "
                            "does not prepare it: add it to data.datasets")  # fmt: skip
        if (m["arch"] == "gpt") != (m["dataset"] in TEXT):
            problems.append(f"{where}.arch={m['arch']!r} does not fit dataset={m['dataset']!r}: "
                            "gpt trains on shakespeare or wikitext2, the others on images")  # fmt: skip
        if m["steps"] % m["stride"]:
            problems.append(f"{where}.steps={m['steps']} is not a multiple of its stride={m['stride']}: "
                            "the last snapshot must be the end point")  # fmt: skip
        snapshots = m["steps"] // m["stride"] + 1
        if snapshots < c["warmup"] + 2:
            problems.append(f"{where}: {snapshots} snapshots (steps / stride + 1) leave nothing after "
                            f"cmd.warmup={c['warmup']}: lower the stride or the warm-up")  # fmt: skip
        if max(c["modes_sweep"]) >= snapshots:
            problems.append(f"cmd.modes_sweep reaches {max(c['modes_sweep'])} but {where} keeps {snapshots} "
                            "snapshots: DMD's rank must stay below the number of snapshots")  # fmt: skip
    sw = c["width_sweep"]
    if sw["enabled"] and sw["base_width"] > min(sw["widths"]):
        problems.append(f"cmd.width_sweep.base_width={sw['base_width']} exceeds the smallest width "
                        f"{min(sw['widths'])}: muP's base width must be one of the narrowest")  # fmt: skip
    if c["modes"] not in c["modes_sweep"]:
        problems.append(f"cmd.modes={c['modes']} is not in cmd.modes_sweep={c['modes_sweep']}: add it")
    return problems
