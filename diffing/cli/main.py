"""The ``diffing`` command: a thin layer over the Python API.

Each command group lives in its own module under ``diffing/cli/`` with a
``register(subparsers)`` function; handlers receive the parsed arguments and
return an exit code. Heavy imports happen inside handlers so ``--help`` is fast.
Every user error is one line on stderr and a non-zero exit; ``--debug`` shows
the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import re
import sys
from typing import NoReturn

import diffing
from diffing.errors import DiffingError
from diffing.io import claim_out_dir

COMMAND_MODULES = (
    "inspect",
    "organism",
    "harvest",
    "crosscoder",
    "refusal",
    "stats",
    "amplify",
    "lens",
    "analyze",
)
"""Command-group modules under ``diffing.cli``, in the order ``--help`` lists them."""


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line naming the option (subcommands inherit it)."""

    def error(self, message: str) -> NoReturn:
        """Print ``diffing: error: --flag must be ...`` on one line and exit 2 (argparse adds a usage block)."""
        message = re.sub(r"^argument (\S+?): must be", r"\1 must be", message)
        # the same prefix as every other user error, so scripts match one pattern
        self.exit(2, f"{self.prog.split()[0]}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (also used to generate docs/cli.md)."""
    parser = Parser(
        prog="diffing",
        description="What did fine-tuning change inside a language model? "
        "Compare a base checkpoint with its fine-tuned version.",
    )
    _add_global_options(parser, shown=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        if importlib.util.find_spec(f"diffing.cli.{name}") is not None:
            importlib.import_module(f"diffing.cli.{name}").register(sub)
    for command in _subcommands(parser):
        _add_global_options(command, shown=False)
    return parser


GLOBAL_FLAGS = {
    "--debug": "show full tracebacks on errors",
    "--quiet": "no progress bars and no progress messages (errors only)",
}
"""The switches every command takes, before or after its name: flag -> help."""


def _add_global_options(parser: argparse.ArgumentParser, *, shown: bool) -> None:
    """``--version`` and :data:`GLOBAL_FLAGS` on ``parser``.

    On a sub-command (``shown`` False) they default to ``SUPPRESS``: a flag given there
    sets the value, and one left out keeps whatever the main parser set (argparse
    copies a sub-command's values over the main namespace). Their help is kept to the
    main parser's, so each command's help lists its own options only.
    """
    hidden = {} if shown else {"default": argparse.SUPPRESS, "help": argparse.SUPPRESS}
    version = f"diffing {diffing.__version__}"
    parser.add_argument(
        "--version",
        action="version",
        version=version,
        **({} if shown else {"help": argparse.SUPPRESS}),
    )
    for flag, help_text in GLOBAL_FLAGS.items():
        parser.add_argument(flag, action="store_true", **{"help": help_text, **hidden})


def _subcommands(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every sub-command parser below ``parser``, at any depth."""
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):  # aliases share one parser
                out += [sub, *_subcommands(sub)]
    return out


def _setup_output(quiet: bool) -> None:
    """Messages through ``logging`` on stderr; ``--quiet`` silences them and every progress bar."""
    import logging

    from diffing.progress import set_quiet

    set_quiet(quiet)  # for this command only: a later call in the same process starts afresh
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="diffing: %(message)s",
        stream=sys.stderr,
    )
    # the libraries we call are chatty at INFO; only the toolkit's own messages are shown
    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("diffing").setLevel(logging.WARNING if quiet else logging.INFO)


def _values(args: argparse.Namespace) -> list[str]:
    """Every string argument value of the run (list options flattened), except its output."""
    out = []
    for name, value in vars(args).items():
        if name not in ("out", "claim_out", "handler"):
            out += [
                v for v in (value if isinstance(value, list) else [value]) if isinstance(v, str)
            ]
    return out


def _input_paths(args: argparse.Namespace) -> list[str]:
    """Every argument value of the run that names an existing file or folder, except its output."""
    return [v for v in _values(args) if v and os.path.exists(os.path.expanduser(v))]


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``diffing`` console script."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except (
        SystemExit
    ) as exc:  # --help, --version, usage errors: an exit code, as for every other outcome
        return exc.code if isinstance(exc.code, int) else 2
    if not getattr(args, "handler", None):
        parser.print_help()
        return 0 if args.command is None else 2
    _setup_output(args.quiet)
    try:
        if any(str(v).startswith("organism") for v in _values(args)):
            import diffing.organisms  # noqa: F401 - registers the organism:NAME data specs

        if getattr(args, "claim_out", None) and getattr(args, "out", None):
            claim_out_dir(args.out, args.claim_out, inputs=_input_paths(args), force=args.force)
        return int(args.handler(args) or 0)
    except DiffingError as err:
        if args.debug:
            raise
        from diffing.cli.common import cli_message

        print(f"diffing: error: {cli_message(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "diffing: interrupted; finished work is kept and the same command resumes it",
            file=sys.stderr,
        )
        return 130
    except Exception as err:  # noqa: BLE001 - the CLI's promise: one line, never a traceback
        if args.debug:
            raise
        print(
            f"diffing: internal error: {type(err).__name__}: {err} (rerun with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
