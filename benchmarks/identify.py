"""Benchmark: does `diffing analyze`, with default settings, name each organism's planted change?

For every family x seed the organisms are built (or reused from the cache) with every
variant, each pair (base, variant) analysed with default settings, and the report scored
against organism.json's ground truth (``diffing.organisms.bench``): the identification
rate over planted pairs (a top-5 finding names the change), false alarms over controls
(a top-5 finding other than a no-change verdict), the chance rate (top-5 findings that
name another kind's targets), and a pair x method table.

    python -m benchmarks.identify [--families llama olmo2] [--seeds 0 1] [--full] [--out DIR] [--write]

The build options are ``diffing organism bench``'s (``BenchConfig``, same defaults).

``--write`` saves the table of the last seed and the summary of every seed to
docs/benchmarks/identify.md. Reports are kept in ``--out``, so a rerun only analyses the
pairs that have none.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from pathlib import Path

from diffing.cli.options import add_options, config_from_args
from diffing.organisms.bench_config import BenchConfig


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print (optionally write) the Markdown page."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_options(p, BenchConfig, only=("families", "seeds", "full"))
    p.add_argument("--out", default="/tmp/bench-identify", help="reports and identify.json")
    p.add_argument("--write", action="store_true", help="write docs/benchmarks/identify.md")
    args = p.parse_args(argv)
    cfg = config_from_args(args, BenchConfig)

    from diffing.organisms.bench_run import run_bench, summary_table, table

    reused = len(list(Path(args.out).glob("*/*/report.json")))  # reports a rerun reads back
    t0 = time.perf_counter()
    res = run_bench(
        None,
        cfg.families,
        cfg.seeds,
        not cfg.full,
        args.out,
        progress=lambda m: print(m, file=sys.stderr),
    )
    seconds = time.perf_counter() - t0
    last = max(cfg.seeds)
    shown = [r for r in res.pairs if r["seed"] == last]
    command = "python -m benchmarks.identify " + " ".join(
        map(shlex.quote, sys.argv[1:] if argv is None else argv)
    )
    lines = [
        "# Identification: does `diffing analyze` name the planted change?",
        "",
        f"Command: `{command.strip()}`",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, shared; "
        f"{'full' if cfg.full else 'fast'} organism builds, families {', '.join(cfg.families)}; "
        f"{seconds:.0f} s wall; {len(res.pairs) - reused} of {len(res.pairs)} pairs analysed in this run "
        "(the others' reports were read back from --out).",
        "",
        "Each pair is `diffing analyze BASE VARIANT` with default settings. Top 5: a planted pair is a *hit* "
        "when one of the report's five findings names a target of organism.json (word start, "
        "case-insensitive), a control is a false alarm (*FA*) when one of them is more than a "
        "no-change or unrelated-pair verdict. Per method: every finding of that report section "
        "(hit / miss; for controls FA / clean; - when the section did not run). Chance: the planted "
        "pairs' top 5 matched against the other kinds' targets.",
        "",
        "Thresholds (findings.Thresholds) were chosen on seed 0 (the calibration tables of "
        "docs/report.md); seed 1 is held out, and its table is the benchmark's result.",
        "",
        "Variants scored: " + ", ".join(dict.fromkeys(r["variant"] for r in res.pairs)) + ".",
        "",
        f"## Pairs, seed {last}",
        "",
        table(shown),
        "",
        "## Summary",
        "",
        summary_table(res.summary),
        "",
        "Top findings per pair are in identify.json (`pairs[].top`).",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        dest = Path(__file__).resolve().parent.parent / "docs" / "benchmarks" / "identify.md"
        dest.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
