"""The JSON schema of report.json (shipped as ``diffing/report/schema.json``) and validation against it."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from diffing.errors import DiffingError

SCHEMA_PATH = Path(__file__).with_name("schema.json")
"""Where the schema lives inside the package."""


@lru_cache(maxsize=1)
def load_schema() -> dict:
    """The report.json schema (JSON Schema draft 2020-12)."""
    return json.loads(SCHEMA_PATH.read_text())


def validate_report(report: dict) -> None:
    """Raise :class:`DiffingError` naming the first violation when ``report`` does not match the schema.

    Needs ``jsonschema`` (the ``dev`` extra); without it the check is skipped silently,
    because validation guards the writer, and users only read the file.
    """
    try:
        import jsonschema
    except ModuleNotFoundError:  # pragma: no cover - jsonschema is a dev dependency
        return
    validator = jsonschema.Draft202012Validator(load_schema())
    errors = sorted(validator.iter_errors(report), key=lambda e: list(e.path))
    if errors:
        err = errors[0]
        where = "/".join(str(p) for p in err.path) or "(top level)"
        raise DiffingError(f"report.json does not match its schema at {where}: {err.message}")
