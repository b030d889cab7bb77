"""Renderers of the newer method sections (amplification, diff-SAE, refusal link; PCA and mining in
:mod:`diffing.report.pca_sections`), HTML and Markdown, and the list the page walks.

Each section is one :class:`MethodSection`: its report key (also its step's name), its
navigation label, its citation and two functions from the section's dict to an HTML
fragment and to Markdown lines. :data:`METHOD_SECTIONS` is the list the page
(:mod:`diffing.report.render`) and report.md (:mod:`diffing.report.markdown`) walk, so a
new method adds one renderer pair and one entry. Every model-produced string goes
through :func:`~diffing.report.html.esc` (HTML) or ``_md`` (Markdown).
"""

from __future__ import annotations

from diffing.report import figures
from diffing.report.html import Raw, esc, figure, section, skipped, table
from diffing.report.method_html import MethodSection, contexts_html, gen, lens_tokens, md, pills
from diffing.report.pca_sections import mining_html, mining_md, pca_html, pca_md
from diffing.report.sections import kv, skip_reason
from diffing.report.util import fmt_num, fmt_pct, num

# ---- logit-difference amplification ----


def amplify_html(a: dict) -> str:
    """Rates per setting, then per α a few prompts with base / fine-tuned / amplified completions."""
    body = Raw(
        f"<p>Generated from <code>{esc(a.get('formula', ''))}</code>: {esc(a.get('summary', ''))}.</p>"
    )
    rates = a.get("rates") or []
    if a.get("target") is not None:
        body += table(
            ["model", "α", "rate", "completions"],
            [
                (r.get("model"), r.get("alpha"), fmt_pct(num(r.get("rate"))), r.get("n"))
                for r in rates
            ],
        )
        body += figure(
            figures.amplify_rates(rates), f"Completions containing {a['target']!r}, against α"
        )
    for block in a.get("by_alpha") or []:
        rate = "" if block.get("rate") is None else f" (target rate {fmt_pct(num(block['rate']))})"
        body += Raw(f"<h3>α = {esc(fmt_num(block.get('alpha')))}{esc(rate)}</h3>")
        body += table(
            ["prompt", "base", "fine-tuned (α = 0)", "amplified"],
            [
                (
                    gen(e.get("prompt")),
                    gen(e.get("base")),
                    gen(e.get("finetuned")),
                    gen(e.get("amplified")),
                )
                for e in block.get("examples") or []
            ],
        )
    for note in a.get("notes") or []:
        body += Raw(f'<p class="muted">{esc(note)}</p>')
    return body


def amplify_md(a: dict) -> list[str]:
    """The summary line and, at the largest α, the example completions."""
    lines = [md(a.get("summary", "")), ""]
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


def diff_sae_html(d: dict) -> str:
    """Headline numbers, the comparison with the crosscoder's chat-only latents, the top latents."""
    body = kv(
        d,
        [
            "layer",
            "n_latents",
            "steps",
            "fvu",
            "l0",
            "dead_fraction",
            "latents_for_half_the_difference",
        ],
    )
    comp = d.get("comparison")
    compared = bool(comp) and num(comp.get("chat_only_latents"), 0.0) > 0
    if compared:
        body += Raw(
            f"<p>Of the crosscoder's {esc(comp.get('chat_only_latents'))} chat-only latents, "
            f"{esc(comp.get('matched'))} diff-SAE latents match one with |cos| ≥ {esc(fmt_num(comp.get('match_cosine')))}.</p>"
        )
    elif comp:
        body += Raw('<p class="muted">The crosscoder has no chat-only latents to compare with.</p>')
    else:
        body += Raw(
            '<p class="muted">No crosscoder ran, so no comparison with its chat-only latents.</p>'
        )
    rows = [
        (
            x.get("latent"),
            fmt_pct(num(x.get("share"))),
            x.get("frequency"),
            *((x.get("max_chat_only_cosine"),) if compared else ()),
            Raw(pills(lens_tokens(x.get("logit_lens")))),
            Raw(contexts_html(x.get("contexts"))),
        )
        for x in d.get("top_latents") or []
    ]
    cols = ["latent", "share", "frequency", *(["max |cos| chat-only"] if compared else [])]
    body += Raw("<h3>Latents carrying the most of the difference</h3>") + table(
        [*cols, "logit lens (fine-tuned)", "top contexts"], rows
    )
    return body


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
        f"| {x.get('latent')} | {fmt_pct(num(x.get('share')))} | {', '.join(md(t) for t in lens_tokens(x.get('logit_lens'), 6))} |"
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


