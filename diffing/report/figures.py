"""The report's figures, drawn with matplotlib from the numbers in report.json.

Each function takes a section's numbers and returns PNG bytes (or None when there
is nothing to draw), so the page embeds exactly what report.json holds. The numbers
are validated section data (:mod:`diffing.report.results`): a statistic is a float or
None (not measured, drawn as a gap), a role breakdown is a dict keyed by role. Drawing
uses the non-interactive Agg backend and never opens a window.
"""

from __future__ import annotations

import io
import math
import warnings

from diffing.report.results_common import or_nan
from diffing.report.util import token_text


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.spines.top": False, "axes.spines.right": False})
    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():  # tokens may hold glyphs the font lacks; they draw as boxes
        warnings.simplefilter("ignore", UserWarning)
        fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    _plt().close(fig)
    return buf.getvalue()


def _label(text) -> str:
    """A model-produced string as a literal matplotlib label (``$`` would start mathtext)."""
    return str(text).replace("$", r"\$")


def _integer_x(ax) -> None:
    """Layer axes: integer ticks only."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def weights_bar(modules: list[dict], top: int = 15) -> bytes | None:
    """Horizontal bars of the ``top`` largest relative weight changes."""
    modules = [m for m in modules if math.isfinite(or_nan(m.get("relative_change")))][:top]
    if not modules:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 0.28 * len(modules) + 0.8))
    names = [_label(m.get("name")) for m in modules][::-1]
    ax.barh(names, [m["relative_change"] for m in modules][::-1], color="#3056d3")
    ax.set_xlabel("relative change ||W_f - W_b|| / ||W_b||")
    return _png(fig)


def activations_by_layer(layers: list[dict]) -> bytes | None:
    """Mean cosine (left) and norm of the mean difference (right) per layer, overall and by role."""
    if not layers:
        return None
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3))
    xs = [e.get("layer") for e in layers]
    a1.plot(xs, [or_nan(e.get("cosine")) for e in layers], "o-", color="black", label="all")
    a2.plot(xs, [or_nan(e.get("mean_diff_norm")) for e in layers], "o-", color="black", label="all")
    roles = sorted({r for e in layers for r in e.get("by_role") or {}})
    for role in roles:
        vals = [(e.get("by_role") or {}).get(role) or {} for e in layers]
        a1.plot(xs, [or_nan(v.get("cosine")) for v in vals], ".--", label=_label(role))
        a2.plot(xs, [or_nan(v.get("mean_diff_norm")) for v in vals], ".--", label=_label(role))
    a1.set(xlabel="layer", ylabel="mean cosine(x_b, x_f)")
    a2.set(xlabel="layer", ylabel="||mean(x_f - x_b)||")
    a1.legend(fontsize=7)
    _integer_x(a1)
    _integer_x(a2)
    fig.tight_layout()
    return _png(fig)


def kl_by_role(kl: dict) -> bytes | None:
    """Bars of the mean KL per token role."""
    items = [(r, or_nan(v.get("mean"))) for r, v in (kl.get("by_role") or {}).items()]
    items = [(r, v) for r, v in items if math.isfinite(v)]
    if not items:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 2.6))
    ax.bar([_label(r) for r, _ in items], [v for _, v in items], color="#d9822b")
    ax.set_ylabel("mean KL(p_f || p_b) [nats]")
    return _png(fig)


def token_scores(tokens: list[dict], title: str, color: str) -> bytes | None:
    """Horizontal bars of ``{token, score}`` records (ADL promoted/suppressed tokens), first on top."""
    tokens = tokens[:15]
    if not tokens:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.2, 0.25 * len(tokens) + 0.8))
    ys = list(range(len(tokens)))[::-1]  # positions, not labels: two tokens may decode alike
    ax.barh(ys, [or_nan(t.get("score")) for t in tokens], color=color)
    ax.set_yticks(ys, [_label(token_text(t.get("token"))) for t in tokens])
    ax.set_title(title)
    return _png(fig)


def cosine_by_layer(cosines: list[float | None] | None) -> bytes | None:
    """Cosine between the base and fine-tuned refusal directions at each layer (list index = layer)."""
    pairs = [(i, or_nan(v)) for i, v in enumerate(cosines or [])]
    if not pairs:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 2.6))
    ax.plot([p[0] for p in pairs], [p[1] for p in pairs], "o-", color="#7a3fb8")
    ax.set(xlabel="layer", ylabel="cos(r_base, r_finetuned)", ylim=(-1.05, 1.05))
    _integer_x(ax)
    return _png(fig)


def delta_histogram(edges: list[float], counts: list[int]) -> bytes | None:
    """Histogram of the crosscoder's relative decoder norms Δ (0 base-only, 1 chat-only), from binned counts."""
    if not counts or len(edges) != len(counts) + 1 or sum(counts) == 0:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 2.6))
    widths = [edges[i + 1] - edges[i] for i in range(len(counts))]
    ax.bar(
        edges[:-1],
        counts,
        width=widths,
        align="edge",
        color="#2a9d8f",
        edgecolor="white",
        linewidth=0.5,
    )
    nonzero = [c for c in counts if c > 0]
    if max(nonzero) > 50 * min(nonzero):  # a few chat-only latents next to thousands of shared ones
        ax.set_yscale("log")
    ax.set(xlabel="relative decoder norm Δ", ylabel="latents", xlim=(0, 1))
    return _png(fig)


