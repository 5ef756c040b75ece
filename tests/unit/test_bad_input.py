"""Malformed configuration, generated from the schema itself: every key, every level.

For every key of ``traindyn.config.schema()`` (so keys added later are covered by
construction) the walk builds overlays that break exactly that key: a value of the wrong
type, each range the schema states (minimum, maximum, exclusive bounds, minItems,
maxItems, uniqueItems, minLength, enum), a malformed array item, and an unknown key at
every object level. Each must be rejected by ``resolve`` with a ``ConfigError`` whose
message names the key, never with any other exception; a fifth of them as ``key=value``
overrides must make the CLI exit 2 with that message and no traceback, and a few go through
the real ``traindyn`` and ``snakemake -n`` commands. The files later stages read (a run's
final.json and parquet tables, its checkpoint) are broken the same way below.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys

import jsonschema
import pytest
import yaml

from traindyn import config as C
from traindyn.cli import main

UNKNOWN = "zz_unknown_key"
# Tried in order; the first one the key's schema rejects is its wrong-type value.
WRONG_TYPES = ["not-a-value", [1, 2], {"x": 1}, 1.5, -7, True]


def _valid(node: dict, value) -> bool:
    return jsonschema.Draft202012Validator(node).is_valid(C._coerce_strings(value, node))


def _types(node: dict) -> set[str]:
    t = node.get("type", [])
    return set(t) if isinstance(t, list) else {t}


def _valid_items(node: dict, n: int) -> list:
    # n valid items of an array: from its default where long enough, else distinct values.
    default = list(node.get("default") or [])
    if len(default) >= n:
        return default[:n]
    items = node.get("items", {})
    if "enum" in items:
        return list(items["enum"])[:n]
    start = items.get("minimum", items.get("exclusiveMinimum", 0)) + 1
    return [start + i for i in range(n)]


def _range_cases(node: dict) -> list[tuple[str, object]]:
    cases = []
    integer = "integer" in _types(node) and "number" not in _types(node)
    step = 1 if integer else 0.5
    if "minimum" in node:
        cases.append(("below minimum", node["minimum"] - step))
    if "exclusiveMinimum" in node:
        cases.append(("at exclusiveMinimum", node["exclusiveMinimum"]))
    if "maximum" in node:
        cases.append(("above maximum", node["maximum"] + step))
    if "exclusiveMaximum" in node:
        cases.append(("at exclusiveMaximum", node["exclusiveMaximum"]))
    if node.get("minLength", 0) > 0:
        cases.append(("shorter than minLength", "x" * (node["minLength"] - 1)))
    if "minItems" in node:
        cases.append(("fewer than minItems", _valid_items(node, node["minItems"] - 1)))
    if "maxItems" in node:
        cases.append(("more than maxItems", _valid_items(node, node["maxItems"] + 1)))
    if node.get("uniqueItems") and node.get("default"):
        cases.append(("repeated item", [node["default"][0]] * max(2, node.get("minItems", 2))))
    if "enum" in node:
        cases.append(("not in enum", "not-an-option"))
    return cases


def malformed_cases(node: dict | None = None, path: tuple[str, ...] = ()):
    """Yield ``(key path, what, value)``: one malformed value per key and rule of the schema.

    ``value`` replaces the key at ``path``; for an unknown key, ``path`` ends in ``UNKNOWN``
    and the value is anything.
    """
    node = C.schema() if node is None else node
    if path:
        wrong = next((v for v in WRONG_TYPES if not _valid(node, v)), None)
        assert wrong is not None, f"{'.'.join(path)}: the schema accepts any value; give it a type"
        yield path, "wrong type", wrong
        for what, value in _range_cases(node):
            assert not _valid(node, value), f"{'.'.join(path)}: {what} {value!r} passes the schema"
            yield path, what, value
        items = node.get("items")
        if isinstance(items, dict):
            bad = next((v for v in WRONG_TYPES if not _valid(items, v)), None)
            if bad is not None:
                fill = _valid_items(node, max(node.get("minItems", 1), 1))
                yield path, "malformed item", [bad, *fill[1:]]
    if "properties" in node:
        yield (*path, UNKNOWN), "unknown key", 1
        for key, prop in node["properties"].items():
            yield from malformed_cases(prop, (*path, key))


def _overlay(path: tuple[str, ...], value) -> dict:
    out = value
    for part in reversed(path):
        out = {part: out}
    return out


def _named(path: tuple[str, ...]) -> str:
    # What the message must contain: the key path, or for an unknown key the key itself.
    if path[-1] == UNKNOWN:
        return UNKNOWN if len(path) == 1 else f"{'.'.join(path[:-1])}: unknown key(s) ['{UNKNOWN}']"
    return ".".join(path)



def test_the_walk_covers_every_key_of_the_schema():
    def keys(node, path=()):
        for key, prop in node.get("properties", {}).items():
            yield (*path, key)
            yield from keys(prop, (*path, key))

    sch = C.schema()
    cases = list(malformed_cases(sch))
    every = set(keys(sch))
    assert every <= {p for p, _, _ in cases}
    assert len(cases) > 2 * len(every)  # a wrong type for each, plus ranges and unknown keys


def test_every_malformed_key_is_rejected_naming_it():
    failures, cases = [], list(malformed_cases())
    for path, what, value in cases:
        try:
            C.resolve(_overlay(path, value))
        except C.ConfigError as err:
            if _named(path) not in str(err):
                failures.append(f"{'.'.join(path)} ({what}, {value!r}): message does not name it: {err}")
        except Exception as err:  # noqa: BLE001 - any other exception is the bug looked for
            failures.append(f"{'.'.join(path)} ({what}, {value!r}): {type(err).__name__}: {err}")
        else:
            failures.append(f"{'.'.join(path)} ({what}, {value!r}): accepted")
    assert not failures, f"{len(failures)} of {len(cases)} malformed overlays:\n" + "\n".join(failures)


def _override(path: tuple[str, ...], value) -> str:
    return f"{'.'.join(path)}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"


def test_malformed_keys_as_cli_overrides_exit_2_naming_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no config.yaml here: the overrides sit on the defaults
    failures = []
    # Every fifth case (resolve sees them all above): the override route of each kind of key.
    for path, what, value in list(malformed_cases())[::5]:
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = main(["aggregate", "--study", "scaling", _override(path, value)], allow_server=False)
        if code != 2 or _named(path) not in err.getvalue() or "Traceback" in err.getvalue():
            failures.append(f"{_override(path, value)} ({what}): exit {code}: {err.getvalue()}")
    assert not failures, "\n".join(failures)


def test_the_issues_crashing_overlays_are_all_reported_at_once():
    raw = {"scaling": {"width_sweep": {"base_width": "seven", "widths": 32, "parameterizations": "mup",
                                       "lrs": {"sp": 0.1, "ntk": "x", "mup": {"a": 1}}},
                       "depth_sweep": {"lrs": 3}}}  # fmt: skip
    with pytest.raises(C.ConfigError) as err:
        C.resolve(raw)
    text = str(err.value)
    for key in ["base_width", "widths", "parameterizations", "lrs.sp", "lrs.ntk", "lrs.mup", "depth_sweep.lrs"]:
        assert f"scaling.{'width_sweep.' if key != 'depth_sweep.lrs' else ''}{key}" in text, key
    assert len(err.value.problems) == 7


def test_cross_key_problems_of_valid_sections_are_reported_with_schema_problems():
    # figures fails the schema; the scaling grid is well typed but inconsistent: both reported
    with pytest.raises(C.ConfigError) as err:
        C.resolve({"figures": {"dpi": 1}, "scaling": {"width_sweep": {"base_width": 64}}})
    assert any(p.startswith("figures.dpi") for p in err.value.problems)
    assert any("base_width=64 exceeds" in p for p in err.value.problems)


def test_the_gpt_depth_sweeps_cross_key_problems_name_their_keys():
    with pytest.raises(C.ConfigError) as err:
        C.resolve({"scaling": {"gpt_sweep": {"depth_sweep": {"width": 30, "sharpness_lr": 0.5}}}})
    problems = "\n".join(err.value.problems)
    assert "scaling.gpt_sweep.depth_sweep.width=30 is not divisible by scaling.gpt_sweep.n_heads=4" in problems
    assert "scaling.gpt_sweep.depth_sweep.width=30 is below scaling.gpt_sweep.base_width=32" in problems
    assert "scaling.gpt_sweep.depth_sweep.sharpness_lr=0.5 is not on the grid" in problems


@pytest.mark.parametrize(("text", "where"), [
    ("scaling:\n  seeds: [0, 1\n  dataset: mnist\n", "line 3"),
    ("data:\n\tsplit_seed: 1\n", "line 2"),
    ("a: b: c\n", "line 1, column 5"),
])  # fmt: skip
def test_yaml_syntax_error_in_a_config_file_names_file_and_line(tmp_path, text, where):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(C.ConfigError) as err:
        C.load_config([bad])
    assert str(bad) in str(err.value) and where in str(err.value)


def test_every_file_and_override_problem_is_reported_at_once(tmp_path):
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    (tmp_path / "bad.yaml").write_text("data: [\n")
    files = [tmp_path / "list.yaml", tmp_path / "bad.yaml", tmp_path / "absent.yaml"]
    with pytest.raises(C.ConfigError) as err:
        C.load_config(files, ["figures.dpi", "data.split_seed=[1", "=3", "data..x=1", "figures.dpi=high"])
    problems = err.value.problems
    assert len(problems) == 8, problems
    text = str(err.value)
    for needle in ["list.yaml", "not a list", "bad.yaml", "absent.yaml", "'figures.dpi' is not of the form",
                   "data.split_seed is not valid YAML", "'=3'", "'data..x=1'", "figures.dpi: 'high'"]:  # fmt: skip
        assert needle in text, needle


def test_non_mapping_config_is_a_config_error():
    with pytest.raises(C.ConfigError, match="must be a mapping"):
        C.resolve(["a"])
    with pytest.raises(C.ConfigError, match=r"unknown key\(s\) \['1'\]"):
        C.resolve({1: 2})


def _traindyn(args, cwd):
    return subprocess.run([sys.executable, "-m", "traindyn", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})  # fmt: skip


def test_a_sample_through_the_real_cli(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("scaling:\n  width_sweep:\n    base_width: seven\n  seeds: [0,\n")
    out = _traindyn(["train", "--study", "scaling", "--list", "--config", str(bad)], tmp_path)
    assert out.returncode == 2 and str(bad) in out.stderr and "line " in out.stderr, out.stderr
    out = _traindyn(["data", "--dataset", "mnist", "scaling.width_sweep.base_width=seven",
                     "scaling.width_sweep.widths=32", "figures.nope=1"], tmp_path)  # fmt: skip
    assert out.returncode == 2, out.stderr
    for key in ["scaling.width_sweep.base_width", "scaling.width_sweep.widths", "figures: unknown key(s) ['nope']"]:
        assert key in out.stderr
    assert "Traceback" not in out.stdout + out.stderr
    assert not (tmp_path / "results").exists()  # rejected before any job



@pytest.mark.parametrize(("args", "named"), [
    (["--config", "scaling={width_sweep: {base_width: seven, widths: 32}}"],
     ["scaling.width_sweep.base_width", "scaling.width_sweep.widths"]),
    (["--config", "scaling={seeds: [0,"], ["scaling: '{seeds: [0,' is not valid YAML"]),
    (["--configfile", "BAD"], ["scaling.depth_sweep.lrs", "figures: unknown key(s) ['nope']", "data.split_seed"]),
])  # fmt: skip
@pytest.mark.slow
def test_a_sample_through_snakemake_stops_before_any_job(tmp_path, venv_env, args, named):
    from conftest import snakemake

    bad = tmp_path / "bad.yaml"
    bad.write_text("scaling:\n  depth_sweep:\n    lrs: 3\nfigures:\n  nope: 1\ndata:\n  split_seed: -1\n")
    out = snakemake(["-n", "--cores", "1", *[str(bad) if a == "BAD" else a for a in args]], tmp_path, venv_env)
    text = out.stdout + out.stderr
    assert out.returncode != 0
    for key in named:
        assert key in text, text
    assert "Traceback" not in text and 'File "' not in text, text
    assert not (tmp_path / "results").exists()  # nothing resolved, nothing run


# ---------------------------------------------------------------- the files later stages read
def _spec(**overrides):
    from traindyn.train import RunSpec

    base = {"study": "scaling", "run": "sp-w16-d2-lr0.1-s0", "dataset": "digits",
            "model": {"arch": "mlp", "width": 16, "depth": 2}, "param": "sp", "base_width": 16,
            "depth_alpha": None, "optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 0.0,
            "loss": "xent", "steps": 20, "batch_size": 16, "schedule": "constant", "warmup_steps": 0,
            "eval_every": 10, "eval_examples": 64, "checkpoint_every": 10, "loss_cap": 20.0, "seed": 0,
            "fixed_batch_size": 16}  # fmt: skip
    return RunSpec(**{**base, **overrides})


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    from traindyn.data import prepare_dataset

    out = tmp_path_factory.mktemp("data") / "digits"
    prepare_dataset("digits", C.load_config([], ["data.max_train=256"]).data, out)
    return out


@pytest.fixture(scope="module")
def finished(digits, tmp_path_factory):
    """Two finished runs in results/runs/scaling/, trained by the real loop."""
    from traindyn.train import train

    root = tmp_path_factory.mktemp("runs") / "results" / "runs" / "scaling"
    for run in ("sp-w16-d2-lr0.1-s0", "sp-w16-d2-lr0.1-s1"):
        train(_spec(run=run, seed=int(run[-1]), checkpoint_every=0), digits, root / run, progress=False)
    return root


@pytest.mark.parametrize(("breaks", "says"), [
    ("no final", "1 of 2 runs of study 'scaling' are not finished (no final.json)"),
    ("truncated final", "final.json: not valid JSON"),
    ("foreign final", "written for run 'other-run', not 'sp-w16-d2-lr0.1-s1'"),
    ("truncated parquet", "metrics.parquet: not a readable parquet file"),
    ("text parquet", "metrics.parquet: not a readable parquet file"),
    ("truncated record", "tracking.json: not valid JSON"),
])  # fmt: skip
def test_bad_run_files_are_named_with_the_command_that_rewrites_them(finished, tmp_path, breaks, says):
    import shutil

    from traindyn.runfiles import RunFileError, check_runs

    root = tmp_path / "scaling"
    shutil.copytree(finished, root)
    run = root / "sp-w16-d2-lr0.1-s1"
    final, metrics = run / "final.json", run / "metrics.parquet"
    if breaks == "no final":
        final.unlink()
    elif breaks == "truncated final":
        final.write_text(final.read_text()[:50])
    elif breaks == "foreign final":
        final.write_text(json.dumps({**json.loads(final.read_text()), "run": "other-run"}))
    elif breaks == "truncated parquet":
        metrics.write_bytes(metrics.read_bytes()[:-30])
    elif breaks == "truncated record":
        (run / "tracking.json").write_text('{"run": ')
    else:
        metrics.write_text("step,metric,value\n")
    with pytest.raises(RunFileError) as err:
        check_runs(sorted(root.iterdir()), "scaling")
    text = str(err.value)
    assert says in text and str(run) in text
    if breaks == "no final":
        assert f"snakemake -c1 {final}" in text
    else:
        assert f"snakemake -c1 --force {final}" in text and f"traindyn train --study scaling --run {run.name}" in text


def test_aggregate_cli_names_unfinished_runs_before_writing_anything(finished, tmp_path, monkeypatch, capsys):
    import shutil

    monkeypatch.chdir(tmp_path)
    shutil.copytree(finished, tmp_path / "results/runs/scaling")
    # The default config's runs are not these two: all unfinished, said in one line.
    code = main(["aggregate", "--study", "scaling", "tracking.enabled=false"], allow_server=False)
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err and "runs of study 'scaling' are not finished" in err
    assert not (tmp_path / "results/analysis").exists()


@pytest.mark.parametrize("breaks", ["truncated", "garbage", "not a dict", "lacks keys", "another spec"])
def test_bad_checkpoint_warns_naming_it_and_starts_afresh(digits, tmp_path, capfd, breaks):
    import torch

    from traindyn.train import train

    spec = _spec()
    ckpt = tmp_path / "run" / "checkpoint.pt"
    ckpt.parent.mkdir()
    if breaks == "truncated":
        torch.save({"spec": spec.to_dict(), "model": torch.zeros(1000)}, ckpt)
        ckpt.write_bytes(ckpt.read_bytes()[:200])
    elif breaks == "garbage":
        ckpt.write_bytes(b"not a torch file")
    elif breaks == "not a dict":
        torch.save([1, 2], ckpt)
    elif breaks == "lacks keys":
        torch.save({"spec": spec.to_dict()}, ckpt)
    else:
        torch.save({"spec": _spec(lr=0.2).to_dict(), "step": 10, "model": {}, "optimizer": {}, "sampler": None,
                    "torch_rng": None, "cuda_rng": None, "metrics": [], "tables": {}, "callbacks": []}, ckpt)  # fmt: skip
    got = train(spec, digits, tmp_path / "run", progress=False)
    err = capfd.readouterr().err
    assert f"{ckpt}:" in err and "starting afresh" in err, err
    ref = train(spec, digits, tmp_path / "ref", progress=False)
    assert {k: v for k, v in got.items() if k.startswith("final_")} == {k: v for k, v in ref.items() if k.startswith("final_")}


def test_checkpoint_of_this_spec_that_cannot_be_restored_is_an_error(digits, tmp_path):
    import torch

    from traindyn.train import train

    spec = _spec()
    ckpt = tmp_path / "checkpoint.pt"
    torch.save({"spec": spec.to_dict(), "step": 10, "model": {"nope": torch.zeros(1)}, "optimizer": {},
                "sampler": None, "torch_rng": None, "cuda_rng": None, "metrics": [], "tables": {},
                "callbacks": []}, ckpt)  # fmt: skip
    with pytest.raises(ValueError, match=f"(?s){ckpt}: holds this run's spec but cannot be restored.*delete it"):
        train(spec, digits, tmp_path, progress=False)


def test_spectra_cli_names_a_bad_final_json(finished, tmp_path, monkeypatch, capsys):
    import shutil

    monkeypatch.chdir(tmp_path)
    run = tmp_path / "sp-w16-d2-lr0.1-s0"
    shutil.copytree(finished / run.name, run)
    (run / "final.json").write_text("{")
    args = ["spectra", "--study", "scaling", "--run", run.name, "--run-dir", str(run), "tracking.enabled=false"]
    assert main(args, allow_server=False) == 1
    err = capsys.readouterr().err
    assert f"{run / 'final.json'}: not valid JSON" in err and "snakemake -c1 --force" in err and "Traceback" not in err
    (run / "final.json").unlink()
    assert main(args, allow_server=False) == 1
    assert f"{run / 'final.json'} is missing" in capsys.readouterr().err
