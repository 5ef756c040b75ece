import gzip
import hashlib
import json
import pickle
import struct

import numpy as np
import pytest
import torch

from traindyn.config import load_config
from traindyn.data import (
    DataSourceError,
    load_images,
    load_tokens,
    prepare_dataset,
    read_manifest,
    sources,
)


def _cfg(*overrides):
    return load_config([], list(overrides)).data


def test_mnist_is_the_real_subset_with_deterministic_splits(tmp_path):
    m1 = prepare_dataset("mnist", _cfg(), tmp_path / "a")
    prepare_dataset("mnist", _cfg(), tmp_path / "b")
    assert m1["sizes"] == {"train": 4050, "val": 450, "test": 500}
    for split in ("train", "val", "test"):
        a = (tmp_path / "a" / f"{split}.pt").read_bytes()
        assert hashlib.sha256(a).digest() == hashlib.sha256((tmp_path / "b" / f"{split}.pt").read_bytes()).digest()
    m3 = prepare_dataset("mnist", _cfg("data.split_seed=1"), tmp_path / "c")
    ya, yc = torch.load(tmp_path / "a/val.pt")["y"], torch.load(tmp_path / "c/val.pt")["y"]
    assert m3["sizes"] == m1["sizes"] and not torch.equal(ya, yc)
    x, y = load_images(tmp_path / "a", "train")
    assert x.shape == (4050, 1, 28, 28) and y.dtype == torch.int64
    assert abs(float(x.mean())) < 1e-3 and abs(float(x.std()) - 1) < 1e-2  # standardised
    assert m1["files"] and all(len(v) == 64 for v in m1["files"].values())


def test_splits_are_disjoint(tmp_path):
    prepare_dataset("digits", _cfg(), tmp_path / "d")
    rows = {s: {tuple(r.tolist()) for r in torch.load(tmp_path / f"d/{s}.pt")["x"].flatten(1)} for s in ("train", "val", "test")}
    # digits has a few exact duplicate images; disjointness must hold for indices, so check sizes add up
    m = read_manifest(tmp_path / "d")
    assert sum(m["sizes"].values()) == 1797
    assert len(rows["val"] & rows["test"]) <= 2


def test_shakespeare_strips_markdown_and_splits_by_play(tmp_path):
    m = prepare_dataset("shakespeare", _cfg("data.max_train=10000"), tmp_path / "s")
    tokens, vocab = load_tokens(tmp_path / "s", "train")
    text = "".join(vocab[i] for i in tokens[:3000].tolist())
    assert "**" not in text and "###" not in text and "_Enter" not in text
    assert len(tokens) == 10000
    plays = m["documents"]
    assert len(plays["train"]) + len(plays["val"]) + len(plays["test"]) == 38
    assert not set(plays["train"]) & set(plays["test"])


def _write_idx(path, array, compress):
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    (gzip.open if compress else open)(path, "wb").write(data)


