"""Assemble the page (index.html): every section's values, in page order, rendered by page.html.j2."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from diffing.report import lens_sections, method_sections, sections
from diffing.report.html import render

CITATIONS: tuple[tuple[str, str, str], ...] = (
    (
        "Crosscoders",
        "Lindsey et al. 2024, Sparse Crosscoders for Cross-Layer Features and Model Diffing (Transformer Circuits)",
        "https://transformer-circuits.pub/2024/crosscoders/index.html",
    ),
    (
        "BatchTopK crosscoders, Latent Scaling",
        "Minder et al. 2025, Overcoming Sparsity Artifacts in Crosscoders to Interpret Chat-Tuning, arXiv 2504.02922",
        "https://arxiv.org/abs/2504.02922",
    ),
    (
        "BatchTopK SAEs",
        "Bussmann et al. 2024, BatchTopK Sparse Autoencoders, arXiv 2412.06410",
        "https://arxiv.org/abs/2412.06410",
    ),
    (
        "Refusal direction",
        "Arditi et al. 2024, Refusal in Language Models Is Mediated by a Single Direction, arXiv 2406.11717",
        "https://arxiv.org/abs/2406.11717",
    ),
    (
        "Activation Difference Lens",
        "Minder et al. 2025, Narrow Finetuning Leaves Clearly Readable Traces in Activation Differences",
        "",
    ),
    *(m.citation for m in lens_sections.METHOD_SECTIONS if m.citation),
)
"""(method, citation, link) shown under Methods."""

NAV = (
    ("summary", "Summary"),
    ("setup", "Setup"),
    ("weights", "Weights"),
    ("activations", "Activations"),
    ("kl", "KL"),
    ("adl", "ADL"),
    ("refusal", "Refusal"),
    ("crosscoder", "Crosscoder"),
    *((m.key, m.label) for m in lens_sections.METHOD_SECTIONS),
    ("methods", "Methods"),
    ("reproduce", "Reproduce"),
)
"""The page's navigation bar: (anchor, label)."""


class Block(NamedTuple):
    """One section of the page, as the page template renders it."""

    anchor: str
    """Its ``id`` (what the summary and the navigation link to)."""
    title: str
    """Its heading."""
    intro: str
    """One line under the heading ("" for none)."""
    reason: str | None
    """Why it did not run (shown instead of its body), or None."""
    template: str
    """The template file holding its macro."""
    macro: str
    """The macro that renders its body from ``values``."""
    values: Any
    """What the macro renders (the section's view); None when the section did not run."""


class PageSection(NamedTuple):
    """A section of the page that reads the whole report and may have been skipped."""

    anchor: str
    """Its ``id``; also its macro's name and the report key whose step decides whether it ran."""
    title: str
    """Its heading."""
    intro: str
    """One line under the heading ("" for none; a view may give its own under ``"intro"``)."""
    template: str
    """The template file holding its macro."""
    view: Callable[[dict], dict]
    """Report dict -> what its macro renders."""


CORE = "core.html.j2"
"""Macros of the summary, setup, weights, activations, KL and ADL sections."""

METHODS = "methods.html.j2"
"""Macros of the refusal and crosscoder sections."""

PAGE_SECTIONS: tuple[PageSection, ...] = (
    PageSection("weights", "Weight changes", "", CORE, sections.weights),
    PageSection(
        "activations", "Activation changes by layer and token role", "", CORE, sections.activations
    ),
    PageSection(
        "kl",
        "KL hot spots",
        "KL(p_f || p_b) of the next-token distributions, per token, in nats.",
        CORE,
        sections.kl,
    ),
    PageSection(
        "adl",
        "Activation Difference Lens",
        "Mean x_f - x_b over the first positions of plain text, read through the fine-tuned logit lens.",
        CORE,
        sections.adl,
    ),
    PageSection(
        "refusal",
        "Refusal",
        "Difference-in-means refusal directions (Arditi et al. 2024): ablation and addition.",
        METHODS,
        method_sections.refusal,
    ),
    PageSection(
        "crosscoder",
        "Crosscoder",
        "BatchTopK/L1 crosscoder on both models' activations (Minder et al. 2025).",
        METHODS,
        method_sections.crosscoder,
    ),
    *(
        PageSection(m.key, m.title, m.intro, m.template, lambda r, m=m: m.view(r[m.key]))
        for m in lens_sections.METHOD_SECTIONS
    ),
)
"""The sections between the setup and the methods, in page order."""


def _block(report: dict, spec: PageSection) -> Block:
    """A section that ran (with its view's values) or its skip notice."""
    reason = sections.skip_reason(report, spec.anchor)
    if reason:
        return Block(spec.anchor, spec.title, "", reason, spec.template, spec.anchor, None)
    values = spec.view(report)
    intro = values.get("intro", spec.intro)
    return Block(spec.anchor, spec.title, intro, None, spec.template, spec.anchor, values)


def blocks(report: dict) -> list[Block]:
    """Every section of the page before Methods and Reproduce, in order."""
    return [
        Block(
            "summary", "Summary: what changed", "", None, CORE, "summary", sections.summary(report)
        ),
        Block("setup", "Models and setup", "", None, CORE, "setup", sections.setup(report)),
        *(_block(report, spec) for spec in PAGE_SECTIONS),
    ]


def render_html(report: dict) -> str:
    """The complete, self-contained index.html for a report dict."""
    m = report.get("models") or {}
    return render(
        "page.html.j2",
        title="What did fine-tuning change?",
        subtitle=f"{m.get('base', '?')} → {m.get('finetuned', '?')} · {report.get('created', '')}",
        nav=NAV,
        blocks=blocks(report),
        citations=CITATIONS,
        thresholds=report.get("thresholds") or {},
        reproduce=report.get("reproduce") or {},
        versions=[
            (k, str(v)) for k, v in ((report.get("reproduce") or {}).get("versions") or {}).items()
        ],
    )
