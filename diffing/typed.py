"""The base of every typed result the package writes: strict pydantic models whose field
docstrings become the descriptions of report.json's generated schema.

It sits on the lowest floor so that a method can define its output once, as the model the
report embeds, instead of a NamedTuple and a report model with the same fields.

- A statistic is :data:`Num` (``float | None``): ``None`` when it was not measured, and a
  NaN or infinity kept as it is while the report is built (the strict writer turns it
  into ``null``).
- Validation is strict (no string read as a number, no ``True`` read as ``1``): the
  results are the package's own output, so a wrong type is a bug to name, not a value to guess.
- Keys a model does not declare are kept (``extra="allow"``): a method may record more
  than the report promises.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

Num = float | None
"""A statistic: a number (possibly NaN/inf while the report is built), or None when not measured."""


class Result(BaseModel):
    """Base of every typed result: strict types, field docstrings as descriptions, extra keys kept."""

    model_config = ConfigDict(
        extra="allow",
        strict=True,
        use_attribute_docstrings=True,
        populate_by_name=True,
    )
