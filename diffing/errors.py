"""The one exception type users see.

Every failure a user can fix (bad path, mismatched models, empty prompt file, ...)
is raised as a :class:`DiffingError` whose message names the problem and what to
do. The CLI prints it as a single line; notebooks see a short, readable error
instead of a traceback from deep inside torch.

The library is used from Python as much as from the command line, so a message
names the setting to change by its config field or argument name, written in single
backticks (`kl_threshold`), and lists those names in ``fields``; the CLI rewrites each
one into its flag (``--kl-threshold``) when it prints the error.
"""

from __future__ import annotations

from collections.abc import Iterable


class DiffingError(Exception):
    """A problem with the user's input or environment, with a message saying how to fix it.

    ``fields`` are the config fields or arguments the message names, each written in
    single backticks (a switch as `name=True`), for the CLI to show as flags.
    """

    def __init__(self, message: str = "", *, fields: Iterable[str] = ()):
        super().__init__(message)
        self.fields: tuple[str, ...] = tuple(fields)
        """Names of the settings the message refers to (config fields or function arguments)."""
