"""The data stage: raw source -> deterministic splits, tensors, manifest and overview tables."""

from __future__ import annotations

import collections
import datetime
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..config import DataConfig
from . import sources
from .load import standardise, standardised_file

__all__ = ["DATASETS", "prepare_dataset"]

IMAGE_READERS = {
    "mnist": lambda cfg: sources.read_mnist_5k(),
    "fashion-mnist": lambda cfg: sources.read_fashion_mnist(cfg.fashion_mnist_dir),
    "digits": lambda cfg: sources.read_digits(),
    "cifar10": lambda cfg: sources.read_cifar10(cfg.cifar10_dir),
}
TEXT_READERS = {
    "shakespeare": lambda cfg: sources.read_shakespeare(),
    "wikitext2": lambda cfg: sources.read_wikitext2(cfg.wikitext2_dir),
}
DATASETS = sorted(IMAGE_READERS) + sorted(TEXT_READERS)  # = the schema's data.datasets enum
SAMPLES_PER_CLASS = 4
TOP_TOKENS = 40


def _split_sizes(n: int, fraction: float) -> int:
    return max(1, round(n * fraction))


def _permutation(n: int, seed: int) -> np.ndarray:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()


def _image_splits(raw: sources.RawImages, cfg: DataConfig) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    x, y = raw.pools["train"]
    order = _permutation(len(x), cfg.split_seed)
    splits = {}
    if "test" in raw.pools:
        splits["test"] = raw.pools["test"]
    else:
        n_test = _split_sizes(len(x), cfg.test_fraction)
        splits["test"] = (x[order[:n_test]], y[order[:n_test]])
        order = order[n_test:]
    n_val = _split_sizes(len(order), cfg.val_fraction)
    splits["val"] = (x[order[:n_val]], y[order[:n_val]])
    train = order[n_val:]
    if cfg.max_train is not None:
        train = train[: cfg.max_train]
    splits["train"] = (x[train], y[train])
    return {k: splits[k] for k in ("train", "val", "test")}


def _write_images(raw: sources.RawImages, cfg: DataConfig, out: Path) -> dict[str, Any]:
    splits = _image_splits(raw, cfg)
    stats, samples = [], []
    for split, (x, y) in splits.items():
        torch.save({"x": torch.from_numpy(np.ascontiguousarray(x)), "y": torch.from_numpy(y)},
                   out / f"{split}.pt")  # fmt: skip
        counts = np.bincount(y, minlength=len(raw.classes))
        stats += [{"split": split, "label": int(c), "name": raw.classes[c], "count": int(counts[c])}
                  for c in range(len(raw.classes))]  # fmt: skip
    x, y = splits["train"]
    for c in range(len(raw.classes)):
        for i in np.flatnonzero(y == c)[:SAMPLES_PER_CLASS]:
            samples.append({"label": int(c), "name": raw.classes[c], "index": int(i),
                            "channels": x.shape[1], "height": x.shape[2], "width": x.shape[3],
                            "pixels": (x[i].astype(np.float32) / raw.pixel_max).ravel().tolist()})  # fmt: skip
    pd.DataFrame(stats).to_parquet(out / "stats.parquet", index=False)
    pd.DataFrame(samples).to_parquet(out / "samples.parquet", index=False)
    xtrain = splits["train"][0].astype(np.float64) / raw.pixel_max
    meta = {
        "kind": "images",
        "shape": list(x.shape[1:]),
        "classes": raw.classes,
        "pixel_max": raw.pixel_max,
        # Per-channel mean and std of the training split, for standardisation at load time.
        "mean": xtrain.mean(axis=(0, 2, 3)).tolist(),
        "std": xtrain.std(axis=(0, 2, 3)).tolist(),
        "sizes": {k: int(len(v[1])) for k, v in splits.items()},
    }
    # Each split standardised once, as raw float32 that jobs memory-map (load_images).
    for split, (xs, _) in splits.items():
        standardise(torch.from_numpy(np.ascontiguousarray(xs)), meta).numpy().tofile(out / standardised_file(split))
    meta["standardised"] = {split: standardised_file(split) for split in splits}
    return meta


