"""Building blocks of the method sections' renderers: escaping for Markdown, token pills, contexts.

Every model-produced string goes through :func:`~diffing.report.html.esc` (HTML) or
:func:`md` (Markdown) here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from diffing.report.html import Raw, esc
from diffing.report.sections import context_html
from diffing.report.util import token_text


def md(text: object) -> str:
    """Neutralise Markdown/HTML control characters in model-produced text (one line)."""
    s = str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    for ch in ("\\", "`", "*", "_", "[", "]", "|"):
        s = s.replace(ch, "\\" + ch)
    return s.replace("\n", " ")


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
    html: Callable[[dict], str]
    """Section dict -> HTML body (escaped)."""
    markdown: Callable[[dict], list[str]]
    """Section dict -> Markdown lines (escaped), without the heading."""
    citation: tuple[str, str, str] | None
    """(method, citation, link) listed under Methods."""


def gen(text: object) -> Raw:
    """A generated text in the monospace generation style, escaped."""
    return Raw(f'<span class="gen">{esc("" if text is None else text)}</span>')


def lens_tokens(lens: object, n: int = 8) -> list[str]:
    """Token strings of a logit lens (``{"finetuned": [...]}`` or a list of ``{token, ...}``)."""
    if isinstance(lens, dict):
        lens = lens.get("finetuned") or []
    return [token_text(t.get("token") if isinstance(t, dict) else t) for t in (lens or [])[:n] if t]


def pills(tokens: list[str]) -> str:
    """Tokens as escaped pills ("-" when there are none)."""
    return "".join(f'<span class="pill">{esc(t)}</span>' for t in tokens) or "-"


def contexts_html(ctxs: object) -> str:
    """The first three activating contexts, highlighted."""
    return "".join(context_html(c) for c in (ctxs or [])[:3] if isinstance(c, dict))
