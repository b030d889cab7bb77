"""The base of every typed report result, and the small records several sections share.

Every report section (``weights``, ``kl``, ``refusal_link``, ...) is a pydantic model in one
of the ``results_*`` modules; report.json's schema (``diffing/report/schema.json``) is
generated from them, and each field's docstring becomes its description there.

Conventions, the same for every model:

- A statistic is :data:`Num` (``float | None``): ``None`` when it was not measured, and a
  NaN or infinity kept as it is while the report is built (the strict writer turns it
  into ``null`` and lists its path under ``non_finite``; see :mod:`diffing.report.nonfinite`).
- Validation is strict (no string read as a number, no ``True`` read as ``1``): the report
  is the package's own output, so a wrong type is a bug to name, not a value to guess.
- Keys a model does not declare are kept (``extra="allow"``): a method may record more
  than the report promises, and report.json keeps it.
"""

from __future__ import annotations

from typing import Any

from diffing.typed import Num, Result

JsonDict = dict[str, Any]
"""A JSON object whose keys the report does not promise (kept as written)."""


class TokenScore(Result):
    """A token with a score (ADL promoted/suppressed tokens, a crosscoder latent's logit lens)."""

    token: str
    """The token as the tokenizer decodes it."""
    id: int | None = None
    """Its token id."""
    score: Num = None
    """Its score (logit-lens logit of the direction or latent)."""


class LensToken(Result):
    """One token of a logit-lens readout."""

    token: str
    """The token as the tokenizer decodes it."""
    id: int | None = None
    """Its token id."""
    logit: Num = None
    """The logit the direction gives it through the model's unembedding."""


class LogitLens(Result):
    """A direction read through the models' unembeddings, largest logit first."""

    finetuned: list[LensToken] = []
    """Through the fine-tuned model's final norm and unembedding."""
    base: list[LensToken] | None = None
    """Through the base model's (when recorded)."""


class Context(Result):
    """A window of tokens around the position where a latent or direction fires most."""

    activation: Num = None
    """The latent's activation at that position."""
    token: str | None = None
    """The token at that position."""
    role: str | None = None
    """Its role (text, system, user, assistant, template)."""
    tokens: list[str] | None = None
    """The window's tokens."""
    roles: list[str] | None = None
    """The role of each token of the window."""
    index_in_window: int | None = None
    """Where the firing token sits in ``tokens``."""
    text: str | None = None
    """The window as one string."""


def finite(value: Num) -> bool:
    """Whether a statistic is measured and finite (a NaN or infinity is never a finding)."""
    return value is not None and value == value and abs(value) != float("inf")


def finite_or(value: Num, default: float) -> float:
    """``value`` when it is measured and finite, else ``default`` (for ranking: never rank on NaN)."""
    return value if finite(value) else default  # type: ignore[return-value]


def value_or(value: Num, default: float) -> float:
    """``value``, or ``default`` when it was not measured (a NaN stays NaN: the caller decides)."""
    return default if value is None else value


def or_nan(value: Num) -> float:
    """``value``, with a missing one as NaN (what a plot draws as a gap)."""
    return float("nan") if value is None else value
