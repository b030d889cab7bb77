"""Run one experiment: ``python -m experiments.run NAME [--dry-run] [--out DIR] [--config FILE]``.

Without ``--dry-run`` it runs the paper-scale setup of ``experiments/NAME/config.toml``
(GPU, hours; see the experiment's README). With ``--dry-run`` it swaps the models
for tiny random ones of the same family and the data for a few synthetic batches,
then runs the same pipeline on a CPU in seconds: every step, every output file.
``results.json`` in the output folder holds the numbers to compare with the README.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
from pathlib import Path

from experiments.common import experiment_names, load_config, torch_threads, write_results


def run_experiment(
    name: str,
    *,
    dry_run: bool = False,
    out: str | Path | None = None,
    config: str | Path | None = None,
    progress=print,
) -> dict:
    """Run experiment ``name`` and return its results (also written to ``OUT/results.json``)."""
    cfg = load_config(name, dry_run=dry_run, path=config)
    if out is None:
        out = Path(tempfile.mkdtemp(prefix=f"{name}-dry-")) if dry_run else Path("runs") / name
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    module = importlib.import_module(f"experiments.{name}.run")
    with torch_threads(1 if dry_run else None):
        results = module.run(cfg, out, progress=progress)
    results = {"experiment": name, "dry_run": dry_run, "out": str(out), **results}
    write_results(out, results)
    if progress:
        progress(f"results: {out / 'results.json'}")
    return results


def build_parser() -> argparse.ArgumentParser:
    """The runner's arguments."""
    p = argparse.ArgumentParser(
        prog="python -m experiments.run", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("name", choices=experiment_names(), help="experiment folder under experiments/")
    p.add_argument(
        "--dry-run", action="store_true", help="tiny random models and synthetic data, CPU, seconds"
    )
    p.add_argument(
        "--out", help="output folder (default: runs/NAME, or a temporary folder for --dry-run)"
    )
    p.add_argument("--config", help="a config.toml to use instead of experiments/NAME/config.toml")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; user errors print one line, like the ``diffing`` CLI."""
    from diffing.errors import DiffingError

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    args = build_parser().parse_args(argv)
    if args.dry_run:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a dry run never needs the network
    try:
        run_experiment(args.name, dry_run=args.dry_run, out=args.out, config=args.config)
    except DiffingError as err:
        print(f"experiments: error: {err}", file=sys.stderr)
        return 2
    return 0


def script_main(name: str) -> int:
    """``python experiments/NAME/run.py [--dry-run] ...``: the same as ``python -m experiments.run NAME``."""
    return main([name, *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
