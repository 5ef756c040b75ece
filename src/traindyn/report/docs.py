"""``traindyn report``: the committed results pages, figure catalogue and README headlines.

Generated files and regions, all rendered from files in the repository:

- ``docs/results/{study}.md`` from ``docs/results/summaries/{study}.json`` (a copy of the
  study's ``summary.json`` from a default run, taken by ``collect``);
- the README's study table (between ``<!-- generated:headlines -->`` markers) from the same
  summaries, and the time of a fresh ``make figures`` (``<!-- generated:runtime -->``, also in
  ``docs/reproducibility.md``) from ``docs/results/summaries/timing.json``;
- ``docs/figures.md`` from the report captions ``workflow/report/*.rst``;
- the benchmark tables of ``docs/spectral-engine.md`` (``<!-- generated:benchmarks -->``)
  from ``docs/results/benchmarks/*.json`` (copies of ``make bench``'s JSON).

``render(root)`` returns every generated file's text; ``write`` puts it in place and
``stale`` lists the files whose committed text differs (the test suite's check).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from . import headline, study_markdown
from .common import stamp

__all__ = ["collect", "render", "stale", "write"]

STUDIES = ("scaling", "mat", "cmd", "lag")
SUMMARIES = Path("docs/results/summaries")
BENCHMARKS = Path("docs/results/benchmarks")
QUESTIONS = {
    "scaling": "Does the best learning rate transfer across width (SP / NTK / μP) and depth (depth-μP), "
               "and does sharpness follow the same trajectory at every width under μP (super consistency)?",
    "mat": "Do attention heads differ in their modular NTK, and can training skip the heads whose λmax is "
           "below a dynamic threshold to save compute?",
    "cmd": "Can a training trajectory be described by a few correlated modes, and do CMD's weights "
           "generalise better than SGD's?",
    "lag": "Which way of growing a small GPT into a deeper one ends best, and how few steps after growth "
           "tell?",
}  # fmt: skip
# report caption file -> (section title, notebook that draws its figures), in page order
CAPTIONS = {
    "data_overview": ("Data", "notebooks/data_overview.py"),
    "scaling_lr": ("Scaling: learning-rate transfer", "notebooks/scaling_lr.py"),
    "scaling_sharpness": ("Scaling: sharpness and spectra", "notebooks/scaling_sharpness.py"),
    "mat_heads": ("mat: heads' modular NTK", "notebooks/mat_heads.py"),
    "mat_savings": ("mat: compute of MAT", "notebooks/mat_savings.py"),
    "cmd_figures": ("cmd: correlation mode decomposition", "notebooks/cmd_figures.py"),
    "lag_growth": ("lag: landscape-aware growing", "notebooks/lag_growth.py"),
}


def _valid_json(path: Path) -> None:
    try:
        json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); is a run still writing it?") from None


def collect(results: Path, root: Path) -> list[Path]:
    """Copy each study's ``summary.json`` and ``make bench``'s JSON from ``results`` into the docs.

    Returns:
        The files copied (a study or benchmark that ``results`` lacks is left as committed).
    """
    copied = []
    for study in STUDIES:
        src = Path(results) / "analysis" / study / "summary.json"
        if src.is_file():
            _valid_json(src)  # a truncated file stops here, before it replaces a good one
            dst = root / SUMMARIES / f"{study}.json"
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
            copied.append(dst)
    timing = Path(results) / "timing.json"
    if timing.is_file():
        _valid_json(timing)
        (root / SUMMARIES).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(timing, root / SUMMARIES / "timing.json")
        copied.append(root / SUMMARIES / "timing.json")
    for src in sorted((Path(results) / "benchmarks").glob("*.json")):
        _valid_json(src)
        dst = root / BENCHMARKS / src.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        copied.append(dst)
    return copied


def _summaries(root: Path) -> dict[str, dict]:
    return {s: json.loads((root / SUMMARIES / f"{s}.json").read_text())
            for s in STUDIES if (root / SUMMARIES / f"{s}.json").is_file()}  # fmt: skip


def headlines(summaries: dict[str, dict]) -> str:
    """The README's study table and the provenance of its numbers."""
    rows = ["| study | question | measured at the default scale | details |", "|---|---|---|---|"]
    for study in STUDIES:
        answer = headline(study, summaries[study]) if study in summaries else "not measured yet"
        rows.append(f"| **{study}** | {QUESTIONS[study]} | {answer} | [results](docs/results/{study}.md) |")
    # One stamp per commit and machine; the aggregations of one run land minutes apart: the first.
    provs = {}
    for s in sorted((s.get("provenance") or {} for s in summaries.values()), key=lambda p: str(p.get("date", ""))):
        provs.setdefault(tuple(str(s.get(k)) for k in ("commit", "cpu", "cpus", "machine", "python")), s)
    stamps = sorted({stamp(p or None, "the studies' `summary.json`") for p in provs.values()})
    return "\n".join(rows) + "\n\n" + "\n".join(f"<sub>{s}</sub>" for s in stamps) + "\n"


