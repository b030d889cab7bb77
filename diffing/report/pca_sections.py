"""The activation-difference PCA and diff-mining sections: their templates' values and their Markdown.

They read the sections :func:`diffing.lens.output.pca_section` and ``mining_section`` write
(keys in docs/report.md); the macros in ``templates/pca.html.j2`` escape every token and context.
"""

from __future__ import annotations

from diffing.report.method_html import md, pct
from diffing.report.sections import context_view
from diffing.report.util import fmt_num, token_text

RATIOS_SHOWN = 5
"""Explained-variance ratios listed per layer."""


def _toks(tokens: object, n: int = 8) -> list[str]:
    return [token_text(t) for t in (tokens or [])[:n]]


def pca_view(p: dict) -> dict:
    """Per layer: the mean's share, the variance spectrum, each direction's logit lens (both signs)."""
    layers = []
    for lay in p.get("layers") or []:
        ratios = lay.get("explained_variance_ratio") or []
        directions = [
            {
                "name": d.get("name"),
                "explained": d.get("explained"),
                "promoted": _toks(d.get("promoted")),
                "promoted_negative": _toks(d.get("promoted_negative")),
                "context": context_view(c) if isinstance(c := d.get("top_context"), dict) else None,
            }
            for d in lay.get("directions") or []
        ]
        layers.append(
            {
                "layer": lay.get("layer"),
                "mean_share": lay.get("mean_share"),
                "ratios": ", ".join(pct(x) for x in ratios[:RATIOS_SHOWN]),
                "directions": directions,
            }
        )
    return {"p": p, "layers": layers}


def pca_md(p: dict) -> list[str]:
    """One line per layer and direction: explained share and promoted tokens."""
    lines = ["| layer | direction | explained | promotes |", "|---|---|---|---|"]
    for lay in p.get("layers") or []:
        for d in lay.get("directions") or []:
            toks = ", ".join(md(t) for t in _toks(d.get("promoted"), 6))
            lines.append(
                f"| {lay.get('layer')} | {md(d.get('name'))} | {pct(d.get('explained'))} | {toks} |"
            )
    return lines


def mining_view(m: dict) -> dict:
    """The tokens whose log-probability the fine-tune raises most often, and the NMF clusters."""
    clusters = [
        (i + 1, c, _toks(c.get("tokens"), 10)) for i, c in enumerate(m.get("clusters") or [])
    ]
    return {"m": m, "clusters": clusters}


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
