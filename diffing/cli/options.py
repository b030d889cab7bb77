"""Command-line flags generated from config dataclasses.

A command's options are the fields of its config: the field's type gives the
flag's type (``list[...]`` takes several values: ``--layers 6 13``), its default
is shown in the help, its docstring is the help, and its limits
(:func:`diffing.configs.limits`) are checked when the flag is parsed. So
``--help``, ``run.toml`` and the Python API cannot disagree, and a default
changed in the config changes everywhere.

Flags the user did not give are absent from the parsed namespace
(``argparse.SUPPRESS``), so :func:`config_from_args` fills them from the
config's own defaults, or from a config read from a file.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from diffing.configs import LIMITS_KEY, Limits, default_of, field_docs, flag_name

_LIST_TYPES = (list, tuple, Sequence, typing.Sequence)


def _strip_optional(tp: Any) -> Any:
    """``X | None`` -> ``X``."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _converter(base: type, lim: Limits | None) -> Callable[[str], Any]:
    """Parse one value of type ``base`` and check it against the field's limits."""

    def convert(text: str) -> Any:
        try:
            value = base(text)
        except ValueError:
            word = {int: "an integer", float: "a number"}.get(base, base.__name__)
            raise argparse.ArgumentTypeError(f"must be {word}, got {text!r}") from None
        check = lim if lim is not None else (Limits() if base is float else None)
        why = check.problem(value) if check is not None else None
        if why:
            raise argparse.ArgumentTypeError(why)
        return value

    convert.__name__ = base.__name__  # argparse names the type in its messages
    return convert


def bounded(base: type, **bounds: Any) -> Callable[[str], Any]:
    """An argparse ``type=`` for a flag that is no config field: ``bounded(int, gt=0)``; the same
    converter and messages as a config field's ``limits(...)``."""
    return _converter(base, Limits(**bounds) if bounds else None)


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value)) if value else "none"
    return str(value)


def dest_of(name: str, flags: dict | None = None) -> str:
    """Where a field's value lands in the parsed namespace: the field's name, or, for a field whose
    flag was renamed, the renamed flag's (``dtype`` given as ``--store-dtype`` -> ``store_dtype``), so
    it cannot collide with another option of the same command."""
    renamed = (flags or {}).get(name)
    if isinstance(renamed, str):
        return renamed.lstrip("-").replace("-", "_")
    return name


