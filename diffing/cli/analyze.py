"""``diffing analyze BASE FINETUNED --out DIR`` (the diff report) and ``diffing demo`` (the built-in pair).

Every flag of ``analyze`` is a field of :class:`~diffing.report.config.AnalyzeConfig`;
``--config run.toml`` loads one (BASE and FINETUNED included) and flags given on the
command line override it. Flags default to None here so "not given" is visible.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from diffing.cli.common import (
    add_pair_args,
    add_remote_arg,
    integer,
    nonnegative_int,
    out_dir,
    positive_int,
)

_BOOL_FLAGS = ("trust_remote_code", "allow_pickle", "train_crosscoder", "remote")
"""Store-true flags: absent means "use the config file's value"."""


def _sections(value: str) -> list[str]:
    return [s.strip() for s in value.split(",") if s.strip()]


def register(sub) -> None:
    """Add the ``analyze`` and ``demo`` commands."""
    p = sub.add_parser(
        "analyze",
        help="run statistics, refusal and crosscoder on a pair and write the diff report (index.html, report.json, report.md)",
    )
    add_pair_args(p)
    add_remote_arg(p, "both models (weight statistics from sketches)")
    for action in p._actions:  # BASE/FINETUNED may come from --config
        if action.dest in ("base", "finetuned"):
            action.nargs, action.default = "?", None
    for action in p._actions:
        if action.dest in _BOOL_FLAGS:
            action.default = None
    p.add_argument(
        "--out",
        type=out_dir,
        help="output folder (default: the --config file's folder, else ./report)",
    )
    p.add_argument(
        "--config", help="run.toml written by an earlier analyze; flags given here override it"
    )
    p.add_argument(
        "--sections", type=_sections, help="comma list of stats,refusal,crosscoder (default: all)"
    )
    p.add_argument(
        "--data",
        nargs="+",
        help="corpus files (.txt one document a line, .jsonl text or chat records)",
    )
    p.add_argument("--harmful", help="harmful prompts for the refusal comparison (.txt or .jsonl)")
    p.add_argument("--harmless", help="harmless prompts for the refusal comparison")
    p.add_argument(
        "--tokens",
        type=positive_int,
        help="token budget for statistics and the crosscoder harvest (default 20000)",
    )
    p.add_argument("--layers", type=integer, nargs="+", help="layers to compare (default: all)")
    p.add_argument(
        "--adl-layer",
        type=integer,
        help="layer of the Activation Difference Lens (default: middle)",
    )
    p.add_argument(
        "--refusal-prompts",
        type=positive_int,
        help="at most this many prompts per split for refusal (default 32)",
    )
    p.add_argument("--crosscoder", help="folder of a trained crosscoder to analyse")
    p.add_argument(
        "--train-crosscoder", action="store_true", default=None, help="train a quick crosscoder"
    )
    p.add_argument(
        "--crosscoder-layer", type=integer, help="layer of the quick crosscoder (default: middle)"
    )
    p.add_argument(
        "--crosscoder-latents",
        type=positive_int,
        help="latents of the quick crosscoder (default 256)",
    )
    p.add_argument(
        "--crosscoder-steps",
        type=positive_int,
        help="training steps of the quick crosscoder (default 400)",
    )
    p.add_argument(
        "--causal-transcripts",
        type=nonnegative_int,
        help="chat transcripts for the crosscoder's causal check (default 64; 0 skips it)",
    )
    p.add_argument(
        "--top-latents", type=nonnegative_int, help="latent cards shown in the report (default 8)"
    )
    p.add_argument("--seed", type=nonnegative_int, help="random seed (default 0)")
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


def config_from_args(args: argparse.Namespace):
    """An :class:`AnalyzeConfig`: the ``--config`` file (if any) with the given flags on top."""
    import dataclasses

    from diffing.report.config import AnalyzeConfig

    cfg = AnalyzeConfig.load(args.config) if args.config else AnalyzeConfig()
    for f in dataclasses.fields(AnalyzeConfig):
        value = getattr(args, f.name, None)
        if value is not None:
            setattr(cfg, f.name, value)
    cfg.__post_init__()  # re-validate after the overrides
    return cfg


def run_analyze(args: argparse.Namespace) -> int:
    """Handler of ``diffing analyze``."""
    from diffing.report import analyze

    cfg = config_from_args(args)
    out = args.out or (str(Path(args.config).parent) if args.config else "report")
    report = analyze(out_dir=out, config=cfg)
    _print_result(report)
    return 0


def run_demo(args: argparse.Namespace) -> int:
    """Handler of ``diffing demo``."""
    from diffing.report import demo

    report = demo(args.out, fast=args.fast, variant=args.variant)
    _print_result(report)
    return 0


def _print_result(report) -> None:
    print(f"report: {report.html.resolve()}")
    print(f"        {report.json.resolve()}")
    print(f"        {report.markdown.resolve()}")
    for i, f in enumerate(report.findings, 1):
        print(f"  {i}. {f['title']}")
