from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from traindyn import config as C

ROOT = Path(__file__).resolve().parents[2]
CONFIG_FILES = sorted([ROOT / "config.yaml", *ROOT.glob("config/*.yaml"), *ROOT.glob("tests/configs/*.yaml")])


def test_defaults_fill_an_empty_config():
    cfg = C.load_config([])
    assert cfg.data.split_seed == 0
    assert cfg.tracking.uri.startswith("sqlite:///")


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.name)
def test_every_config_file_validates_as_overlay_on_the_default(path):
    files = [ROOT / "config.yaml"]
    if path.name.startswith("paper-"):
        files.append(ROOT / "config/paper.yaml")  # the arch overlays sit on the paper scale
    if path.name != "config.yaml":
        files.append(path)
    C.load_config(files)


def test_every_schema_section_matches_its_dataclass():
    # Defaults live only in the schema; the typed views must list exactly its keys.
    sch = C.schema()["properties"]
    for section, cls in [("tracking", C.TrackingConfig), ("data", C.DataConfig), ("figures", C.FiguresConfig)]:
        assert set(sch[section]["properties"]) == {f.name for f in fields(cls)}, section


def _walk(node, path=""):
    yield path, node
    for key, prop in node.get("properties", {}).items():
        yield from _walk(prop, f"{path}.{key}".strip("."))


def test_every_schema_key_has_type_default_and_description():
    for path, node in _walk(C.schema()):
        if not path:
            continue
        assert "description" in node, path
        assert "default" in node, path
        if node.get("type") == "object":
            assert node.get("additionalProperties") is False, path


def test_unknown_key_wrong_type_and_range_are_reported_together():
    with pytest.raises(C.ConfigError) as err:
        C.load_config([], ["data.split_sed=1", "figures.dpi=high", "data.val_fraction=0.9"])
    text = str(err.value)
    assert "split_sed" in text and "allowed keys" in text
    assert "figures.dpi" in text
    assert "data.val_fraction" in text
    assert len(err.value.problems) == 3


def test_unknown_dataset_names_the_allowed_ones():
    with pytest.raises(C.ConfigError, match="cifar100.*not one of"):
        C.load_config([], ["data.datasets=[mnist, cifar100]"])


def test_cifar10_without_directory_is_an_error():
    with pytest.raises(C.ConfigError, match="cifar10_dir"):
        C.load_config([], ["data.datasets=[cifar10]", "scaling.enabled=false"])


def test_overlay_merges_deeply(tmp_path):
    over = tmp_path / "over.yaml"
    over.write_text(yaml.safe_dump({"data": {"split_seed": 3}}))
    cfg = C.load_config([ROOT / "config.yaml", over])
    assert cfg.data.split_seed == 3
    assert cfg.data.fashion_mnist_dir == "/usr/share/datasets/fashion-mnist"


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(C.ConfigError, match="nope.yaml"):
        C.load_config([tmp_path / "nope.yaml"])


def test_bad_override_syntax():
    with pytest.raises(C.ConfigError, match="key.subkey=value"):
        C.load_config([], ["data.split_seed"])


def test_hash_is_stable_and_sensitive():
    a = C.load_config([]).hash
    assert a == C.load_config([]).hash
    assert a != C.load_config([], ["data.split_seed=1"]).hash


def test_snakemake_style_string_leaves_are_read_by_their_schema_type():
    # snakemake --config scaling='{seeds: [0, 1]}' delivers nested leaves as strings
    raw = {"scaling": {"seeds": ["0", "1"], "training": {"steps": "30", "loss": "mse"}},
           "tracking": {"enabled": "false"}, "data": {"max_train": "null"}}
    cfg = C.resolve(raw)
    assert cfg["scaling"]["seeds"] == [0, 1]
    assert cfg["scaling"]["training"]["steps"] == 30 and cfg["scaling"]["training"]["loss"] == "mse"
    assert cfg["tracking"]["enabled"] is False and cfg["data"]["max_train"] is None
    sch = C.schema()["properties"]["scaling"]["properties"]["depth_sweep"]["properties"]["alphas"]
    assert C._coerce_strings(["0.5", "1"], sch) == [0.5, 1]
    with pytest.raises(C.ConfigError, match="scaling.training.steps"):
        C.resolve({"scaling": {"training": {"steps": "many"}}})


def test_validating_the_config_and_listing_every_run_does_not_import_torch():
    # The DAG (Snakefile -> resolve, every study's runs) is built in the snakemake process,
    # and on every invocation: importing torch there cost ~4 s of a 15 s dry run.
    import subprocess
    import sys

    code = (
        "import sys; from traindyn.config import load_config; from traindyn import studies; "
        "cfg = load_config([]); "
        "n = sum(len(studies.study_runs(cfg.raw, s)) for s in studies.STUDIES); "
        "assert n > 100, n; "
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    # The package still hands out its names, importing the module on first use.
    from traindyn import train

    assert train.RunSpec.__module__ == "traindyn.train.spec" and callable(train.train)
    assert all(getattr(train, name) is not None for name in train.__all__)  # each maps to its module
