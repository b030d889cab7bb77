"""The JSON schema of report.json, generated from the typed results, and validation against them.

The schema shipped as ``diffing/report/schema.json`` is generated from
:class:`~diffing.report.results.ReportResults` (each field's docstring is its
description); regenerate it after changing a result model::

    python -m diffing.report.schema

``tests/test_report_schema.py`` checks that the shipped file is current. Validation uses
the models themselves (pydantic), so it always runs; the schema is for readers of
report.json in other languages.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic.json_schema import GenerateJsonSchema

if TYPE_CHECKING:
    from diffing.report.results import ReportResults

SCHEMA_PATH = Path(__file__).with_name("schema.json")
"""Where the schema lives inside the package."""

SCHEMA_ID = "https://model-diffing/report.schema.json"
"""The schema's ``$id``."""


class _ReportSchema(GenerateJsonSchema):
    """Draft 2020-12, with ``oneOf: [..., null]`` for a value that may be null and no per-field titles."""

    def nullable_schema(self, schema: Any) -> dict:
        """A section (or value) that is null when it was not measured: exactly one of the two."""
        inner = self.generate_inner(schema["schema"])
        if inner == {"type": "null"}:
            return inner
        return {"oneOf": [inner, {"type": "null"}]}

    def field_title_should_be_set(self, schema: Any) -> bool:
        """Field titles repeat the key; the description says what it is."""
        return False


def generate_schema() -> dict:
    """report.json's JSON schema (draft 2020-12), generated from the result models."""
    from diffing.report.results import ReportResults

    body = ReportResults.model_json_schema(schema_generator=_ReportSchema)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID, **body}


def schema_text() -> str:
    """The schema as the text of ``schema.json``."""
    return json.dumps(generate_schema(), indent=2, ensure_ascii=False) + "\n"


@lru_cache(maxsize=1)
def load_schema() -> dict:
    """The shipped report.json schema (JSON Schema draft 2020-12)."""
    return json.loads(SCHEMA_PATH.read_text())


def validate_report(report: dict) -> ReportResults:
    """``report`` as typed :class:`~diffing.report.results.ReportResults`, or a :class:`DiffingError` naming
    the first path that does not match (a report.json read back, or a report dict about to be written)."""
    from diffing.report.results import validate_results

    return validate_results(report)


def main() -> None:
    """Write ``diffing/report/schema.json`` from the result models."""
    SCHEMA_PATH.write_text(schema_text())
    print(f"wrote {SCHEMA_PATH}")


if __name__ == "__main__":
    main()
