"""``diffing analyze BASE FINETUNED --out DIR`` (the diff report) and ``diffing demo`` (the built-in pair).

Every option of ``analyze`` is generated from a field of
:class:`~diffing.report.config.AnalyzeConfig` (its type, default and docstring), so the
help, ``run.toml`` and the Python API agree. ``--config run.toml`` loads a config (BASE
and FINETUNED included) and the flags given on the command line override it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from diffing.cli.common import add_out_arg, device, out_dir, token_count
from diffing.cli.options import add_options
from diffing.report.config import CLI_FLAGS, CLI_POSITIONALS, AnalyzeConfig


def register(sub) -> None:
    """Add the ``analyze`` and ``demo`` commands."""
    p = sub.add_parser(
        "analyze",
        help="run statistics, refusal and crosscoder on a pair and write the diff report (index.html, report.json, report.md)",
    )
    add_options(
        p,
        AnalyzeConfig,
        positionals=CLI_POSITIONALS,
        flags=CLI_FLAGS,
        types={"device": device, "tokens": token_count},
    )
    add_out_arg(
        p,
        "analyze",
        "output folder (default: the --config file's folder, else ./report)",
        required=False,
    )
    p.add_argument(
        "--config", help="run.toml written by an earlier analyze; flags given here override it"
    )
    p.set_defaults(handler=run_analyze)

    d = sub.add_parser(
        "demo", help="build (or reuse) the built-in organisms and write the report of base vs chat"
    )
    d.add_argument(
        "--out", type=out_dir, default="demo-report", help="output folder (default ./demo-report)"
    )
    d.add_argument(
        "--fast", action="store_true", help="use the small, fast organism build (as the tests do)"
    )
    d.add_argument(
        "--variant",
        default="chat",
        help="organism compared with the base: chat, quirk or null (default chat)",
    )
    d.set_defaults(handler=run_demo)


def config_from_args(args: argparse.Namespace) -> AnalyzeConfig:
    """An :class:`AnalyzeConfig`: the ``--config`` file (if any) with the given flags on top."""
    from diffing.cli.options import config_from_args as build

    base = AnalyzeConfig.load(args.config) if args.config else None
    return build(args, AnalyzeConfig, base=base)


def run_analyze(args: argparse.Namespace) -> int:
    """Handler of ``diffing analyze``."""
    from diffing.report import analyze

    cfg = config_from_args(args)
    out = args.out or (str(Path(args.config).parent) if args.config else "report")
    report = analyze(out_dir=out, config=cfg)
    _print_result(report)
    return _exit_code(report)


def run_demo(args: argparse.Namespace) -> int:
    """Handler of ``diffing demo``."""
    from diffing.report import demo

    report = demo(args.out, fast=args.fast, variant=args.variant)
    _print_result(report)
    return _exit_code(report)


def _exit_code(report) -> int:
    """1 when a section failed (the report is written all the same, with the failure in it), else 0."""
    import sys

    for name in report.failed:
        reason = report.data["sections"][name].get("reason")
        print(f"error: the {name} section failed: {reason}", file=sys.stderr)
    return 1 if report.failed else 0


def _print_result(report) -> None:
    print(f"report: {report.html.resolve()}")
    print(f"        {report.json.resolve()}")
    print(f"        {report.markdown.resolve()}")
    for i, f in enumerate(report.findings, 1):
        print(f"  {i}. {f['title']}")
