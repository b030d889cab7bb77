"""The newer method sections (amplification, diff-SAE, refusal link; PCA and mining in
:mod:`diffing.report.pca_sections`): their templates' values, their Markdown, and the list the page walks.

Each section is one :class:`MethodSection`: its report key (also its step's name), its
navigation label, its citation, the template holding its HTML macro, a view from the section's
dict to what that macro renders, and its Markdown lines. :data:`METHOD_SECTIONS` is the list
the page (:mod:`diffing.report.render`) and report.md (:mod:`diffing.report.markdown`) walk,
so a new method adds a macro, a view, a Markdown function and one entry. The templates
escape every model-produced string; the Markdown goes through ``md``.
"""

from __future__ import annotations

from diffing.report import figures
from diffing.report.html import is_numeric
from diffing.report.method_html import MethodSection, lens_tokens, md, pct
from diffing.report.pca_sections import mining_md, mining_view, pca_md, pca_view
from diffing.report.sections import contexts_view, skip_reason
from diffing.report.util import fmt_num

# ---- logit-difference amplification ----


def amplify_view(a: dict) -> dict:
    """Rates per setting, then per α a few prompts with base / fine-tuned / amplified completions."""
    rates = a.get("rates") or []
    has_target = a.get("target") is not None
    return {
        "a": a,
        "rates": rates,
        "target_repr": repr(a.get("target")),
        "figure": figures.amplify_rates(rates) if has_target else None,
        "blocks": a.get("by_alpha") or [],
        "words": amplify_words_view(a),
    }


def amplify_words_view(a: dict) -> dict | None:
    """The emerging words as a table: headers (base, then each α) and per word its shares and rise."""
    words = a.get("emerging_words") or []
    if not words:
        return None
    settings = [s.get("alpha") for s in words[0].get("shares") or []]
    headers = ["word", *("base" if x is None else f"α = {fmt_num(x)}" for x in settings), "rise"]
    rows = [
        [w.get("word"), *(s.get("share") for s in w.get("shares") or []), w.get("rise")]
        for w in words
    ]
    return {"headers": headers, "rows": rows}


def amplify_md(a: dict) -> list[str]:
    """The summary line and, at the largest α, the example completions."""
    lines = [md(a.get("summary", "")), ""]
    words = amplify_words_view(a)
    if words:
        lines += [
            "| " + " | ".join(words["headers"]) + " |",
            "|" + "---|" * len(words["headers"]),
        ]
        lines += [
            f"| {md(r[0])} | " + " | ".join(pct(x) for x in r[1:-1]) + f" | {fmt_num(r[-1])} |"
            for r in words["rows"]
        ]
        lines.append("")
    blocks = a.get("by_alpha") or []
    if blocks:
        last = blocks[-1]
        lines += [
            f"At α = {fmt_num(last.get('alpha'))}:",
            "",
            "| prompt | fine-tuned | amplified |",
            "|---|---|---|",
        ]
        lines += [
            f"| {md(e.get('prompt'))} | {md(e.get('finetuned'))} | {md(e.get('amplified'))} |"
            for e in last.get("examples") or []
        ]
    return lines


# ---- diff-SAE ----


def diff_sae_view(d: dict) -> dict:
    """Headline numbers, the comparison with the crosscoder's chat-only latents, the top latents."""
    comp = d.get("comparison")
    chat_only = (comp or {}).get("chat_only_latents")
    return {
        "d": d,
        "compared": bool(comp) and is_numeric(chat_only) and chat_only > 0,
        "latents": [
            (x, lens_tokens(x.get("logit_lens")), contexts_view(x.get("contexts")))
            for x in d.get("top_latents") or []
        ],
    }


def diff_sae_md(d: dict) -> list[str]:
    """FVU and concentration, then the top latents' shares and lenses."""
    lines = [
        f"Layer {d.get('layer')}, {d.get('n_latents')} latents: FVU {fmt_num(d.get('fvu'))}, "
        f"{d.get('latents_for_half_the_difference')} latents carry half the difference.",
        "",
        "| latent | share | logit lens |",
        "|---|---|---|",
    ]
    lines += [
        f"| {x.get('latent')} | {pct(x.get('share'))} | {', '.join(md(t) for t in lens_tokens(x.get('logit_lens'), 6))} |"
        for x in (d.get("top_latents") or [])[:5]
    ]
    return lines