def _fake_fashion(d, n_train=50, n_test=20, compress=True):
    rng = np.random.default_rng(0)
    suffix = ".gz" if compress else ""
    _write_idx(d / f"train-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n_train, 28, 28)), compress)
    _write_idx(d / f"train-labels-idx1-ubyte{suffix}", rng.integers(0, 10, n_train), compress)
    _write_idx(d / f"t10k-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n_test, 28, 28)), compress)
    _write_idx(d / f"t10k-labels-idx1-ubyte{suffix}", rng.integers(0, 10, n_test), compress)


@pytest.mark.parametrize("compress", [True, False])
def test_idx_reader_on_tiny_files(tmp_path, compress):
    _fake_fashion(tmp_path, compress=compress)
    raw = sources.read_fashion_mnist(tmp_path, verify=False)
    assert raw.pools["train"][0].shape == (50, 1, 28, 28)
    assert raw.pools["test"][1].shape == (20,)


def test_fashion_checksum_mismatch_names_the_file(tmp_path):
    _fake_fashion(tmp_path)
    with pytest.raises(DataSourceError, match="train-images-idx3-ubyte.gz: sha256"):
        sources.read_fashion_mnist(tmp_path)


def test_truncated_idx_is_reported(tmp_path):
    _fake_fashion(tmp_path, compress=False)
    p = tmp_path / "train-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(DataSourceError, match="header says shape"):
        sources.read_fashion_mnist(tmp_path, verify=False)


def test_missing_fashion_dir_says_how_to_get_it(tmp_path):
    with pytest.raises(DataSourceError, match="apt-get install dataset-fashion-mnist"):
        sources.read_fashion_mnist(tmp_path / "absent")


def test_failed_prepare_leaves_nothing_behind(tmp_path):
    out = tmp_path / "data" / "fashion-mnist"
    with pytest.raises(DataSourceError):
        prepare_dataset("fashion-mnist", _cfg(f"data.fashion_mnist_dir={tmp_path / 'absent'}"), out)
    assert not out.exists() and list((tmp_path / "data").iterdir()) == []


def _fake_cifar(d, n=10):
    rng = np.random.default_rng(1)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": rng.integers(0, 10, n).tolist(),
                 b"batch_label": name.encode()}
        pickle.dump(batch, open(d / name, "wb"))
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    pickle.dump({b"label_names": names, b"num_cases_per_batch": n}, open(d / "batches.meta", "wb"))


def test_cifar10_loader_on_tiny_standard_batches(tmp_path):
    src = tmp_path / "cifar-10-batches-py"
    src.mkdir()
    _fake_cifar(src)
    m = prepare_dataset("cifar10", _cfg("data.datasets=[cifar10]", "scaling.enabled=false", f"data.cifar10_dir={src}"), tmp_path / "c")
    assert m["sizes"]["test"] == 10 and m["sizes"]["train"] + m["sizes"]["val"] == 50
    assert m["classes"][0] == "airplane" and m["shape"] == [3, 32, 32]
    x, _ = load_images(tmp_path / "c", "train")
    assert x.shape[1:] == (3, 32, 32)
    raw = pickle.load(open(src / "data_batch_1", "rb"))
    # The first image of batch 1 is stored channel-major (R plane, G plane, B plane).
    r = sources.read_cifar10(src)
    assert np.array_equal(r.pools["train"][0][0, 0].ravel(), raw[b"data"][0, :1024])


def test_cifar10_bad_batch_is_named(tmp_path):
    _fake_cifar(tmp_path)
    pickle.dump({b"data": np.zeros((3, 100), np.uint8), b"labels": [0, 1, 2]}, open(tmp_path / "data_batch_3", "wb"))
    with pytest.raises(DataSourceError, match="data_batch_3"):
        sources.read_cifar10(tmp_path)


def test_wikitext2_loader_on_tiny_token_files(tmp_path):
    src = tmp_path / "wikitext-2"
    src.mkdir()
    (src / "wiki.train.tokens").write_text(" = Valkyria = \n the game is <unk> and the game began \n")
    (src / "wiki.valid.tokens").write_text(" the game ended \n")
    (src / "wiki.test.tokens").write_text(" a new game \n")
    m = prepare_dataset("wikitext2", _cfg("data.datasets=[wikitext2]", "scaling.enabled=false", f"data.wikitext2_dir={src}"), tmp_path / "w")
    tokens, vocab = load_tokens(tmp_path / "w", "test")
    assert [vocab[i] for i in tokens.tolist()] == ["<unk>", "<unk>", "game"]  # OOV words map to <unk>
    assert m["level"] == "word" and m["sizes"]["train"] == 11
    assert json.loads((tmp_path / "w/vocab.json").read_text()) == vocab


def test_wikitext2_missing_split_is_named(tmp_path):
    (tmp_path / "wiki.train.tokens").write_text("a b\n")
    with pytest.raises(DataSourceError, match="wiki.valid.tokens"):
        sources.read_wikitext2(tmp_path)
