"""Arguments shared by the commands: model-pair loading options and checked argparse types.

Every numeric option is checked when it is parsed, so a bad value is a one-line
usage error naming the option, never a crash deep inside torch minutes later.
"""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

from diffing.cli.options import bounded
from diffing.configs import flag_name
from diffing.errors import DiffingError
from diffing.io import check_out_dir, dumps
from diffing.refusal.config import MAX_STRENGTH  # one bound for the CLI and the API

PAIR_POSITIONALS = ("base", "finetuned")
"""PairOptions fields given without a flag."""

FIELD_FLAGS = {
    "pair": "--base/--finetuned",
    "filter_train=False": "--no-filter",
}
"""Fields (or ``field=value`` switches) whose flag is not the field's name with dashes."""


def cli_message(err: DiffingError) -> str:
    """``err``'s message with each setting it names (`field`, `field=True`) shown as its flag.

    The library names config fields and arguments, as a Python user types them; the
    command line prints the flag that sets each one (:func:`diffing.configs.flag_name`,
    or :data:`FIELD_FLAGS`).
    """

    def flag(match: re.Match) -> str:
        token = match.group(1)
        name, _, value = token.partition("=")
        if name not in getattr(err, "fields", ()):
            return match.group(0)
        if token in FIELD_FLAGS:
            return FIELD_FLAGS[token]
        base = FIELD_FLAGS.get(name) or flag_name(name)
        return "--no-" + base[2:] if value == "False" else base

    return re.sub(r"`([A-Za-z_]\w*(?:=\w+)?)`", flag, str(err))


# The checked argparse types of options that are no config field; each is the rule a config
# field states with ``limits(...)``, through the same converter (``diffing.cli.options.bounded``).
integer = bounded(int)
"""Any whole number (e.g. a layer index, where negative counts from the end)."""
positive_int = bounded(int, gt=0)
"""A whole number >= 1 (counts, sizes, steps)."""
nonnegative_int = bounded(int, ge=0)
"""A whole number >= 0 (seeds, optional counts where 0 means none)."""
finite_float = bounded(float)
"""Any finite number (no NaN or infinity)."""
positive_float = bounded(float, gt=0)
"""A finite number > 0 (learning rates, scales, factors)."""
nonnegative_float = bounded(float, ge=0)
"""A finite number >= 0 (coefficients and thresholds where 0 switches a term off)."""
probability = bounded(float, ge=0, le=1)
"""A finite number in [0, 1] (fractions and rates)."""
strength = bounded(float, ge=-MAX_STRENGTH, le=MAX_STRENGTH)
"""A finite intervention strength with |strength| <= MAX_STRENGTH (1 = full ablation)."""


def template_file(text: str) -> str:
    """The contents of a Jinja chat template file (the flag takes the file, the config the template)."""
    path = Path(text).expanduser()
    if not path.is_file():
        raise argparse.ArgumentTypeError(
            f"template file {text!r} does not exist; give a Jinja chat template file"
        )
    return path.read_text()


def token_count(text: str) -> int:
    """A positive token count, with an optional suffix: ``1000``, ``100k``, ``10M``, ``1e6``, ``2B``."""
    t = text.strip().lower()
    mult = {"k": 10**3, "m": 10**6, "g": 10**9, "b": 10**9}.get(t[-1:], 1)
    try:
        value = float(t[:-1] if mult > 1 else t) * mult
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a token count like 100000, 100k or 10M, got {text!r}"
        ) from None
    if not math.isfinite(value) or value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive token count (>= 1), got {text!r}")
    return int(value)


def out_dir(text: str) -> str:
    """An output folder: an existing file at that path is a usage error (see :func:`diffing.io.check_out_dir`)."""
    try:
        check_out_dir(text, "the output folder")
    except DiffingError as err:
        raise argparse.ArgumentTypeError(cli_message(err)) from None
    return text


def device(text: str) -> str:
    """``cpu``, ``auto``, ``cuda``, ``cuda:N``, ``mps``: parsed by torch and checked to exist on this machine."""
    if text == "auto":
        return text
    import torch

    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(
            f"unknown device {text!r}; use cpu, cuda, cuda:N, mps or auto"
        ) from None
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise argparse.ArgumentTypeError(
                f"{text!r} asked for, but this machine has no usable CUDA GPU (or torch was built "
                "without CUDA); use --device cpu"
            )
        if dev.index is not None and dev.index >= n:
            raise argparse.ArgumentTypeError(
                f"{text!r} asked for, but this machine has {n} CUDA GPU(s): cuda:0..cuda:{n - 1}"
            )
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError(f"{text!r} asked for, but MPS is not available here")
    return text


def add_pair_args(p: argparse.ArgumentParser) -> None:
    """``BASE FINETUNED`` plus the loading options every pair command takes (fields of PairOptions)."""
    from diffing.cli.options import add_options
    from diffing.pair_options import PairOptions

    add_options(p, PairOptions, positionals=PAIR_POSITIONALS, required=PAIR_POSITIONALS,
                types={"device": device}, suppress=False)  # fmt: skip


def add_out_arg(
    p: argparse.ArgumentParser, command: str, help: str, *, required: bool = True
) -> None:
    """``--out`` (checked: not a file) and ``--force``; before the handler runs, the folder is claimed
    for ``command`` (``diffing.io.claim_out_dir``): never an input of the run nor another command's
    results unless ``--force``."""
    p.add_argument("--out", type=out_dir, required=required, help=help)
    p.add_argument(
        "--force",
        action="store_true",
        help="write into --out even if it is an input of the run or holds another command's results",
    )
    p.set_defaults(claim_out=command)


def add_remote_arg(p: argparse.ArgumentParser, what: str) -> None:
    """``--remote``: run every trace of the command on NDIF (nnsight remote execution)."""
    p.add_argument(
        "--remote",
        action="store_true",
        help=f"trace {what} on NDIF (nnsight remote execution; hub ids it serves; see docs/scaling.md)",
    )


def load_pair_from_args(args: argparse.Namespace):
    """A :class:`~diffing.models.ModelPair` from the arguments :func:`add_pair_args` added."""
    from diffing.pair_options import load_pair

    return load_pair(args, remote=getattr(args, "remote", False))


def print_json(obj) -> None:
    """Print an object as indented strict JSON: a NaN/infinity prints as null, its path under ``non_finite``."""
    print(dumps(obj, non_finite="null"))
