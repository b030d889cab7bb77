"""What every method section shares: its place in the page and report.md, Markdown escaping, lenses.

The HTML of a method section is a macro in a template (``templates/lens.html.j2``,
``templates/pca.html.j2``), autoescaped; its Markdown goes through :func:`md` here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from diffing.report.html import pct_filter
from diffing.report.util import token_text


def md(text: object) -> str:
    """Neutralise Markdown/HTML control characters in model-produced text (one line)."""
    s = str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    for ch in ("\\", "`", "*", "_", "[", "]", "|"):
        s = s.replace(ch, "\\" + ch)
    return s.replace("\n", " ")


def pct(value: Any) -> str:
    """A fraction as a percentage for report.md ('n/a' when absent or not a number)."""
    return pct_filter(value)


class MethodSection(NamedTuple):
    """One method's place in the page and in report.md."""

    key: str
    """Report key of its result, its step's name in ``sections`` and its page anchor."""
    label: str
    """Navigation label."""
    title: str
    """Section heading."""
    intro: str
    """One line under the heading: what the method does and whose it is."""
    template: str
    """The template file holding its HTML macro (named like ``key``)."""
    view: Callable[[dict], dict]
    """Section dict -> what its macro renders (figures, derived values)."""
    markdown: Callable[[dict], list[str]]
    """Section dict -> Markdown lines (escaped), without the heading."""
    citation: tuple[str, str, str] | None
    """(method, citation, link) listed under Methods."""


def lens_tokens(lens: object, n: int = 8) -> list[str]:
    """Token strings of a logit lens (``{"finetuned": [...]}`` or a list of ``{token, ...}``)."""
    if isinstance(lens, dict):
        lens = lens.get("finetuned") or []
    return [token_text(t.get("token") if isinstance(t, dict) else t) for t in (lens or [])[:n] if t]