def _ablation_rows(ab: dict) -> list[tuple]:
    return [
        (
            label,
            fmt_pct(num((ab.get(k) or {}).get("rate"))),
            num((ab.get(k) or {}).get("mean_score")),
        )
        for k, label in ABLATIONS
        if k in ab
    ]


def refusal_link_html(r: dict) -> str:
    """The refusal latents (|cos|, Δ, Latent Scaling flag, lens, contexts) and the ablation comparison."""
    direction = r.get("direction") or {}
    body = Raw(
        f"<p>Refusal direction at the crosscoder's layer {esc(r.get('layer'))} (input of block "
        f"{esc(direction.get('block'))}, position {esc(direction.get('position'))}); latents with "
        f"|cos| ≥ {esc(fmt_num(r.get('threshold')))} ({esc(r.get('select_by'))}) carry it.</p>"
    )
    if r.get("refusal_tokens"):
        body += Raw("<p>Refusal tokens: " + pills([str(t) for t in r["refusal_tokens"]]) + "</p>")
    rows = [
        (
            x.get("latent"),
            x.get("cos_difference"),
            x.get("cos_finetuned"),
            x.get("delta"),
            x.get("class"),
            x.get("latent_scaling") or "-",  # computed for chat- and base-only latents only
            Raw(pills(lens_tokens(x.get("logit_lens")))),
            Raw(contexts_html(x.get("contexts"))),
        )
        for x in r.get("latents") or []
    ]
    if rows:
        body += Raw("<h3>Refusal latents</h3>") + table(
            [
                "latent",
                "cos(d_f − d_b, r)",
                "cos(d_f, r)",
                "Δ",
                "class",
                "Latent Scaling",
                "logit lens",
                "top contexts",
            ],
            rows,
        )
    else:
        best = r.get("best") or {}
        body += Raw(
            f"<p>No latent reaches the threshold; the closest is latent {esc(best.get('latent'))} "
            f"(cos {esc(fmt_num(best.get('cos_difference')))}).</p>"
        )
    ab = r.get("ablation") or {}
    if ab:
        body += Raw(f"<h3>Refusal on {esc(ab.get('n_prompts'))} harmful prompts</h3>") + table(
            ["intervention at the layer", "refusal rate", "mean refusal score"], _ablation_rows(ab)
        )
        body += figure(
            figures.refusal_ablation(ab, list(ABLATIONS)),
            "Harmful refusal rate with the refusal latents removed, the direction ablated, random latents removed",
        )
    return body


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
        lines += [f"| {label} | {rate} |" for label, rate, _ in _ablation_rows(ab)]
    return lines


METHOD_SECTIONS: tuple[MethodSection, ...] = (
    MethodSection(
        "amplify",
        "Amplification",
        "Logit-difference amplification",
        "Generating from logits_ft + α (logits_ft − logits_base) makes behaviours the fine-tune introduced frequent (Aranguri & McGrath 2025).",
        amplify_html,
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
        diff_sae_html,
        diff_sae_md,
        None,  # BatchTopK SAEs are cited already
    ),
    MethodSection(
        "refusal_link",
        "Refusal latents",
        "Crosscoder latents vs the refusal direction",
        "Which crosscoder latents' decoders point along the refusal direction, and does removing them stop refusal?",
        refusal_link_html,
        refusal_link_md,
        None,  # crosscoders and the refusal direction are cited already
    ),
    MethodSection(
        "pca",
        "PCA",
        "Activation-difference PCA",
        "Principal directions of x_ft − x_base over the corpus: what varies around the mean shift the ADL reads.",
        pca_html,
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
        mining_html,
        mining_md,
        None,  # cited with the PCA
    ),
)
"""The method sections, in page order (after the crosscoder)."""


def render(report: dict, spec: MethodSection) -> Raw:
    """One method section of the page (its skip notice when its step did not run)."""
    reason = skip_reason(report, spec.key)
    if reason:
        return section(spec.key, spec.title, skipped(reason))
    return section(spec.key, spec.title, Raw(spec.html(report[spec.key])), intro=spec.intro)


def render_markdown(report: dict) -> list[str]:
    """The report.md lines of every method section that ran."""
    lines: list[str] = []
    for spec in METHOD_SECTIONS:
        if skip_reason(report, spec.key) is None:
            lines += ["", f"## {spec.title}", "", *spec.markdown(report[spec.key])]
    return lines
