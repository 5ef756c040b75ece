"""`traindyn report`: results pages, figure catalogue and README headlines from the summaries."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import Config

NAME = "report"
HELP = ("copy the studies' summary.json (and make bench's JSON) into docs/results/ and regenerate "
        "docs/results/*.md, docs/figures.md, the README's headlines and the benchmark tables")  # fmt: skip
EPILOG = """examples:
  traindyn report                      # after `make figures` (and `make bench`): take the new numbers
  traindyn report --no-collect         # re-render from the summaries already in docs/results/summaries
  traindyn report --check              # list generated files that differ from what they would be
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this stage's options."""
    parser.add_argument("--results", default="results", help="the pipeline's results folder (default results)")
    parser.add_argument("--root", default=".", help="the repository whose docs are written (default .)")
    parser.add_argument("--no-collect", action="store_true", help="do not copy summaries from --results")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a generated file is stale")


def run(args: argparse.Namespace, cfg: Config) -> int:
    """Collect, render and write (or check) the generated documentation."""
    from ..report import docs

    root = Path(args.root)
    if args.check:
        stale = docs.stale(root)
        for rel in stale:
            print(f"stale: {rel} (run `traindyn report --no-collect` to regenerate it)")
        return 1 if stale else 0
    if not args.no_collect:
        for path in docs.collect(Path(args.results), root):
            print(f"collected {path}")
    for rel in docs.write(root):
        print(f"wrote {rel}")
    return 0
