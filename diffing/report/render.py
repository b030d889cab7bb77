"""Assemble the page (index.html) from the section renderers, plus methods and reproduction."""

from __future__ import annotations

from diffing.report import lens_sections, method_sections, sections
from diffing.report.html import Raw, esc, page, section, table

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


def methods(report: dict) -> Raw:
    """What each section measures, the thresholds behind the findings, and citations."""
    items = "".join(
        f"<li>{esc(m)}: {esc(c)}" + (f' (<a href="{esc(u)}">{esc(u)}</a>)' if u else "") + "</li>"
        for m, c, u in CITATIONS
    )
    th = report.get("thresholds") or {}
    body = Raw(
        "<p>Weights: relative Frobenius change per tensor. Activations: mean cosine and norm of the mean "
        "difference per layer and token role. KL: per-token KL(p_f || p_b). ADL: mean activation difference "
        "on plain text read through the logit lens. Refusal: difference-in-means directions, directional "
        "ablation and activation addition. Crosscoder: relative decoder norm Δ and Latent Scaling ν. "
        "Amplification: completions from logits pushed along the fine-tuned minus base logits. "
        "Diff-SAE: a sparse dictionary of x_ft − x_base. Refusal latents: cosine of crosscoder "
        "decoders with the refusal direction, and refusal with those latents removed.</p>"
        f"<ul>{items}</ul><h3>Finding thresholds</h3>"
    )
    body += table(["threshold", "value"], [(k, v) for k, v in th.items()])
    return section("methods", "Methods and citations", body)


def reproduce(report: dict) -> Raw:
    """The exact command, the run config and the package versions."""
    rep = report.get("reproduce") or {}
    versions = rep.get("versions") or {}
    body = Raw(f"<p>Command:</p><pre>{esc(rep.get('command', ''))}</pre>")
    body += Raw(
        f"<p>Or, from the saved config: <code>{esc(rep.get('config_command', ''))}</code></p>"
    )
    body += table(["package", "version"], [(k, str(v)) for k, v in versions.items()])
    return section("reproduce", "Reproduce", body)


def render_html(report: dict) -> str:
    """The complete, self-contained index.html for a report dict."""
    m = report.get("models") or {}
    subtitle = f"{m.get('base', '?')} → {m.get('finetuned', '?')} · {report.get('created', '')}"
    body = [
        sections.summary(report),
        sections.setup(report),
        sections.weights(report),
        sections.activations(report),
        sections.kl(report),
        sections.adl(report),
        method_sections.refusal(report),
        method_sections.crosscoder(
            report, top=int((report.get("config") or {}).get("top_latents") or 8)
        ),
        *(lens_sections.render(report, m) for m in lens_sections.METHOD_SECTIONS),
        methods(report),
        reproduce(report),
    ]
    return page("What did fine-tuning change?", subtitle, NAV, body)
