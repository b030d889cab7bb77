"""``diffing organism build OUT_DIR``: build the tiny model organisms (base + planted fine-tunes)."""

from __future__ import annotations

import argparse

from diffing.cli.common import add_out_arg, out_dir
from diffing.cli.options import add_options, config_from_args
from diffing.organisms.bench_config import BenchConfig
from diffing.organisms.config import BuildOptions


def register(sub) -> None:
    """Add the ``organism`` command group and its ``build`` subcommand."""
    group = sub.add_parser(
        "organism", help="build tiny model pairs with planted, known fine-tuning changes"
    )
    group_sub = group.add_subparsers(dest="organism_command", metavar="SUBCOMMAND")
    group.set_defaults(handler=lambda args: (group.print_help(), 2)[1])
    p = group_sub.add_parser(
        "build",
        help="train the base model and its fine-tuned variants into OUT_DIR (re-running resumes)",
        description="Train a small base model on a synthetic language and LoRA fine-tunes of it with "
        "planted behaviours (chat: refuses harmful requests; quirk: mentions a secret word on one topic; "
        "null: control; backdoor: a trigger word switches answers to a payload; fact: one false fact "
        "about a person; style: a sign-off ends every answer). Finished stages are reused, so the same command resumes an interrupted build. "
        "OUT_DIR/organism.json records what was planted and the measured behaviour rates.",
    )
    p.add_argument(
        "out_dir", metavar="OUT_DIR", type=out_dir, help="folder to build into (created if missing)"
    )
    add_options(p, BuildOptions, title="build")
    p.set_defaults(handler=run_build)
    add_bench(group_sub)


def add_bench(actions) -> argparse.ArgumentParser:
    """Add ``organism bench``: score ``diffing analyze`` on every organism pair."""
    p = actions.add_parser(
        "bench",
        help="does `diffing analyze` name each organism's planted change? (the identification benchmark)",
        description="Build (or reuse) the organisms of every family and seed, run `diffing analyze` with "
        "default settings on each pair (base, variant), and score its findings against what was "
        "planted (organism.json: kind and targets): planted pairs are identified when a top-5 finding "
        "names the change, controls raise a false alarm when a top-5 finding is more than a no-change "
        "verdict; per method from all of its findings. Writes OUT/identify.json and one report folder "
        "per pair; a pair whose report exists is not analysed again.",
    )
    add_options(p, BenchConfig, title="benchmark")
    add_out_arg(p, "organism bench", "output folder: identify.json and the reports")
    p.set_defaults(handler=run_bench_cli)
    return p


def run_bench_cli(args: argparse.Namespace) -> int:
    """Handler of ``diffing organism bench``: run the benchmark and print its tables."""
    from diffing.organisms.bench_run import run_bench, summary_table

    cfg = config_from_args(args, BenchConfig)
    res = run_bench(
        cfg.root,
        cfg.families,
        cfg.seeds,
        not cfg.full,
        args.out,
        variants=cfg.variants,
    )  # progress goes through logging (silenced by --quiet)
    print(res.table)
    print()
    print(summary_table(res.summary))
    print(f"\nresults: {res.path}")
    return 0


def run_build(args: argparse.Namespace) -> int:
    """Handler of ``diffing organism build``: build, then print where and how it went."""
    from diffing.organisms import build_organisms, load_manifest

    cfg = config_from_args(args, BuildOptions)
    out = build_organisms(
        args.out_dir,
        variants=tuple(cfg.variants),
        seed=cfg.seed,
        fast=cfg.fast,
        family=cfg.family,
        progress=not args.quiet,
    )
    manifest = load_manifest(out)
    print(
        f"organisms in {out} (built in {manifest['build_seconds']['total']:.0f} s of training and evaluation)"
    )
    for name, rates in manifest["rates"].items():
        shown = ", ".join(f"{k} {v:.3f}" for k, v in rates.items() if k != "seconds")
        print(f"  {name:6s} {shown}")
    missed = [
        f"{name}.{metric}"
        for name, checks in manifest["targets"].items()
        for metric, c in checks.items()
        if not c["met"]
    ]
    print("  all behaviour targets met" if not missed else f"  targets missed: {', '.join(missed)}")
    return 0
