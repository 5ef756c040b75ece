"""The scaling study: LR transfer and sharpness across width and depth (muP vs NTK vs SP)."""

from .analysis import aggregate_scaling, ci95, fit_optimum
from .grid import STUDY, scaling_runs, spectra_settings

__all__ = ["STUDY", "aggregate_scaling", "ci95", "fit_optimum", "scaling_runs", "spectra_settings"]
