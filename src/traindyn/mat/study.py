"""The mat study's entry in the registry (``traindyn.studies``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..train.spec import RunSpec

__all__ = ["aggregate", "callbacks", "checks", "runs"]

_IMAGE_ARCH = "vit"
_IMAGE_SIDE = {"mnist": 28, "fashion-mnist": 28, "digits": 8, "cifar10": 32}


def runs(cfg: dict[str, Any]) -> dict[str, RunSpec]:
    """Every run of the mat study, keyed by run id."""
    from .grid import mat_runs

    return mat_runs(cfg["mat"])


def callbacks(spec: RunSpec) -> list:
    """The MAT callback (measurement, gating, FLOP and wall-time accounting)."""
    from .callback import MATCallback

    return [MATCallback(**spec.extra["mat"], seed=spec.seed)]


def aggregate(run_dirs: list[Path], out_dir: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    """Runs -> runs / curves / lambda / to_target parquet and summary.json."""
    from .analysis import aggregate_mat

    return aggregate_mat(run_dirs, out_dir, cfg["mat"])


def checks(cfg: dict[str, Any]) -> list[str]:
    """Cross-key problems of the ``mat`` section (called only when it passed the schema)."""
    mat, problems = cfg["mat"], []
    for name, mc in mat["models"].items():
        if not mc["enabled"]:
            continue
        if mc["dataset"] not in cfg["data"]["datasets"]:
            problems.append(f"mat.models.{name}.dataset is {mc['dataset']!r} but data.datasets "
                            f"{cfg['data']['datasets']} does not prepare it: add it to data.datasets")  # fmt: skip
        text = mc["dataset"] in ("shakespeare", "wikitext2")
        if text != (name == "gpt"):
            problems.append(f"mat.models.{name}.dataset={mc['dataset']!r}: the gpt trains on "
                            "shakespeare or wikitext2, the vit on an image dataset")  # fmt: skip
        if mc["width"] % mc["n_heads"]:
            problems.append(f"mat.models.{name}.width={mc['width']} is not divisible by n_heads={mc['n_heads']}")
        side = _IMAGE_SIDE.get(mc["dataset"])
        if name == _IMAGE_ARCH and side and side % mc["patch_size"]:
            problems.append(f"mat.models.vit.patch_size={mc['patch_size']} does not divide the "
                            f"{side}x{side} images of {mc['dataset']}")  # fmt: skip
        if mat["gating"]["min_active_per_layer"] > mc["n_heads"]:
            problems.append(f"mat.gating.min_active_per_layer={mat['gating']['min_active_per_layer']} "
                            f"exceeds mat.models.{name}.n_heads={mc['n_heads']}")  # fmt: skip
    if "full" not in mat["variants"]:
        problems.append("mat.variants must include 'full': the target loss and every saving are against it")
    if "random" in mat["variants"] and "mat" not in mat["variants"]:
        problems.append("mat.variants has 'random' without 'mat': random gating matches the MAT run's active counts")
    cv = mat["cv"]
    if cv["enabled"] and cv["base_width"] > min(cv["widths"]):
        problems.append(f"mat.cv.base_width={cv['base_width']} exceeds the smallest width {min(cv['widths'])}")
    if cv["enabled"] and any(w % mat["models"]["gpt"]["n_heads"] for w in cv["widths"]):
        problems.append(f"mat.cv.widths={cv['widths']} must be divisible by mat.models.gpt.n_heads")
    return problems