# ---- crosscoder latents vs the refusal direction ----


ABLATIONS = (
    ("clean", "none (fine-tuned model)"),
    ("latents", "refusal latents removed"),
    ("direction", "direction ablated"),
    ("random", "as many random latents removed"),
)
"""Rows of the ablation comparison: (key, label)."""


def refusal_link_view(r: dict) -> dict:
    """The refusal latents (|cos|, Δ, Latent Scaling flag, lens, contexts) and the ablation comparison."""
    ab = r.get("ablation") or {}
    return {
        "r": r,
        "latents": [
            (x, lens_tokens(x.get("logit_lens")), contexts_view(x.get("contexts")))
            for x in r.get("latents") or []
        ],
        "ablation": ab,
        "ablation_rows": [(label, ab.get(k) or {}) for k, label in ABLATIONS if k in ab],
        "figure": figures.refusal_ablation(ab, list(ABLATIONS)) if ab else None,
    }


def refusal_link_md(r: dict) -> list[str]:
    """The named refusal latents and the ablation table."""
    lats = r.get("latents") or []
    lines = [
        "Refusal latents: "
        + (
            ", ".join(
                f"{x.get('latent')} (cos {fmt_num(x.get('cos_difference'))}, Δ {fmt_num(x.get('delta'))})"
                for x in lats
            )
            or "none"
        ),
        "",
    ]
    ab = r.get("ablation") or {}
    if ab:
        lines += ["| intervention | refusal rate |", "|---|---|"]
        lines += [
            f"| {label} | {pct((ab.get(k) or {}).get('rate'))} |"
            for k, label in ABLATIONS
            if k in ab
        ]
    return lines


METHOD_SECTIONS: tuple[MethodSection, ...] = (
    MethodSection(
        "amplify",
        "Amplification",
        "Logit-difference amplification",
        "Generating from logits_ft + α (logits_ft − logits_base) makes behaviours the fine-tune introduced frequent (Aranguri & McGrath 2025).",
        "lens.html.j2",
        amplify_view,
        amplify_md,
        (
            "Logit-difference amplification",
            "Aranguri & McGrath 2025, Discovering undesired rare behaviors via model diff amplification",
            "",
        ),
    ),
    MethodSection(
        "diff_sae",
        "Diff-SAE",
        "Diff-SAE",
        "A BatchTopK sparse autoencoder trained on the activation differences x_ft − x_base.",
        "lens.html.j2",
        diff_sae_view,
        diff_sae_md,
        None,  # BatchTopK SAEs are cited already
    ),
    MethodSection(
        "refusal_link",
        "Refusal latents",
        "Crosscoder latents vs the refusal direction",
        "Which crosscoder latents' decoders point along the refusal direction, and does removing them stop refusal?",
        "lens.html.j2",
        refusal_link_view,
        refusal_link_md,
        None,  # crosscoders and the refusal direction are cited already
    ),
    MethodSection(
        "pca",
        "PCA",
        "Activation-difference PCA",
        "Principal directions of x_ft − x_base over the corpus: what varies around the mean shift the ADL reads.",
        "pca.html.j2",
        pca_view,
        pca_md,
        (
            "Activation-difference PCA, diff mining",
            "Minder et al., diffing-toolkit (science-of-finetuning): its pca and diff_mining methods",
            "https://github.com/science-of-finetuning/diffing-toolkit",
        ),
    ),
    MethodSection(
        "mining",
        "Mining",
        "Diff mining",
        "The tokens whose log-probability the fine-tune raises most, position by position, and their NMF clusters.",
        "pca.html.j2",
        mining_view,
        mining_md,
        None,  # cited with the PCA
    ),
)
"""The method sections, in page order (after the crosscoder)."""


def render_markdown(report: dict) -> list[str]:
    """The report.md lines of every method section that ran."""
    lines: list[str] = []
    for spec in METHOD_SECTIONS:
        if skip_reason(report, spec.key) is None:
            lines += ["", f"## {spec.title}", "", *spec.markdown(report[spec.key])]
    return lines
