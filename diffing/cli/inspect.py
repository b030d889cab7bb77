"""``diffing inspect BASE FINETUNED``: load a pair, check it, and show which weights moved."""

from __future__ import annotations

import argparse

from diffing.cli.common import add_pair_args, load_pair_from_args, nonnegative_int, print_json


def register(sub) -> None:
    """Add the ``inspect`` command."""
    p = sub.add_parser(
        "inspect", help="load a pair, check compatibility, list the modules whose weights changed"
    )
    add_pair_args(p)
    p.add_argument(
        "--top",
        type=nonnegative_int,
        default=10,
        help="how many changed modules to list (default 10)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Handler of ``diffing inspect``."""
    from diffing.inspection import format_inspection, inspect_pair

    info = inspect_pair(load_pair_from_args(args), top=args.top)
    print_json(info) if args.json else print(format_inspection(info))
    return 0
