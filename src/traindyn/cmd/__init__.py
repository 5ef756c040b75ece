"""Correlation Mode Decomposition of training trajectories: post-hoc, online and embedded, and baselines.

The numerical pieces (``fit``, ``online``, ``baselines``) need only numpy and scipy; the
training callbacks live in ``traindyn.cmd.callbacks`` (torch) and the study's entry in
``traindyn.cmd.study``.
"""

from .baselines import (
    DMDFit,
    PCAFit,
    cmd_error,
    dmd_fit,
    ema_weights,
    gram,
    heldout_errors,
    pca_fit,
    swa_weights,
    total_variance,
)
from .fit import (
    CMDFit,
    abs_corr,
    assign_and_fit,
    cluster_modes,
    fit_cmd,
    references,
    sample_indices,
)
from .online import OnlineCMD

__all__ = [
    "CMDFit",
    "DMDFit",
    "OnlineCMD",
    "PCAFit",
    "abs_corr",
    "assign_and_fit",
    "cluster_modes",
    "cmd_error",
    "dmd_fit",
    "ema_weights",
    "fit_cmd",
    "gram",
    "heldout_errors",
    "pca_fit",
    "references",
    "sample_indices",
    "swa_weights",
    "total_variance",
]