def deltas_to_histogram(deltas: list[float], bins: int = 20) -> tuple[list[float], list[int]]:
    """``(edges, counts)`` of Δ values over [0, 1]."""
    edges = [i / bins for i in range(bins + 1)]
    counts = [0] * bins
    for d in deltas:
        if math.isfinite(d):
            counts[min(bins - 1, max(0, int(d * bins)))] += 1
    return edges, counts


def nu_scatter(latents: list[dict]) -> bytes | None:
    """Latent Scaling ν_ε vs ν_r of the latents that have both."""
    pts = [(or_nan(x.get("nu_error")), or_nan(x.get("nu_reconstruction"))) for x in latents]
    pts = [p for p in pts if math.isfinite(p[0]) and math.isfinite(p[1])]
    if not pts:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.2, 3.4))
    ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=10, color="#e76f51")
    ax.set(xlabel="ν_ε (error)", ylabel="ν_r (reconstruction)")
    return _png(fig)


def amplify_rates(rates: list[dict]) -> bytes | None:
    """The target's rate against α (the fine-tuned model at α = 0), the base alone as a dashed line."""
    pts = [
        (or_nan(r.get("alpha")), or_nan(r.get("rate")))
        for r in rates
        if r.get("model") != "base" and math.isfinite(or_nan(r.get("rate")))
    ]
    if not pts:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 2.6))
    ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color="#3056d3", label="amplified")
    base = [or_nan(r.get("rate")) for r in rates if r.get("model") == "base"]
    if base and math.isfinite(base[0]):
        ax.axhline(base[0], color="#8c8c8c", ls="--", lw=1, label="base alone")
        ax.legend(fontsize=8)
    ax.set(xlabel="α", ylabel="target rate", ylim=(-0.03, 1.03))
    return _png(fig)


def refusal_ablation(ablation: dict, labels: list[tuple[str, str]]) -> bytes | None:
    """Bars of the harmful refusal rate under each intervention of ``labels`` ``[(key, label)]``."""
    bars = [
        (lab, or_nan((ablation.get(k) or {}).get("rate"))) for k, lab in labels if k in ablation
    ]
    bars = [b for b in bars if math.isfinite(b[1])]
    if not bars:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(bars) + 0.8))
    ax.barh([b[0] for b in bars][::-1], [b[1] for b in bars][::-1], color="#c44e52")
    ax.set(xlabel="refusal rate on harmful prompts", xlim=(0, 1.02))
    return _png(fig)
