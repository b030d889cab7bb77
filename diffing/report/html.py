"""The jinja2 environment the page is rendered with: templates, autoescaping, number filters.

Security rule: every string that came from a model, a tokenizer or a data file reaches the
page through a template expression, and every template is autoescaped (``<``, ``>``, ``&``,
``"`` and ``'`` become entities), so no renderer escapes by hand and none marks a string
as safe. The templates and the style sheet live in ``diffing/report/templates/`` inside the
package (shipped as package data) and are found through the package loader, so an
installed wheel renders the same page. Figures are PNGs embedded as base64 ``data:`` URIs
and the style sheet is inlined: the page is one self-contained file.
"""

from __future__ import annotations

import base64
from functools import lru_cache
from importlib import resources
from typing import Any

import jinja2

from diffing.report.util import fmt_num, fmt_pct, token_text

TEMPLATES = "templates"
"""Folder of the templates and the style sheet inside the ``diffing.report`` package."""

CSS_NAME = "report.css"
"""The style sheet the page template inlines."""


def _present(value: Any) -> bool:
    """False for None and for a jinja2 undefined (a key the report does not have)."""
    return value is not None and not isinstance(value, jinja2.Undefined)


def is_numeric(value: Any) -> bool:
    """A number shown right-aligned (a bool is a yes/no, not a number)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def num_filter(value: Any, missing: str = "-", digits: int = 3) -> str:
    """A number with ``digits`` significant digits; ``missing`` when absent; NaN/inf spelled out."""
    return fmt_num(value, digits) if _present(value) else missing


def pct_filter(value: Any) -> str:
    """A fraction as a percentage (``0.0123`` -> ``1.2%``); 'n/a' when absent or not a number."""
    if not is_numeric(value):
        return "n/a"
    return fmt_pct(float(value))


def tok_filter(value: Any) -> str:
    """A token for display: quoted, whitespace made visible (leading space as '␣')."""
    return token_text(value if _present(value) else "")


def data_uri(png: bytes) -> str:
    """A PNG as a ``data:image/png;base64,...`` URI."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The one environment: package templates, autoescaping on for every template, the filters."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("diffing.report", TEMPLATES),
        # on for the .html.j2 templates and for any other name (default); the style sheet has no expressions
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("html", "j2"),
            disabled_extensions=(),
            default_for_string=True,
            default=True,
        ),
        undefined=jinja2.ChainableUndefined,  # an absent key reads as empty, like a skipped field
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(num=num_filter, pct=pct_filter, tok=tok_filter, data_uri=data_uri)
    env.tests.update(numeric=is_numeric, present=_present)
    env.globals["kv_items"] = kv_items
    return env


def css() -> str:
    """The style sheet as shipped in the package (what the page inlines)."""
    return resources.files("diffing.report").joinpath(TEMPLATES, CSS_NAME).read_text("utf-8")


def render(template: str, **context: Any) -> str:
    """Render one of the package's templates with ``context``."""
    return environment().get_template(template).render(**context)


def kv_items(d: Any, keys: list[str] | None = None) -> list[tuple[str, Any]]:
    """The scalar entries of ``d`` as ``(key, value)`` for a definition list.

    Nested dicts are flattened with dots (``fvu.base``); a short list of scalars becomes one
    comma-separated value; longer lists are left to the section's tables.
    """
    flat: list[tuple[str, Any]] = []

    def walk(prefix: str, v: Any) -> None:
        if isinstance(v, dict):
            for k, sub in v.items():
                walk(f"{prefix}.{k}" if prefix else str(k), sub)
        elif not isinstance(v, list):
            flat.append((prefix, v))
        elif len(v) <= 8 and all(isinstance(x, (int, float, str)) for x in v):
            flat.append((prefix, ", ".join(fmt_num(x) for x in v)))

    if isinstance(d, dict):
        walk("", {k: d[k] for k in (keys or d) if k in d})
    return flat
