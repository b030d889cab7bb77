"""Config dataclasses as the one source of truth: field docs, value limits, validation.

A config field's type, default and docstring are what a user sees everywhere:
the Python API, ``--help`` (``diffing.cli.options`` turns fields into flags),
``run.toml`` and the docs. Limits on a value are written once, in the field's
metadata (:func:`limits`), and checked both when a config is built from Python
(:func:`validate`, called from ``__post_init__``) and when a flag is parsed.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import math
import textwrap
from collections.abc import Iterable
from functools import cache
from typing import Any

from diffing.errors import DiffingError

LIMITS_KEY = "limits"
"""Key of a field's metadata that holds its :class:`Limits`."""


@dataclasses.dataclass(frozen=True)
class Limits:
    """Bounds on a numeric field; ``None`` means unbounded on that side."""

    gt: float | None = None
    """Value must be strictly greater than this."""
    ge: float | None = None
    """Value must be at least this."""
    le: float | None = None
    """Value must be at most this."""
    finite: bool = True
    """Value must be a finite number (no NaN, no infinity)."""

    def describe(self) -> str:
        """The allowed range in words: "positive", "0 or more", "between 0 and 1"."""
        if self.le is not None and (self.gt is not None or self.ge is not None):
            low = self.gt if self.gt is not None else self.ge
            edge = " (exclusive)" if self.gt is not None else ""
            return f"between {_num(low)}{edge} and {_num(self.le)}"
        if self.gt is not None:
            return "positive" if self.gt == 0 else f"greater than {_num(self.gt)}"
        if self.ge is not None:
            return "0 or more" if self.ge == 0 else f"at least {_num(self.ge)}"
        if self.le is not None:
            return f"at most {_num(self.le)}"
        return "a finite number"

    def problem(self, value: Any) -> str | None:
        """Why ``value`` breaks these limits, or None when it does not (None values pass)."""
        if value is None or isinstance(value, bool):
            return None
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            if not isinstance(v, (int, float)):
                continue
            if self.finite and not math.isfinite(v):
                return f"must be a finite number (got {v})"
            if (
                (self.gt is not None and not v > self.gt)
                or (self.ge is not None and not v >= self.ge)
                or (self.le is not None and not v <= self.le)
            ):
                return f"must be {self.describe()} (got {_num(v)})"
        return None


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


def limits(**bounds: Any) -> dict[str, Limits]:
    """Field metadata carrying value limits: ``field(default=8, metadata=limits(gt=0))``."""
    return {LIMITS_KEY: Limits(**bounds)}


def validate(config: Any) -> None:
    """Raise a :class:`DiffingError` naming the first field of ``config`` outside its limits.

    Every float field must be finite even without declared limits: a NaN that enters a
    config silently turns every number downstream into NaN.
    """
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        lim = f.metadata.get(LIMITS_KEY)
        if lim is None and isinstance(value, float):
            lim = Limits()
        why = lim.problem(value) if lim is not None else None
        if why:
            raise DiffingError(f"{type(config).__name__}.{f.name} {why}")


@cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring written under each field of a dataclass (and of its dataclass bases)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass) or klass is object:
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        body = ast.parse(source).body[0].body
        for stmt, nxt in zip(body, body[1:]):
            if (
                isinstance(stmt, ast.AnnAssign)
                and isinstance(stmt.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[stmt.target.id] = inspect.cleandoc(nxt.value.value)
    return docs


def default_of(f: dataclasses.Field) -> Any:
    """A field's default value (calling its factory), or ``dataclasses.MISSING``."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def flag_name(name: str) -> str:
    """The flag of a field: ``dict_size`` -> ``--dict-size``."""
    return "--" + name.replace("_", "-")


def command_line(
    config: Any,
    *,
    positionals: Iterable[str] = (),
    exclude: Iterable[str] = (),
    flags: dict[str, str | tuple[str, ...]] | None = None,
    off_flags: dict[str, str] | None = None,
) -> list[str]:
    """The arguments that rebuild ``config`` from its class's defaults (the inverse of parsing).

    Fields equal to their default are left out, so the command stays short; ``positionals``,
    ``exclude`` and ``flags`` are those the command line was built with
    (:func:`diffing.cli.options.add_options`).
    """
    flags = flags or {}
    skip = set(exclude)
    out = [str(getattr(config, n)) for n in positionals if getattr(config, n) is not None]
    for f in dataclasses.fields(config):
        if f.name in skip or f.name in positionals or not f.init:
            continue
        value, default = getattr(config, f.name), default_of(f)
        if isinstance(value, tuple) and isinstance(default, list | tuple):
            value = list(value)
        if value == (list(default) if isinstance(default, tuple) else default) or value is None:
            continue
        if isinstance(value, bool) and f.name in (off_flags or {}):
            out.append(off_flags[f.name])  # differs from the default: it is off
            continue
        names = flags.get(f.name) or flag_name(f.name)
        names = (names,) if isinstance(names, str) else tuple(names)
        if isinstance(value, bool):
            want = [n for n in names if n.startswith("--no-") != value]
            out.append(want[0] if want else ("--no-" + names[0][2:]))
        elif isinstance(value, list | tuple):
            out += [names[0], *map(str, value)]
        else:
            out += [names[0], str(value)]
    return out
