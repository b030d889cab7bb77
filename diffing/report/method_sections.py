"""Renderers of the refusal and crosscoder sections (the two method sections with the most structure)."""

from __future__ import annotations

from diffing.report import figures
from diffing.report.html import Raw, esc, figure, section, skipped, table
from diffing.report.sections import context_html, kv, skip_reason
from diffing.report.util import fmt_num, fmt_pct, num, token_text


def _examples(ref: dict) -> list[dict]:
    for key in ("examples", "generations", "example_generations"):
        value = ref.get(key)
        if isinstance(value, list) and value and isinstance(value[0], dict):
            return value
        if isinstance(value, dict):
            return [
                {"set": k, **v} if isinstance(v, dict) else {"set": k, "text": v}
                for k, v in value.items()
            ]
    return []


def refusal(report: dict) -> Raw:
    """Refusal directions: selection, base-vs-fine-tuned cosine, intervention table, generations."""
    reason = skip_reason(report, "refusal")
    if reason:
        return section("refusal", "Refusal", skipped(reason))
    r = report["refusal"]
    body = kv(r, ["note", "selected", "cosine_selected", "probe_accuracy_base"])
    rates = r.get("refusal_rate") or {}
    rows = [
        (
            split,
            fmt_pct(num(v.get("baseline"))),
            fmt_pct(num(v.get("ablation"))),
            fmt_pct(num(v.get("addition"))),
        )
        for split, v in rates.items()
        if isinstance(v, dict)
    ]
    body += Raw("<h3>Refusal rate under interventions</h3>") + table(
        ["prompts", "baseline", "ablation", "addition"], rows
    )
    klh = r.get("kl_harmless")
    if klh is not None:
        body += Raw(
            f"<p>KL on harmless prompts (cost of the intervention): {esc(fmt_num(klh) if not isinstance(klh, dict) else ', '.join(f'{k} {fmt_num(v)}' for k, v in klh.items()))} nats</p>"
        )
    body += figure(
        figures.cosine_by_layer(r.get("cosine_by_layer")),
        "Cosine between base and fine-tuned refusal directions per layer",
    )
    cos = r.get("cosine_by_layer") or []
    per_layer = [
        (
            d.get("layer"),
            d.get("position"),
            num(d.get("norm")),
            num(d.get("bypass")),
            num(d.get("induce")),
            num(d.get("kl")),
            "yes" if d.get("valid") else "no",
            num(cos[d["layer"]])
            if isinstance(cos, list) and d.get("layer", -1) < len(cos)
            else None,
        )
        for d in r.get("directions_by_layer") or []
    ]
    if per_layer:
        body += Raw("<h3>Refusal directions per layer (best candidate)</h3>") + table(
            [
                "layer",
                "position",
                "norm",
                "bypass score",
                "induce score",
                "KL",
                "valid",
                "cos(base, fine-tuned)",
            ],
            per_layer,
        )
    cross = (r.get("base_direction_ablates_finetuned") or {}).get("refusal_rate") or {}
    if cross:
        conds = list(dict.fromkeys(c for v in cross.values() if isinstance(v, dict) for c in v))
        body += Raw(
            "<h3>Does the base model's direction remove the fine-tuned model's refusal?</h3>"
        ) + table(
            ["prompts", *conds],
            [
                (k, *[fmt_pct(num(v.get(c))) for c in conds])
                for k, v in cross.items()
                if isinstance(v, dict)
            ],
        )
    if r.get("refusal_phrases"):
        body += Raw(
            "<p>Refusal phrases matched: "
            + ", ".join(f'<span class="pill">{esc(p)}</span>' for p in r["refusal_phrases"])
            + "</p>"
        )
    ex = _examples(r)
    if ex:
        cols = [k for k in ex[0] if k not in ("tokens",)][:5]
        body += Raw("<h3>Example generations</h3>") + table(
            cols,
            [
                tuple(Raw(f'<span class="gen">{esc(e.get(c, ""))}</span>') for c in cols)
                for e in ex[:8]
            ],
        )
    return section(
        "refusal",
        "Refusal",
        body,
        intro="Difference-in-means refusal directions (Arditi et al. 2024): ablation and addition.",
    )