def _text_splits(raw: sources.RawText, cfg: DataConfig) -> dict[str, str]:
    if "all" not in raw.pools:
        return {"train": raw.pools["train"]["train"], "val": raw.pools["valid"]["valid"],
                "test": raw.pools["test"]["test"]}  # fmt: skip
    names = sorted(raw.pools["all"])  # whole documents (plays) go to one split each
    order = [names[i] for i in _permutation(len(names), cfg.split_seed)]
    n_test = _split_sizes(len(names), cfg.test_fraction)
    n_val = _split_sizes(len(names), cfg.val_fraction)
    parts = {"test": order[:n_test], "val": order[n_test : n_test + n_val],
             "train": order[n_test + n_val :]}  # fmt: skip
    texts = {k: "\n".join(raw.pools["all"][d] for d in sorted(parts[k])) for k in ("train", "val", "test")}
    return texts | {"_documents": {k: sorted(v) for k, v in parts.items()}}


def _write_text(raw: sources.RawText, cfg: DataConfig, out: Path) -> dict[str, Any]:
    splits = _text_splits(raw, cfg)
    documents = splits.pop("_documents", None)
    if raw.level == "char":
        # The vocabulary spans every split: a char-level model must be able to emit any char.
        vocab = sorted(set("".join(splits.values())))
        tokenize = list
    else:
        counts = collections.Counter(splits["train"].split())
        vocab = sorted(counts) if "<unk>" in counts else ["<unk>", *sorted(counts)]
        tokenize = str.split
    index = {t: i for i, t in enumerate(vocab)}
    unk = index.get("<unk>")
    dtype = torch.uint8 if len(vocab) <= 256 else torch.int32
    sizes, stats = {}, []
    for split, text in splits.items():
        toks = tokenize(text)
        if split == "train" and cfg.max_train is not None:
            toks = toks[: cfg.max_train]
        ids = torch.tensor([index.get(t, unk) for t in toks], dtype=dtype)
        torch.save({"tokens": ids}, out / f"{split}.pt")
        sizes[split] = int(len(ids))
        for token, count in collections.Counter(toks).most_common(TOP_TOKENS):
            stats.append({"split": split, "token": token, "count": int(count), "share": count / len(toks)})
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    pd.DataFrame(stats).to_parquet(out / "stats.parquet", index=False)
    excerpt = splits["train"][: 2000 if raw.level == "char" else 4000]
    pd.DataFrame([{"split": "train", "text": excerpt}]).to_parquet(out / "samples.parquet", index=False)
    meta = {"kind": "text", "level": raw.level, "vocab_size": len(vocab), "sizes": sizes}
    if documents:
        meta["documents"] = documents
    return meta


def prepare_dataset(name: str, cfg: DataConfig, out_dir: str | Path) -> dict[str, Any]:
    """Prepare dataset ``name`` into ``out_dir`` and return its manifest.

    Writes ``{train,val,test}.pt``, ``manifest.json``, ``stats.parquet`` and
    ``samples.parquet`` (plus ``vocab.json`` for text, and ``{split}.std.f32``, the
    standardised float32 pixels, for images) into a temporary folder that is
    renamed to ``out_dir`` only when complete, so a failed run leaves nothing behind.

    Args:
        name: One of ``DATASETS``.
        cfg: The ``data`` section of the configuration.
        out_dir: Destination folder, e.g. ``results/data/mnist``.

    Raises:
        ValueError: If ``name`` is unknown.
        sources.DataSourceError: If a raw file is missing or corrupt.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {DATASETS}")
    out_dir = Path(out_dir)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        if name in IMAGE_READERS:
            raw = IMAGE_READERS[name](cfg)
            meta = _write_images(raw, cfg, tmp)
        else:
            raw = TEXT_READERS[name](cfg)
            meta = _write_text(raw, cfg, tmp)
        manifest = {
            "dataset": name,
            "source": raw.version,
            "files": raw.files,
            "split_seed": cfg.split_seed,
            "val_fraction": cfg.val_fraction,
            "test_fraction": cfg.test_fraction,
            "max_train": cfg.max_train,
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            **meta,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest
