"""Small helpers the report's renderers share: tolerant number reading and display formatting.

Section results come from several method modules; these helpers read them without
assuming more than docs/report.md promises (a role breakdown may map a role to a
number or to a dict of numbers; a missing number is NaN, never an exception).
"""

from __future__ import annotations

import math
from typing import Any

from diffing.io import json_default, to_jsonable


class SkipSection(Exception):
    """Raised by a report step that cannot run, with a reason the user should read (not a bug)."""


def role_items(by_role: Any) -> list[tuple[str, Any]]:
    """``(role, value)`` pairs from a dict keyed by role or a list of ``{"role": ...}`` records."""
    if isinstance(by_role, dict):
        return [(str(k), v) for k, v in by_role.items()]
    if isinstance(by_role, list):
        return [(str(e.get("role")), e) for e in by_role if isinstance(e, dict) and "role" in e]
    return []


def fmt_pct(x: float) -> str:
    """A fraction as a percentage: 0.0123 -> '1.2%'; NaN -> 'n/a'."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    pct = 100.0 * x
    return f"{pct:.0f}%" if abs(pct) >= 10 else f"{pct:.2g}%"


def fmt_num(x: Any, digits: int = 3) -> str:
    """A number with ``digits`` significant digits; strings pass through; None -> '-'.

    A non-finite float shows as ``NaN``/``inf``: it is a broken statistic, not a missing one.
    """
    if isinstance(x, str):
        return x
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float) and not math.isfinite(x):
        return "NaN" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    if x is None:
        return "-"
    v = float(x)
    if math.isfinite(v) and v == int(v) and abs(v) < 1e7:  # counts stay whole numbers
        return str(int(v))
    return f"{v:.{digits}g}"


def token_text(token: Any) -> str:
    """A token for display: quoted, with whitespace made visible (leading space as '␣')."""
    s = str(token)
    s = s.replace("Ġ", " ").replace("▁", " ").replace("\n", "\\n")
    s = "".join(c if c.isprintable() or c == " " else f"\\x{ord(c):02x}" for c in s)
    if s.startswith(" "):
        s = "␣" + s[1:]
    return f"'{s}'"


def jsonable(obj: Any) -> Any:
    """Recursively turn tensors, numpy values, tuples and dataclasses into plain JSON values.

    Non-finite floats are kept: the findings must see them (a NaN KL is a broken run,
    not a missing measure), and the strict writer (:func:`diffing.io.dumps`) stores them
    as ``null`` with their paths under ``non_finite``.
    """
    return to_jsonable(obj, default=_lenient)


def _lenient(obj: Any) -> Any:
    """Known types as JSON values; anything else as its string (a report never fails on a label)."""
    try:
        return json_default(obj)
    except TypeError:
        return str(obj)
