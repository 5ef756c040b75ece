"""Read what the data stage wrote: standardised image tensors or token streams."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

__all__ = ["load_images", "load_tokens", "read_manifest"]


def read_manifest(data_dir: str | Path) -> dict[str, Any]:
    """Return ``manifest.json`` of a prepared dataset.

    Raises:
        FileNotFoundError: If ``data_dir`` was not prepared by the data stage.
    """
    path = Path(data_dir) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: run `traindyn data --dataset {Path(data_dir).name}` first"
        )
    return json.loads(path.read_text())


def load_images(data_dir: str | Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Load one split of an image dataset, standardised with the training split's statistics.

    Returns:
        ``x`` float32 ``(N, C, H, W)`` and ``y`` int64 ``(N,)``.
    """
    manifest = read_manifest(data_dir)
    if manifest["kind"] != "images":
        raise ValueError(f"{data_dir} holds {manifest['kind']}, not images")
    blob = torch.load(Path(data_dir) / f"{split}.pt", weights_only=True)
    x = blob["x"].float() / manifest["pixel_max"]  # (N, C, H, W)
    mean = torch.tensor(manifest["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(manifest["std"]).clamp_min(1e-8).view(1, -1, 1, 1)
    return (x - mean) / std, blob["y"]


def load_tokens(data_dir: str | Path, split: str) -> tuple[torch.Tensor, list[str]]:
    """Load one split of a text dataset as an int64 token stream and the vocabulary."""
    manifest = read_manifest(data_dir)
    if manifest["kind"] != "text":
        raise ValueError(f"{data_dir} holds {manifest['kind']}, not text")
    tokens = torch.load(Path(data_dir) / f"{split}.pt", weights_only=True)["tokens"].long()
    vocab = json.loads((Path(data_dir) / "vocab.json").read_text())
    return tokens, vocab
