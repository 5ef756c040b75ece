"""Spectral engine: Lanczos on Hessian, Gauss-Newton, NTK and per-module NTK operators."""

from traindyn.spectra.callback import MEASURES, SpectraCallback
from traindyn.spectra.flat import (
    LinearOperator,
    flatten,
    parameter_vector,
    trainable_parameters,
    unflatten,
)
from traindyn.spectra.jacobian import Jacobian, projected_jacobian
from traindyn.spectra.lanczos import LanczosResult, LanczosWorkspace, lanczos
from traindyn.spectra.module_ntk import ModuleNTK, module_ntk, output_projections
from traindyn.spectra.ntk import ntk_kernel, ntk_operator
from traindyn.spectra.operators import (
    adam_preconditioner,
    gauss_newton_operator,
    hessian_operator,
    hutchinson_trace,
    preconditioned_hessian_operator,
)
from traindyn.spectra.posthoc import spectra_over_snapshots

__all__ = [
    "MEASURES",
    "Jacobian",
    "LanczosResult",
    "LanczosWorkspace",
    "LinearOperator",
    "ModuleNTK",
    "SpectraCallback",
    "adam_preconditioner",
    "flatten",
    "gauss_newton_operator",
    "hessian_operator",
    "hutchinson_trace",
    "lanczos",
    "module_ntk",
    "ntk_kernel",
    "ntk_operator",
    "output_projections",
    "parameter_vector",
    "preconditioned_hessian_operator",
    "projected_jacobian",
    "spectra_over_snapshots",
    "trainable_parameters",
    "unflatten",
]
