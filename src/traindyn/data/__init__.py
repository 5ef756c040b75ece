"""Datasets: shipped real data and standard-format loaders, deterministic splits, manifests."""

from .load import load_images, load_tokens, read_manifest, standardise, standardised_file
from .prepare import DATASETS, prepare_dataset
from .sources import DataSourceError

__all__ = [
    "DATASETS",
    "DataSourceError",
    "load_images",
    "load_tokens",
    "prepare_dataset",
    "read_manifest",
    "standardise",
    "standardised_file",
]
