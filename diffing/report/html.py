"""HTML building blocks and the page: one self-contained file, no network, no JavaScript needed.

Security rule: every string that came from a model, a tokenizer or a data file goes
through :func:`esc` (``html.escape`` with quotes) before it reaches the page. The
helpers here escape every cell and caption themselves; only :class:`Raw` fragments,
built by these helpers, pass through unescaped. Figures are PNGs embedded as base64
``data:`` URIs, the style sheet is inline.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Sequence
from typing import Any

from diffing.report.util import fmt_num


class Raw(str):
    """An HTML fragment built by this module (already escaped); passed through as is."""


def esc(value: Any) -> str:
    """Escape anything for HTML text or a quoted attribute (``<``, ``>``, ``&``, ``"`` and ``'``)."""
    if isinstance(value, Raw):
        return value
    return html.escape(str(value), quote=True)


def cell(value: Any) -> str:
    """A table cell's content: numbers formatted, fragments passed, everything else escaped."""
    if isinstance(value, Raw):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return esc(fmt_num(value))
    return esc("" if value is None else value)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, cls: str = "") -> Raw:
    """A table with escaped headers and cells; numeric cells are right-aligned."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for row in rows:
        tds = []
        for v in row:
            numeric = isinstance(v, (int, float)) and not isinstance(v, bool)
            tds.append(f'<td class="num">{cell(v)}</td>' if numeric else f"<td>{cell(v)}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    if not body:
        return Raw('<p class="muted">(no rows)</p>')
    return Raw(
        f'<table class="{esc(cls)}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
    )


def data_uri(png: bytes) -> str:
    """A PNG as a ``data:image/png;base64,...`` URI."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def figure(png: bytes | None, caption: str) -> Raw:
    """An embedded figure with an escaped caption (nothing when there is no image)."""
    if not png:
        return Raw("")
    return Raw(
        f'<figure><img src="{data_uri(png)}" alt="{esc(caption)}"><figcaption>{esc(caption)}</figcaption></figure>'
    )


def skipped(reason: str) -> Raw:
    """The notice a section shows when it did not run."""
    return Raw(f'<p class="skipped"><strong>skipped:</strong> {esc(reason)}</p>')


def tokens_highlighted(
    tokens: Sequence[Any], acts: Sequence[float] | None, *, peak: float | None = None
) -> Raw:
    """Tokens as inline spans whose background alpha is the activation divided by ``peak``."""
    acts = list(acts or [0.0] * len(tokens))
    top = peak if peak and peak > 0 else max([abs(float(a)) for a in acts] + [1e-9])
    spans = []
    for tok, a in zip(tokens, acts):
        alpha = min(1.0, max(0.0, float(a) / top))
        text = esc(str(tok)).replace("\n", "↵")
        spans.append(
            f'<span class="tok" style="background: rgba(255, 140, 0, {alpha:.2f})" title="{esc(fmt_num(a))}">{text}</span>'
        )
    return Raw('<span class="ctx">' + "".join(spans) + "</span>")


def section(anchor: str, title: str, body: str, *, intro: str = "") -> Raw:
    """A top-level section with an ``id`` the summary links to."""
    intro_html = f'<p class="intro">{esc(intro)}</p>' if intro else ""
    return Raw(f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>{intro_html}{body}</section>')


CSS = """
:root { --fg: #1d2330; --muted: #667085; --line: #e4e7ec; --accent: #3056d3; --bg: #ffffff; --soft: #f6f7f9; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.55 -apple-system, "Segoe UI", "DejaVu Sans", Helvetica, Arial, sans-serif;
       color: var(--fg); background: var(--soft); }
main { max-width: 1080px; margin: 0 auto; padding: 24px 28px 60px; background: var(--bg); min-height: 100vh;
       box-shadow: 0 0 0 1px var(--line); }
h1 { font-size: 26px; margin: 8px 0 4px; }
h2 { font-size: 20px; margin: 36px 0 10px; padding-bottom: 6px; border-bottom: 2px solid var(--line); }
h3 { font-size: 16px; margin: 22px 0 8px; }
a { color: var(--accent); text-decoration: none; } a:hover { text-decoration: underline; }
.muted, .intro { color: var(--muted); }
nav { display: flex; flex-wrap: wrap; gap: 4px 14px; font-size: 13px; margin: 10px 0 6px; }
table { border-collapse: collapse; margin: 8px 0 14px; font-size: 13.5px; width: auto; max-width: 100%; }
th, td { padding: 4px 10px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
th { background: var(--soft); font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tbody tr:nth-child(even) td { background: #fbfbfc; }
ol.findings { padding-left: 0; list-style: none; counter-reset: f; }
ol.findings li { counter-increment: f; margin: 8px 0; padding: 10px 14px 10px 46px; position: relative;
                 border: 1px solid var(--line); border-left: 4px solid var(--accent); border-radius: 6px; background: #fafbff; }
ol.findings li::before { content: counter(f); position: absolute; left: 14px; top: 10px; font-weight: 700; color: var(--accent); }
ol.findings .detail { color: var(--muted); font-size: 13.5px; }
.skipped { background: #fff7e6; border: 1px solid #f5d49a; border-radius: 6px; padding: 8px 12px; }
.non-finite { background: #fdecea; border: 1px solid #f5a3a3; border-radius: 6px; padding: 8px 12px; margin: 8px 0; }
figure { margin: 10px 0 18px; } figure img { max-width: 100%; border: 1px solid var(--line); border-radius: 4px; }
figcaption { color: var(--muted); font-size: 13px; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(460px, 1fr)); gap: 14px; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; background: #fff;
        box-shadow: 0 1px 2px rgba(16, 24, 40, 0.05); }
.card h3 { margin: 2px 0 6px; font-size: 15px; }
.ctx { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 12.5px; white-space: pre-wrap;
       word-break: break-word; display: block; padding: 4px 0; border-bottom: 1px dashed var(--line); }
.tok { border-radius: 2px; }
.pill { display: inline-block; padding: 0 7px; margin: 1px 2px; border-radius: 10px; background: #eef2ff;
        font-family: "DejaVu Sans Mono", Menlo, monospace; font-size: 12.5px; }
.kv { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; font-size: 14px; }
.kv dt { color: var(--muted); } .kv dd { margin: 0; }
pre { background: var(--soft); padding: 10px 12px; border-radius: 6px; overflow-x: auto; font-size: 12.5px; }
.gen { font-family: "DejaVu Sans Mono", Menlo, monospace; font-size: 12.5px; white-space: pre-wrap; }
"""
"""The page's style sheet (inline: the report must open offline)."""


def page(title: str, subtitle: str, nav: Sequence[tuple[str, str]], body: Sequence[str]) -> str:
    """The full HTML document."""
    links = "".join(f'<a href="#{esc(a)}">{esc(t)}</a>' for a, t in nav)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body><main>"
        f'<h1>{esc(title)}</h1><p class="muted">{esc(subtitle)}</p><nav>{links}</nav>'
        + "".join(body)
        + "</main></body></html>\n"
    )