def add_options(
    parser: argparse.ArgumentParser,
    cls: type,
    *,
    only: Iterable[str] | None = None,
    exclude: Iterable[str] = (),
    flags: dict[str, str | tuple[str, ...]] | None = None,
    positionals: Iterable[str] = (),
    required: Iterable[str] = (),
    types: dict[str, Callable[[str], Any]] | None = None,
    off_flags: dict[str, str] | None = None,
    suppress: bool = True,
    title: str | None = None,
) -> list[str]:
    """Add one flag per field of the dataclass ``cls``; returns the field names added.

    ``only`` / ``exclude`` choose the fields (provenance and internal fields stay
    out of the CLI); ``flags`` renames a field's flag (``{"k": "--k"}``); a boolean
    field that is on by default gets ``--name`` and ``--no-name``, or the names given
    as a tuple (``("--train-crosscoder", "--no-crosscoder")``: those starting with
    ``--no-`` turn it off). ``positionals`` are given without a flag, in that order
    (optional when the field has a default, unless named in ``required``). ``types`` replaces the parser of a field's values
    where the command line checks more than the config can (``{"device": device}``: that
    the device exists here). ``off_flags`` gives a boolean that is on by default a single flag
    that turns it off (``{"drop_bos": "--keep-bos"}``). With ``suppress=False`` every field
    lands in the namespace with its default (for options a handler reads directly).
    ``title`` groups the flags in ``--help``.
    """
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    wanted = set(only) if only is not None else None
    skip = set(exclude)
    flags = flags or {}
    target = parser.add_argument_group(title) if title else parser
    positionals = tuple(positionals)
    added = []
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in positionals:
        f = fields[name]
        optional = default_of(f) is not dataclasses.MISSING and name not in set(required)
        parser.add_argument(
            name,
            nargs="?" if optional else None,
            default=argparse.SUPPRESS if suppress else default_of(f),
            help=docs.get(name, "").replace("``", "").replace("%", "%%") or None,
        )
        added.append(name)
    for f in dataclasses.fields(cls):
        if (
            f.name in skip
            or f.name in positionals
            or (wanted is not None and f.name not in wanted)
            or not f.init
        ):
            continue
        tp = _strip_optional(hints[f.name])
        default = default_of(f)
        doc = docs.get(f.name, "").replace("``", "").replace("%", "%%")
        lim = f.metadata.get(LIMITS_KEY)
        unset = argparse.SUPPRESS if suppress else default_of(f)
        kwargs: dict[str, Any] = {"dest": dest_of(f.name, flags), "default": unset}
        origin = typing.get_origin(tp)
        if tp is bool and f.name in (off_flags or {}):
            target.add_argument(off_flags[f.name], dest=f.name, action="store_false",
                                default=unset, help=f"turn off (on by default): {doc}")  # fmt: skip
            added.append(f.name)
            continue
        if tp is bool:
            names = flags.get(f.name) or flag_name(f.name)
            names = (names,) if isinstance(names, str) else tuple(names)
            if default is True and len(names) == 1 and not names[0].startswith("--no-"):
                names = (names[0], "--no-" + names[0][2:])
            on = [n for n in names if not n.startswith("--no-")]
            off = [n for n in names if n.startswith("--no-")]
            group = target.add_mutually_exclusive_group() if on and off else target
            if on:
                group.add_argument(*on, dest=f.name, action="store_true", default=unset,
                                   help=(doc + " (default)" if default is True else doc) or None)  # fmt: skip
            if off:
                group.add_argument(*off, dest=f.name, action="store_false", default=unset,
                                   help=f"the opposite of {on[0]}" if on else f"turn off (on by default): {doc}")  # fmt: skip
            added.append(f.name)
            continue
        else:
            base = tp
            if origin in _LIST_TYPES:
                args = [a for a in typing.get_args(tp) if a is not Ellipsis]
                fixed = origin is tuple and Ellipsis not in typing.get_args(tp)
                kwargs["nargs"] = len(args) if fixed and args else "+"
                base = _strip_optional(args[0]) if args else str
            if typing.get_origin(base) is typing.Literal:
                kwargs["choices"] = list(typing.get_args(base))
                base = type(kwargs["choices"][0])
            if base not in (int, float, str):
                base = str
            kwargs["type"] = (types or {}).get(f.name) or _converter(base, lim)
            kwargs["metavar"] = f.name.upper() if "choices" not in kwargs else None
            if default is not dataclasses.MISSING and default is not None:
                doc = f"{doc} (default: {_show(default)})".strip()
        if default is dataclasses.MISSING:
            kwargs["required"] = True
        kwargs["help"] = doc or None
        target.add_argument(flags.get(f.name) or flag_name(f.name), **kwargs)
        added.append(f.name)
    return added


def given_options(args: argparse.Namespace, cls: type, flags: dict | None = None) -> dict[str, Any]:
    """The fields of ``cls`` the user set on the command line (with their parsed values);
    ``flags`` as given to :func:`add_options`."""
    hints = typing.get_type_hints(cls)
    given = vars(args)
    out = {}
    for f in dataclasses.fields(cls):
        dest = dest_of(f.name, flags)
        if dest not in given:
            continue
        value = given[dest]
        if isinstance(value, list) and typing.get_origin(_strip_optional(hints[f.name])) is tuple:
            value = tuple(value)
        out[f.name] = value
    return out


def config_from_args(
    args: argparse.Namespace,
    cls: type,
    base: Any = None,
    *,
    flags: dict | None = None,
    **fixed: Any,
) -> Any:
    """A ``cls`` from the flags the user gave, over ``base`` (a config read from a file) or the defaults.

    ``fixed`` sets fields the command decides itself (e.g. values from positional arguments);
    ``flags`` as given to :func:`add_options`.
    """
    given = {**given_options(args, cls, flags), **fixed}
    if base is not None:
        return dataclasses.replace(base, **given)
    return cls(**given)
