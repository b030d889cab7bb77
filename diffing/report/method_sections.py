"""The refusal and crosscoder sections (the two with the most structure): what their templates need.

Each function returns the values its macro in ``templates/methods.html.j2`` renders: the
figures, and the few things that need Python (the examples' shape, a latent's highlight peak).
"""

from __future__ import annotations

from typing import Any

from diffing.report import figures
from diffing.report.html import is_numeric
from diffing.report.sections import contexts_view
from diffing.report.util import fmt_num, token_text

CROSSCODER_KEYS = [
    "layer",
    "n_latents",
    "n_tokens",
    "dead_latents",
    "classes",
    "counts",
    "fvu",
    "shared_cosine_mean",
    "training",
]
"""Summary entries listed at the top of the crosscoder section."""

LATENT_STATS = ("class", "flag", "delta", "cosine", "nu_error", "nu_reconstruction", "frequency")
"""A latent card's numbers, in the order shown."""


def _examples(ref: dict) -> list[dict]:
    """Example generations as a list of records, whichever of the known shapes the section used."""
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


def _number(value: Any, default: float = 0.0) -> float:
    """A float for arithmetic on the page (a highlight's peak); ``default`` when absent."""
    return float(value) if is_numeric(value) else default


def refusal(report: dict) -> dict:
    """Refusal directions: selection, base-vs-fine-tuned cosine, intervention table, generations."""
    r = report["refusal"]
    klh = r.get("kl_harmless")
    if isinstance(klh, dict):
        klh = ", ".join(f"{k} {fmt_num(v)}" for k, v in klh.items())
    cos = r.get("cosine_by_layer")
    per_layer = [
        (d, cos[d["layer"]] if isinstance(cos, list) and d.get("layer", -1) < len(cos) else None)
        for d in r.get("directions_by_layer") or []
    ]
    cross = (r.get("base_direction_ablates_finetuned") or {}).get("refusal_rate") or {}
    cross = {k: v for k, v in cross.items() if isinstance(v, dict)}
    ex = _examples(r)
    return {
        "r": r,
        "rates": [(k, v) for k, v in (r.get("refusal_rate") or {}).items() if isinstance(v, dict)],
        "kl_harmless": klh,
        "figure": figures.cosine_by_layer(cos),
        "per_layer": per_layer,
        "cross": cross,
        "conditions": list(dict.fromkeys(c for v in cross.values() for c in v)),
        "examples": ex[:8],
        "columns": [k for k in ex[0] if k != "tokens"][:5] if ex else [],
    }


def _latent(lat: dict) -> dict:
    """One latent card: its numbers, logit lens and top contexts (highlighted against its peak)."""
    lens = lat.get("logit_lens") or []
    contexts = [c for c in (lat.get("top_contexts") or [])[:5] if isinstance(c, dict)]
    peak = max(
        [_number(c.get("activation")) for c in contexts] + [_number(lat.get("max_activation"))]
    )
    return {
        "index": lat.get("index"),
        "stats": ", ".join(
            f"{k} {fmt_num(lat[k])}" for k in LATENT_STATS if lat.get(k) is not None
        ),
        "lens": [token_text(t.get("token") if isinstance(t, dict) else t) for t in lens[:10]],
        "contexts": contexts_view(contexts, 5, peak or None),
    }


def crosscoder(report: dict, top: int | None = None) -> dict:
    """Class counts, Latent Scaling verdicts, causal check, decoder bias, Δ and ν figures, top latents.

    ``top`` latents get a card (default: the run's ``top_latents``, else 8).
    """
    top = top or int((report.get("config") or {}).get("top_latents") or 8)
    c = report["crosscoder"]
    summ, lats = c.get("summary") or {}, c.get("latents") or []
    flags = summ.get("latent_scaling") or {}
    flags = flags if isinstance(flags, dict) else {}
    causal = summ.get("causal") or {}
    hist = summ.get("delta_histogram") or {}
    if hist.get("counts") and hist.get("edges"):
        edges, counts = hist["edges"], hist["counts"]
    else:  # no stored histogram: bin the listed latents
        edges, counts = figures.deltas_to_histogram(
            [x["delta"] if is_numeric(x.get("delta")) else float("nan") for x in lats]
        )
    bias = summ.get("decoder_bias") or {}
    return {
        "summary": summ,
        "summary_keys": CROSSCODER_KEYS,
        "flags": flags,
        "flag_names": sorted({k for v in flags.values() if isinstance(v, dict) for k in v}),
        "causal": causal.get("fraction_closed") or {},
        "set_sizes": causal.get("set_sizes") or {},
        "bias": bias,
        "bias_lens": [
            token_text(t.get("token", ""))
            for t in (bias.get("logit_lens") or {}).get("finetuned") or []
        ],
        "delta_figure": figures.delta_histogram(edges, counts),
        "nu_figure": figures.nu_scatter(c.get("latent_scaling") or lats),
        "latents": [_latent(x) for x in lats[:top]],
    }
