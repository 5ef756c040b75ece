"""Every `snakemake` and `traindyn` command the docs show does what the docs say.

The docs are README.md, every page of docs/ (not the generated docs/results/) and the
profiles' README. Each `snakemake ...` line of their code blocks is dry-run (``-n``) in a temporary
working directory, as written (its own options, profile, config files and targets), and
the jobs it schedules are compared with what the README line promises: EXPECTED maps every
command to its expectation, and a README command missing from EXPECTED fails the test, so
whoever adds one says what it must schedule. Commands about reruns are dry-run in a folder
where every output of the default DAG exists (made from the default dry run's outputs,
all with one mtime, an hour ahead), the others in an empty one. Each `traindyn ...` command (code blocks
and the tables' command column) must parse with the real parser; none is executed.
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import ROOT

from traindyn.cli import build_parser
from traindyn.config import load_config
from traindyn.studies import study_runs

README = ROOT / "README.md"
DOCS = [README, *sorted((ROOT / "docs").glob("*.md")), ROOT / "workflow/profiles/README.md"]
RUN = "results/runs/scaling/mup-w128-d2-lr10-s0/final.json"


def docs_text() -> str:
    """Every page whose commands are checked, one after the other."""
    return "\n".join(p.read_text() for p in DOCS)


def readme_commands(text: str, program: str) -> list[str]:
    """``program`` command lines of the README's fenced code blocks, continuations joined, comments cut."""
    out = []
    for lang, block in re.findall(r"^```([a-z]*)\n(.*?)^```", text, re.M | re.S):
        if lang not in ("", "bash", "sh", "console"):
            continue  # python examples run in tests/unit/test_docs_library.py
        for line in block.replace("\\\n", " ").splitlines():
            if line.split(maxsplit=1)[:1] != [program]:
                continue
            words = shlex.split(line, comments=True)
            if words and words[0] == program:
                out.append(shlex.join(words))
    return out


def table_traindyn_commands(text: str) -> list[str]:
    """`traindyn ...` commands of the README's tables' "command" column (e.g. the stages table)."""
    out, column = [], None
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else None
        if cells is None:
            column = None
        elif "command" in cells:
            column = cells.index("command")
        elif column is not None and column < len(cells):
            out += re.findall(r"`(traindyn [^`]+)`", cells[column])
    return out


def _table(stdout: str) -> dict[str, int]:
    # The first "Job stats" table of a dry run: rule -> job count.
    match = re.search(r"Job stats:\njob\s+count\n[- ]+\n(.*?)\ntotal\s+(\d+)", stdout, re.S)
    assert match, stdout[-3000:]
    jobs = {rule: int(n) for rule, n in (line.split() for line in match.group(1).splitlines())}
    assert sum(jobs.values()) == int(match.group(2))
    return jobs


def _dry_run(words: list[str], workdir: Path, env: dict, keep: list | None = None) -> dict[str, int]:
    # The README's arguments as written; -n, the Snakefile and the folder go first, since a
    # README line may end its --forcerun list with `--` followed by targets.
    exe = shutil.which("snakemake", path=env["PATH"])
    cmd = [exe, "-n", "-s", str(ROOT / "Snakefile"), "--directory", str(workdir), *words[1:]]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"{shlex.join(words)}:\n{out.stdout[-3000:]}{out.stderr[-3000:]}"
    if keep is not None:
        keep.append(out.stdout)
    if "Nothing to be done" in out.stdout:
        return {}
    return _table(out.stdout)


def _specs(files=(), overrides=()) -> dict:
    cfg = load_config([ROOT / "config.yaml", *[ROOT / f for f in files]], list(overrides)).raw
    return study_runs(cfg, "scaling")


def _runs(files=(), overrides=()) -> int:
    return len(_specs(files, overrides))


def _no(jobs, pattern):
    return not any(re.fullmatch(pattern, rule) for rule in jobs)


def everything(jobs, ctx):
    """The whole default DAG: every dataset, every run of every study, every figure."""
    return jobs == ctx["default"] and jobs["all"] == 1 and jobs["train_scaling"] == _runs()


def paper_scale(jobs, ctx):
    return jobs["all"] == 1 and jobs["train_scaling"] == _runs(["config/paper.yaml"])


