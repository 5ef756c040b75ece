"""`traindyn <stage> ...`: every stage of the pipeline as a subcommand."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import Config

__all__ = ["main"]


def subcommands() -> list:
    """The stage modules; each exposes NAME, HELP, EPILOG, add_arguments(parser), run(args, cfg).

    Imported here, not at module level: with a prefork server the ``traindyn`` command only
    forwards its argv, and importing the config validation (jsonschema, yaml) cost that
    thin client 0.16 s of CPU per job.
    """
    from . import aggregate, cmdfit, coordcheck, data, figure, report, spectra, track, train

    return [data, train, spectra, cmdfit, aggregate, track, coordcheck, figure, report]


def add_study_arguments(parser: argparse.ArgumentParser, out_help: str) -> None:
    """``--study``, ``--runs-dir`` and ``--out``: the options of a stage over a study's runs."""
    from ..studies import STUDIES

    parser.add_argument("--study", required=True, choices=list(STUDIES))
    parser.add_argument("--runs-dir", help="folder of the study's runs (default results/runs/STUDY)")
    parser.add_argument("--out", help=out_help)


def study_run_dirs(args: argparse.Namespace, cfg: Config) -> list[Path]:
    """The folder of every run of ``args.study`` that the config lists (``--runs-dir``)."""
    from ..studies import study_runs

    runs_dir = Path(args.runs_dir or f"results/runs/{args.study}")
    return [runs_dir / r for r in study_runs(cfg.raw, args.study)]


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", action="append", default=None, metavar="FILE",
                        help="config file; repeat to overlay (default: config.yaml if present)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for this job (Snakemake passes {threads})")  # fmt: skip
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value",
                        help="config overrides, validated like the files; may come anywhere")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """Return the ``traindyn`` argument parser with every stage's subcommand."""
    parser = argparse.ArgumentParser(
        prog="traindyn",
        description="Stages of the traindyn pipeline; Snakemake rules call exactly these.",
        epilog="Run `traindyn <stage> --help` for a stage's options and examples.",
    )
    subs = parser.add_subparsers(dest="stage", required=True, metavar="<stage>")
    for module in subcommands():
        sub = subs.add_parser(module.NAME, help=module.HELP, description=module.HELP,
                              epilog=module.EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
        module.add_arguments(sub)
        _common(sub)
        sub.set_defaults(handler=module.run)
    return parser


def _load(args: argparse.Namespace) -> Config:
    from ..config import load_config

    files = args.config
    if files is None:
        files = ["config.yaml"] if Path("config.yaml").is_file() else []
    return load_config(files, args.overrides)


def main(argv: list[str] | None = None, allow_server: bool = True) -> int:
    """Entry point of the ``traindyn`` command.

    Args:
        argv: Arguments (default ``sys.argv[1:]``).
        allow_server: Hand the command to a prefork server when one is announced in
            ``TRAINDYN_PREFORK_SOCKET`` (see ``traindyn.prefork``).
    """
    if allow_server:
        from ..prefork import run_via_server

        code = run_via_server(sys.argv[1:] if argv is None else list(argv))
        if code is not None:
            return code
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    # Overrides may follow options; argparse leaves those it could not place in `rest`.
    unknown = [item for item in rest if item.startswith("-") or "=" not in item]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.overrides = [*args.overrides, *rest]
    from ..config import ConfigError
    from ..track import TrackingAuthError

    try:
        cfg = _load(args)
    except ConfigError as err:
        print(f"traindyn {args.stage}: {err}", file=sys.stderr)
        return 2
    import torch

    # A job uses the threads its scheduler gives it, never the whole machine.
    torch.set_num_threads(max(1, args.threads))
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, args.threads)))
    try:
        return int(args.handler(args, cfg) or 0)
    except (ConfigError, FileNotFoundError, ValueError, TrackingAuthError) as err:
        print(f"traindyn {args.stage}: error: {err}", file=sys.stderr)
        return 1