def _latent_card(lat: dict) -> str:
    lens = lat.get("logit_lens") or []
    pills = "".join(
        f'<span class="pill">{esc(token_text(t.get("token") if isinstance(t, dict) else t))}</span>'
        for t in lens[:10]
    )
    contexts = [c for c in (lat.get("top_contexts") or [])[:5] if isinstance(c, dict)]
    peak = max(
        [num(c.get("activation"), 0.0) for c in contexts] + [num(lat.get("max_activation"), 0.0)]
    )
    ctxs = "".join(context_html(c, peak or None) for c in contexts)
    stats = ", ".join(
        f"{k} {fmt_num(lat[k])}"
        for k in ("class", "flag", "delta", "cosine", "nu_error", "nu_reconstruction", "frequency")
        if lat.get(k) is not None
    )
    return (
        f'<div class="card" id="latent-{esc(lat.get("index"))}"><h3>Latent {esc(lat.get("index"))}</h3>'
        f'<p class="muted">{esc(stats)}</p><p>Logit lens: {pills or "-"}</p>{ctxs}</div>'
    )


def crosscoder(report: dict, top: int = 8) -> Raw:
    """Class counts, Δ histogram, ν scatter and a card per top latent."""
    reason = skip_reason(report, "crosscoder")
    if reason:
        return section("crosscoder", "Crosscoder", skipped(reason))
    c = report["crosscoder"]
    summ, lats = c.get("summary") or {}, c.get("latents") or []
    body = kv(
        summ,
        [
            "layer",
            "n_latents",
            "n_tokens",
            "dead_latents",
            "classes",
            "counts",
            "fvu",
            "shared_cosine_mean",
            "training",
        ],
    )
    flags = summ.get("latent_scaling") or {}
    if isinstance(flags, dict) and flags:
        names = sorted({k for v in flags.values() if isinstance(v, dict) for k in v})
        body += Raw("<h3>Latent Scaling verdicts</h3>") + table(
            ["class", *names],
            [(cls, *[(v or {}).get(n) for n in names]) for cls, v in flags.items()],
        )
    causal = summ.get("causal") or {}
    if causal.get("fraction_closed"):
        body += Raw(
            "<h3>Causal check: fraction of KL(fine-tuned || base-patched) closed</h3>"
        ) + table(
            ["latent set", "size", "fraction closed"],
            [
                (k, (causal.get("set_sizes") or {}).get(k), v)
                for k, v in causal["fraction_closed"].items()
            ],
        )
    bias = summ.get("decoder_bias") or {}
    if bias:
        lens = (bias.get("logit_lens") or {}).get("finetuned") or []
        body += Raw(
            "<h3>Decoder-bias difference: the shift on every token that no latent carries</h3>"
        )
        body += kv(
            bias,
            ["norm", "mean_difference_norm", "rms_difference", "constant_fraction", "bias_cosine"],
        )
        if lens:
            body += Raw(
                "<p>Fine-tuned logit lens: "
                + ", ".join(esc(token_text(t.get("token", ""))) for t in lens)
                + "</p>"
            )
    hist = summ.get("delta_histogram") or {}
    if hist.get("counts") and hist.get("edges"):
        edges, counts = hist["edges"], hist["counts"]
    else:  # no stored histogram: bin the listed latents
        edges, counts = figures.deltas_to_histogram([num(x.get("delta")) for x in lats])
    body += Raw('<div class="cards">')
    body += figure(
        figures.delta_histogram(edges, counts), "Relative decoder norm Δ (0 base-only, 1 chat-only)"
    )
    body += figure(
        figures.nu_scatter(c.get("latent_scaling") or lats),
        "Latent Scaling: ν_ε vs ν_r (near 0: genuinely chat-only)",
    )
    body += Raw("</div><h3>Top latents</h3>")
    body += Raw('<div class="cards">' + "".join(_latent_card(x) for x in lats[:top]) + "</div>")
    return section(
        "crosscoder",
        "Crosscoder",
        body,
        intro="BatchTopK/L1 crosscoder on both models' activations (Minder et al. 2025).",
    )
