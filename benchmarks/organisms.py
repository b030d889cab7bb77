"""Benchmark: wall and CPU time of ``diffing organism build`` (the build-time targets).

Targets: ``diffing organism build OUT --fast`` in at most 90 s and the full build
(``--variants all``) in at most 8 minutes on 2 CPU cores. Each run is a fresh build in a new
folder, in its own process (imports included), timed from outside like ``/usr/bin/time``.

Machine speed drifts (on the shared 2-core build machine by ~20% within an hour), so a
change is judged side by side: ``--compare DIR`` runs the same build from another checkout
(``git worktree add DIR REV``) in alternation with this one, and the ratio is of the medians.

    python -m benchmarks.organisms [--full] [--repeats 2] [--compare DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
"""This checkout (the one whose ``diffing`` is benchmarked by default)."""


def build_once(tree: Path, full: bool, out: Path) -> dict:
    """One fresh build with ``tree``'s ``diffing`` (and recipe); wall, CPU and the manifest's stages."""
    code = (
        "import sys; from diffing.cli.main import main; "
        f"sys.exit(main(['organism', 'build', {str(out)!r}] + ({[] if full else ['--fast']!r})))"
    )
    env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(  # cwd: ``-c`` puts the working folder first on sys.path
        [sys.executable, "-c", code], env=env, cwd=tree, capture_output=True, text=True
    )
    if proc.returncode:
        raise SystemExit(f"the build from {tree} failed:\n{proc.stderr[-3000:]}")
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    manifest = json.loads((out / "organism.json").read_text())
    return {
        "wall": round(wall, 1),
        "cpu": round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 1),
        "stages": manifest["build_seconds"]["stages"],
        "targets_met": manifest["targets_met"],
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="the full build (default: --fast)")
    ap.add_argument("--repeats", type=int, default=2, help="builds per checkout")
    ap.add_argument("--compare", type=Path, help="another checkout to alternate with this one")
    args = ap.parse_args(argv)
    trees = {"this": HERE} | ({"compare": args.compare.resolve()} if args.compare else {})
    runs: dict[str, list[dict]] = {name: [] for name in trees}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for name, tree in trees.items():
                res = build_once(tree, args.full, Path(tmp) / f"{name}-{r}")
                runs[name].append(res)
                print(f"{name} #{r}: {json.dumps(res)}", flush=True)
    for name, rs in runs.items():
        print(
            f"{name}: median wall {statistics.median(x['wall'] for x in rs):.1f} s, "
            f"median CPU {statistics.median(x['cpu'] for x in rs):.1f} s"
        )
    if args.compare:
        ratio = statistics.median(x["wall"] for x in runs["this"]) / statistics.median(
            x["wall"] for x in runs["compare"]
        )
        print(f"this / compare, medians of wall time: {ratio:.2f}")


if __name__ == "__main__":
    main()
