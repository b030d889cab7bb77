"""The one exception type users see.

Every failure a user can fix (bad path, mismatched models, empty prompt file, ...)
is raised as a :class:`DiffingError` whose message names the problem and what to
do. The CLI prints it as a single line; notebooks see a short, readable error
instead of a traceback from deep inside torch.
"""

from __future__ import annotations


class DiffingError(Exception):
    """A problem with the user's input or environment, with a message saying how to fix it."""
