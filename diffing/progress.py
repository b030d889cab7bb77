"""One progress bar for every long step (harvest, training, statistics, generation, builds).

A thin layer over tqdm so every bar looks and behaves the same: on stderr, off when
the caller says so or when ``DIFFING_QUIET`` is set, shown only once a step has run
for half a second (a step that fails at once leaves its one-line error alone), and
without the clutter a non-terminal log would get from redraws (tqdm's ``mininterval``).
Messages that are not progress go through :mod:`logging`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

QUIET_ENV = "DIFFING_QUIET"
"""Environment variable that turns every bar off (any non-empty value but ``0``)."""


_quiet_run = False
"""Set by the command line's ``--quiet`` for the command it runs (see :func:`set_quiet`)."""


def set_quiet(value: bool) -> None:
    """Turn every bar off (or back on) for what runs next in this process; ``diffing --quiet`` does."""
    global _quiet_run
    _quiet_run = bool(value)


def quiet() -> bool:
    """Whether bars are turned off: ``--quiet`` on the command line, or ``DIFFING_QUIET`` set."""
    return _quiet_run or os.environ.get(QUIET_ENV, "") not in ("", "0")


def bar(
    iterable: Iterable | None = None,
    *,
    total: float | None = None,
    desc: str | None = None,
    unit: str = "it",
    initial: float = 0,
    enabled: bool = True,
    leave: bool = True,
    **kwargs: Any,
):
    """A tqdm bar (over ``iterable``, or updated by hand with ``total``); silent when not ``enabled``."""
    from tqdm.auto import tqdm

    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        initial=initial,
        disable=not enabled or quiet(),
        leave=leave,
        unit_scale=unit == "tok",
        mininterval=0.5,
        delay=kwargs.pop("delay", 0.5),  # a step that fails or ends at once draws nothing
        dynamic_ncols=True,
        **kwargs,
    )
