"""Renderers of the activation-difference PCA and diff-mining sections (HTML and Markdown).

They read the sections :func:`diffing.lens.output.pca_section` and ``mining_section`` write
(keys in docs/report.md); every token and context is escaped by the helpers.
"""

from __future__ import annotations

from diffing.report.html import Raw, esc, table
from diffing.report.method_html import md, pills
from diffing.report.util import fmt_num, fmt_pct, num, token_text

RATIOS_SHOWN = 5
"""Explained-variance ratios listed per layer."""


def _toks(tokens: object, n: int = 8) -> list[str]:
    return [token_text(t) for t in (tokens or [])[:n]]


def _pca_context(c: object) -> Raw:
    """A ``{score, token, before, after}`` context with its token highlighted."""
    if not isinstance(c, dict):
        return Raw("")
    return Raw(
        f'<span class="ctx">{esc(c.get("before", ""))}<span class="tok" '
        f'style="background: rgba(255, 140, 0, 0.85)">{esc(c.get("token", ""))}</span>'
        f"{esc(c.get('after', ''))}</span>"
    )


def pca_html(p: dict) -> str:
    """Per layer: the mean's share, the variance spectrum, and each direction's logit lens (both signs)."""
    body = Raw(
        f"<p>{esc(p.get('positions', '-'))} positions from {esc(p.get('tokens', '-'))} tokens.</p>"
    )
    for lay in p.get("layers") or []:
        ratios = ", ".join(
            fmt_pct(num(x)) for x in (lay.get("explained_variance_ratio") or [])[:RATIOS_SHOWN]
        )
        body += Raw(
            f"<h3>Layer {esc(lay.get('layer'))}</h3><p>The mean difference (the ADL direction) holds "
            f"{esc(fmt_pct(num(lay.get('mean_share'))))} of the difference's energy; the centred "
            f"components explain {esc(ratios or '-')} of its variance.</p>"
        )
        rows = [
            (
                d.get("name"),
                fmt_pct(num(d.get("explained"))),
                Raw(pills(_toks(d.get("promoted")))),
                Raw(pills(_toks(d.get("promoted_negative")))),
                _pca_context(d.get("top_context")),
            )
            for d in lay.get("directions") or []
        ]
        body += table(
            ["direction", "explained", "promotes (+)", "promotes (−)", "top context"], rows
        )
    return body


def pca_md(p: dict) -> list[str]:
    """One line per layer and direction: explained share and promoted tokens."""
    lines = ["| layer | direction | explained | promotes |", "|---|---|---|---|"]
    for lay in p.get("layers") or []:
        for d in lay.get("directions") or []:
            toks = ", ".join(md(t) for t in _toks(d.get("promoted"), 6))
            lines.append(
                f"| {lay.get('layer')} | {md(d.get('name'))} | {fmt_pct(num(d.get('explained')))} | {toks} |"
            )
    return lines


def mining_html(m: dict) -> str:
    """The tokens whose log-probability the fine-tune raises most often, and the NMF clusters."""
    body = Raw(f"<p>{esc(m.get('positions', '-'))} positions mined.</p>")
    rows = [
        (
            Raw(pills([token_text(t.get("token"))])),
            t.get("count"),
            num(t.get("mean_diff")),
        )
        for t in m.get("top_tokens") or []
    ]
    body += Raw("<h3>Most often raised tokens</h3>") + table(
        ["token", "positions in its top-k", "mean raise (nats)"], rows
    )
    clusters = [
        (i + 1, c.get("positions"), Raw(pills(_toks(c.get("tokens"), 10))))
        for i, c in enumerate(m.get("clusters") or [])
    ]
    if clusters:
        body += Raw("<h3>Clusters (NMF)</h3>") + table(["cluster", "positions", "tokens"], clusters)
    return body


def mining_md(m: dict) -> list[str]:
    """The top raised tokens on one line, then one line per cluster."""
    top = ", ".join(md(token_text(t.get("token"))) for t in (m.get("top_tokens") or [])[:10])
    lines = [f"Most often raised: {top or '-'}"]
    for i, c in enumerate(m.get("clusters") or [], 1):
        lines.append(
            f"- cluster {i} ({fmt_num(c.get('positions'))} positions): "
            + ", ".join(md(t) for t in _toks(c.get("tokens"), 8))
        )
    return lines