def runtime(timing: dict | None) -> str:
    """One sentence: how long a fresh default ``make figures`` took, and where."""
    if not timing:
        return "No fresh run's time is recorded yet (`make figures` from an empty `results/`, then `make docs`).\n"
    p = timing.get("provenance", {})
    minutes, seconds = divmod(round(timing["wall_seconds"]), 60)
    return (f"A fresh `make figures` (every study, from an empty `results/`, data preparation, tracking and "
            f"figures included) took **{minutes} min {seconds:02d} s** with `--cores {timing.get('snakemake_cores')}` "
            f"on {p.get('cpus', '?')} CPUs ({p.get('cpu', '?')}) on {p.get('date', '?')[:10]}.\n")  # fmt: skip


def _rst_to_md(text: str) -> str:
    return re.sub(r"``([^`]+)``", r"`\1`", " ".join(line.strip() for line in text.strip().splitlines()))


def parse_captions(text: str) -> tuple[str, list[tuple[str, str]]]:
    """A caption file's intro and its ``figure -> caption`` definition list."""
    intro, figures = [], []
    for block in re.split(r"\n\s*\n", text.strip()):
        term = re.match(r"``([\w{}.-]+)``\n((?:[ \t]+.*\n?)+)", block + "\n")
        if term:
            figures.append((term.group(1), _rst_to_md(term.group(2))))
        elif figures:
            raise ValueError(f"caption text after the figure list: {block[:60]!r}")
        else:
            intro.append(_rst_to_md(block))
    return "\n\n".join(intro), figures


def figures_page(root: Path) -> str:
    """``docs/figures.md``: every figure the pipeline draws, with the report's caption."""
    lines = ["# Figures", "",
             "Every figure `make figures` writes to `results/figures/` (PNG and PDF), grouped by the notebook that "
             "draws it. Each title's numbers are computed from the tables the pipeline wrote. These captions are "
             "the report's (`make report`): both come from `workflow/report/*.rst`, and this page is generated "
             "from them by `make docs`. `{dataset}` and `{model}` stand for each dataset and model of the config.",
             ""]  # fmt: skip
    for stem, (title, notebook) in CAPTIONS.items():
        intro, figures = parse_captions((root / "workflow/report" / f"{stem}.rst").read_text())
        lines += [f"## {title}", "", f"Drawn by `{notebook}`. {intro}", ""]
        for name, caption in figures:
            lines += [f"### `{name}`", "", caption, ""]
    return "\n".join(lines).rstrip() + "\n"


def documented_figures(root: Path) -> list[str]:
    """Every figure name the captions document (patterns such as ``mat_heads_{model}`` included)."""
    return [name for stem in CAPTIONS
            for name, _ in parse_captions((root / "workflow/report" / f"{stem}.rst").read_text())[1]]  # fmt: skip


def fill(text: str, region: str, content: str, where: str) -> str:
    """Replace the body of ``<!-- generated:REGION -->`` ... ``<!-- /generated:REGION -->`` in ``text``."""
    start, end = f"<!-- generated:{region} -->", f"<!-- /generated:{region} -->"
    if text.count(start) != 1 or text.count(end) != 1:
        raise ValueError(f"{where} needs exactly one {start} ... {end} region")
    head, rest = text.split(start)
    _, tail = rest.split(end)
    return f"{head}{start}\n{content}{end}{tail}"


def render(root: Path) -> dict[Path, str]:
    """Every generated file (relative path -> its text) from the committed summaries and captions."""
    from .bench import benchmark_tables

    root = Path(root)
    summaries = _summaries(root)
    out = {Path("docs/results") / f"{s}.md": study_markdown(s, summary) for s, summary in summaries.items()}
    timing_file = root / SUMMARIES / "timing.json"
    took = runtime(json.loads(timing_file.read_text()) if timing_file.is_file() else None)
    readme = fill((root / "README.md").read_text(), "headlines", headlines(summaries), "README.md")
    out[Path("README.md")] = fill(readme, "runtime", took, "README.md")
    repro = root / "docs/reproducibility.md"
    if repro.is_file():
        out[Path("docs/reproducibility.md")] = fill(repro.read_text(), "runtime", took, str(repro))
    out[Path("docs/figures.md")] = figures_page(root)
    engine = root / "docs/spectral-engine.md"
    if engine.is_file():
        out[Path("docs/spectral-engine.md")] = fill(engine.read_text(), "benchmarks",
                                                    benchmark_tables(root / BENCHMARKS), str(engine))  # fmt: skip
    return out


def write(root: Path) -> list[Path]:
    """Write every generated file under ``root``; returns those whose text changed."""
    changed = []
    for rel, text in render(root).items():
        path = Path(root) / rel
        if not path.is_file() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            changed.append(rel)
    return changed


def stale(root: Path) -> list[Path]:
    """Generated files whose committed text differs from what ``render`` makes."""
    return [rel for rel, text in render(root).items()
            if not (Path(root) / rel).is_file() or (Path(root) / rel).read_text() != text]  # fmt: skip