# README command -> (where it is dry-run, what its schedule must satisfy). The comment on the
# README line says what it does; the check says the same in jobs.
EXPECTED = {
    "snakemake -c4 --workflow-profile workflow/profiles/local": ("empty", everything),
    "snakemake --workflow-profile workflow/profiles/local": ("empty", everything),
    "snakemake --workflow-profile workflow/profiles/local --cores 4 -n": ("empty", everything),
    "snakemake -n": ("empty", everything),
    # one figure and what it needs: that figure's job, no other figure, not `all`
    "snakemake -c4 results/figures/scaling_lr_width.png": ("empty", lambda j, c: (
        j["figure_scaling_lr"] == 1 and j["train_scaling"] == _runs()
        and [r for r in j if r.startswith("figure_")] == ["figure_scaling_lr"] and "all" not in j)),
    # stop after one stage: the scaling study up to its aggregation, nothing after
    "snakemake -c4 --until aggregate_scaling": ("empty", lambda j, c: (
        j == {"data": len({s.dataset for s in _specs().values()}), "train_scaling": _runs(), "aggregate_scaling": 1})),
    # rerun one stage and what follows: in a built folder, no training, no data
    "snakemake -c4 --forcerun aggregate_scaling": ("built", lambda j, c: (
        j["aggregate_scaling"] == 1 and _no(j, r"train_.*|data|coordcheck_.*")
        and j.get("figure_scaling_lr") == 1 and j["all"] == 1)),
    "snakemake -c4 --configfile config/paper.yaml": ("empty", paper_scale),
    "snakemake -c4 --config 'scaling={seeds: [0, 1, 2, 3, 4]}'": ("empty", lambda j, c: (
        j["train_scaling"] == _runs(overrides=["scaling.seeds=[0, 1, 2, 3, 4]"]) and j["all"] == 1)),
    # build one run: that run and the dataset it trains on
    f"snakemake -c1 {RUN}": ("empty", lambda j, c: j == {"data": 1, "train_scaling": 1}),
    # rerun that one run and nothing else
    f"snakemake -c1 --force {RUN}": ("built", lambda j, c: j == {"train_scaling": 1}),
    # rerun it and what depends on it, up to one figure
    f"snakemake -c1 --forcerun {RUN} -- results/figures/scaling_lr_width.png": ("built", lambda j, c: (
        j == {"train_scaling": 1, "aggregate_scaling": 1, "figure_scaling_lr": 1})),
    "snakemake --workflow-profile workflow/profiles/slurm -n": ("empty", everything),
    ("snakemake --workflow-profile workflow/profiles/slurm --configfile config/paper.yaml "
     "--config 'tracking={uri: http://login01.example.org:5000, defer: []}'"): ("empty", paper_scale),
    "snakemake --workflow-profile workflow/profiles/slurm --config 'tracking={uri: http://login01.example.org:5000, defer: []}'": (
        "empty", everything),
}  # fmt: skip


def _build(workdir: Path, dry_run_stdout: str) -> None:
    # Every output of the default DAG, present and older than nothing: `snakemake -n` is a no-op.
    outputs = [p.strip() for line in re.findall(r"^\s+output: (.*)$", dry_run_stdout, re.M) for p in line.split(",")]
    # An hour ahead: a source edited while the test runs must not make a job out of date.
    now = time.time() + 3600
    for p in outputs:
        path = workdir / p
        if "." in path.name:  # directory() outputs (results/data/{dataset}) have no suffix
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        else:
            path.mkdir(parents=True, exist_ok=True)
    for p in outputs:
        os.utime(workdir / p, (now, now))


def test_every_docs_snakemake_command_is_known():
    found = readme_commands(docs_text(), "snakemake")
    unknown = [c for c in found if c not in EXPECTED]
    assert not unknown, ("the docs show snakemake commands this test has no expectation for; add each to "
                         f"EXPECTED in {Path(__file__).name} with what it must schedule: {unknown}")  # fmt: skip
    stale = [c for c in EXPECTED if c not in found]
    assert not stale, f"EXPECTED lists commands the docs no longer show: {stale}"


@pytest.mark.slow
def test_every_docs_snakemake_command_schedules_what_it_says(tmp_path, venv_env):
    env = {**venv_env, "TRAINDYN_SLURM_ACCOUNT": "test"}
    commands = list(dict.fromkeys(c for c in readme_commands(docs_text(), "snakemake") if c in EXPECTED))
    stdout = []
    ctx = {"default": _dry_run(["snakemake"], tmp_path / "default", env, keep=stdout)}
    # Every figure of the default DAG is documented with its caption in docs/figures.md.
    from traindyn.report.docs import documented_figures

    patterns = [re.compile(re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(n)) + r"\.png") for n in documented_figures(ROOT)]
    drawn = sorted(set(re.findall(r"results/figures/([^\s,]+\.png)", stdout[0])))
    assert len(drawn) >= 30, drawn
    undocumented = [f for f in drawn if not any(p.fullmatch(f) for p in patterns)]
    assert not undocumented, f"figures the default DAG draws that docs/figures.md does not list: {undocumented}"
    _build(tmp_path / "built", stdout[0])
    assert _dry_run(["snakemake"], tmp_path / "built", env) == {}  # the built folder is complete

    def one(i, command):
        where, _ = EXPECTED[command]
        workdir = tmp_path / "built" if where == "built" else tmp_path / f"empty-{i}"
        return command, _dry_run(shlex.split(command), workdir, env)

    # Dry runs only read the built folder (no locks: -n), so they may run side by side.
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        results = list(pool.map(one, range(len(commands)), commands))
    wrong = [f"{command}\n    scheduled {jobs}" for command, jobs in results if not EXPECTED[command][1](jobs, ctx)]
    assert not wrong, "README commands that do not schedule what they say:\n" + "\n".join(wrong)


def test_every_docs_traindyn_command_parses():
    text = docs_text()
    commands = readme_commands(text, "traindyn") + table_traindyn_commands(text)
    assert len(commands) >= 5
    parser = build_parser()
    for command in commands:
        try:
            args, rest = parser.parse_known_args(shlex.split(command)[1:])
        except SystemExit:
            pytest.fail(f"README command does not parse: {command}")
        # what main() accepts beyond the parser: key=value overrides anywhere, valid for the config
        assert all("=" in r and not r.startswith("-") for r in rest), f"{command}: unrecognized {rest}"
        assert args.stage == shlex.split(command)[1]
        cfg = load_config([ROOT / "config.yaml"], [*args.overrides, *rest]).raw
        if getattr(args, "run", None) and args.run != "ID":  # ID: the tables' placeholder
            assert args.run in study_runs(cfg, args.study), f"{command}: no such run in config.yaml"


def test_readme_command_parsing_joins_continuations_and_drops_comments():
    text = "x\n```bash\nsnakemake -c1 \\\n    --config a='{b: 1}'   # why\n# snakemake not this\nmake x\n```\n"
    assert readme_commands(text, "snakemake") == ["snakemake -c1 --config 'a={b: 1}'"]
