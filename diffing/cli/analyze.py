"""``diffing analyze BASE FINETUNED --out DIR`` (the diff report) and ``diffing demo`` (the built-in pair).

Every flag of ``analyze`` is a field of :class:`~diffing.report.config.AnalyzeConfig`;
``--config run.toml`` loads one (BASE and FINETUNED included) and flags given on the
command line override it. Flags default to None here so "not given" is visible.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from diffing.cli.common import add_pair_args, add_remote_arg

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
        "--out", help="output folder (default: the --config file's folder, else ./report)"
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
        help="corpus: files (.txt one document a line, .jsonl text or chat records), folders, "
        "hf:NAME[:split], or a named dataset (fineweb, fineweb-edu, lmsys-chat, ultrachat; docs/data.md); "
        "default: the pair's own corpus, else the built-in one",
    )
    p.add_argument(
        "--harmful",
        help="harmful prompts for refusal: a file, hf:NAME or advbench/harmbench/jailbreakbench "
        "(default: the pair's own set, else the built-in one)",
    )
    p.add_argument(
        "--harmless",
        help="harmless prompts for refusal: a file, hf:NAME or alpaca (default as for --harmful)",
    )
    p.add_argument(
        "--tokens",
        type=int,
        help="token budget for statistics and the crosscoder harvest "
        "(default: sized to the model and the device)",
    )
    p.add_argument(
        "--transcripts",
        type=int,
        help="chat transcripts the fine-tuned model writes itself when the data has none "
        "(default 32 on a CPU, 256 on a GPU)",
    )
    p.add_argument(
        "--transcript-tokens",
        type=int,
        help="longest self-generated answer in tokens (default 64 on a CPU, 128 on a GPU)",
    )
    p.add_argument("--layers", type=int, nargs="+", help="layers to compare (default: all)")
    p.add_argument(
        "--adl-layer", type=int, help="layer of the Activation Difference Lens (default: middle)"
    )
    p.add_argument(
        "--refusal-prompts",
        type=int,
        help="at most this many prompts per split for refusal (default 32)",
    )
    p.add_argument(
        "--crosscoder", help="folder of a trained crosscoder to analyse (instead of training one)"
    )
    p.add_argument(
        "--train-crosscoder",
        action="store_true",
        default=None,
        help="train a crosscoder when --crosscoder is not given (the default)",
    )
    p.add_argument(
        "--no-crosscoder",
        dest="train_crosscoder",
        action="store_false",
        default=None,
        help="skip the crosscoder section unless --crosscoder DIR is given",
    )
    p.add_argument(
        "--crosscoder-layer", type=int, help="layer of the trained crosscoder (default: middle)"
    )
    p.add_argument(
        "--crosscoder-latents",
        type=int,
        help="latents of the trained crosscoder (default: sized to the token budget)",
    )
    p.add_argument(
        "--crosscoder-steps",
        type=int,
        help="training steps of the trained crosscoder (default: sized to the token budget)",
    )
    p.add_argument(
        "--causal-transcripts",
        type=int,
        help="chat transcripts for the crosscoder's causal check (default 64; 0 skips it)",
    )
    p.add_argument("--top-latents", type=int, help="latent cards shown in the report (default 8)")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.set_defaults(handler=run_analyze)

    d = sub.add_parser(
        "demo", help="build (or reuse) the built-in organisms and write the report of base vs chat"
    )
    d.add_argument("--out", default="demo-report", help="output folder (default ./demo-report)")
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
