"""report.md: the findings and the key numbers as Markdown (for a README, an issue, or a terminal)."""

from __future__ import annotations

from diffing.report import lens_sections
from diffing.report.method_html import md as _md
from diffing.report.method_html import pct
from diffing.report.nonfinite import listed
from diffing.report.util import token_text


def render_markdown(report: dict) -> str:
    """Findings (linked to the HTML page's anchors) followed by a short table per section that ran."""
    m = report.get("models") or {}
    lines = [
        "# What did fine-tuning change?",
        "",
        f"Base: `{m.get('base', '?')}`  ",
        f"Fine-tuned: `{m.get('finetuned', '?')}`",
        "",
        "## Findings",
        "",
    ]
    for i, f in enumerate(report.get("findings") or [], 1):
        lines.append(
            f"{i}. **{_md(f.get('title'))}** ([evidence](index.html{f.get('anchor', '')}))  "
        )
        if f.get("detail"):
            lines.append(f"   {_md(f['detail'])}")
    if not report.get("findings"):
        lines.append("No section produced a finding.")
    broken, more = listed(report)
    if broken:
        lines += ["", "**Non-finite statistics (the model or data is broken):**", ""]
        lines += [f"- `{p}`: {k}" for p, k in broken]
        lines += [f"- and {more} more (report.json lists every one)"] if more else []
    lines += ["", "## Steps", "", "| step | status | reason |", "|---|---|---|"]
    for name, st in (report.get("sections") or {}).items():
        lines.append(f"| {name} | {st.get('status')} | {_md(st.get('reason') or '')} |")
    mods = (report.get("weights") or {}).get("modules") or []
    if mods:
        lines += ["", "## Largest weight changes", "", "| module | relative change |", "|---|---|"]
        lines += [f"| {_md(x.get('name'))} | {pct(x.get('relative_change'))} |" for x in mods[:10]]
    adl = report.get("adl") or {}
    if adl.get("promoted_tokens"):
        toks = ", ".join(_md(token_text(t.get("token"))) for t in adl["promoted_tokens"][:10])
        lines += [
            "",
            f"## Activation Difference Lens (layer {adl.get('layer')})",
            "",
            f"Promoted: {toks}",
        ]
    rates = ((report.get("refusal") or {}).get("refusal_rate")) or {}
    if rates:
        lines += [
            "",
            "## Refusal rate",
            "",
            "| prompts | baseline | ablation | addition |",
            "|---|---|---|---|",
        ]
        for split, v in rates.items():
            if isinstance(v, dict):
                cells = " | ".join(pct(v.get(k)) for k in ("baseline", "ablation", "addition"))
                lines.append(f"| {split} | {cells} |")
    lines += lens_sections.render_markdown(report)
    rep = report.get("reproduce") or {}
    if rep.get("command"):
        lines += ["", "## Reproduce", "", "```", rep["command"], "```"]
    return "\n".join(lines) + "\n"
