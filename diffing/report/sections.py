"""The page's core sections (summary, setup, weights, activations, KL, ADL): what each template needs.

Each function here takes the report dict and returns the values its macro in
``templates/core.html.j2`` renders: the figures (PNG bytes), and whatever needs Python to
derive (flattened settings, highlight strengths). The templates read everything else straight
from the section's dict and escape it. A section that did not run shows its reason
(:func:`skip_reason`).
"""

from __future__ import annotations

import math
from typing import Any

from diffing.report import figures
from diffing.report.config import METHOD_KEYS
from diffing.report.html import is_numeric
from diffing.report.nonfinite import listed
from diffing.report.util import fmt_num, role_items

SECTION_OF = {
    "weights": "weights",
    "activations": "stats",
    "kl": "stats",
    "adl": "stats",
    "refusal": "refusal",
    "crosscoder": "crosscoder",
    **{k: k for k in METHOD_KEYS},
}
"""Which run step (``report["sections"]``) produces each page section."""

HOT = 1.0
"""Activation given to the one hot token of a context that records no activations."""


def skip_reason(report: dict, key: str) -> str | None:
    """The skip reason of the step behind ``key``, or None when it ran."""
    st = (report.get("sections") or {}).get(SECTION_OF.get(key, key)) or {}
    if st.get("status", "ok") != "ok":
        return st.get("reason") or st.get("status")
    if report.get(key) is None:
        return st.get("reason") or "this step produced no result for this section"
    return None


def _spans(tokens: list, acts: list | None, peak: float | None = None) -> dict:
    """Tokens with background strengths: each activation over ``peak`` (else the largest |activation|)."""
    acts = list(acts or [0.0] * len(tokens))
    vals = [float(a) if is_numeric(a) else 0.0 for a in acts]
    top = peak if peak and peak > 0 else max([abs(a) for a in vals] + [1e-9])
    spans = [
        (str(tok).replace("\n", "↵"), f"{min(1.0, max(0.0, v / top)):.2f}", fmt_num(a))
        for tok, a, v in zip(tokens, acts, vals)
    ]
    return {"spans": spans}


def context_view(c: dict, peak: float | None = None) -> dict:
    """One top-KL or top-activation context for ``blocks.context``: its kind and its pieces.

    A crosscoder context (tokens and the activating token's index) or a token list with
    activations -> ``{"spans": [(text, alpha, title)]}``; a context string and the hot token
    (or ``before``/``token``/``after``) -> those three; anything else -> ``{"text": ...}``.
    """
    tokens = c.get("tokens")
    if isinstance(tokens, list) and "index_in_window" in c:  # a crosscoder context
        acts: list[Any] = [0.0] * len(tokens)
        at = int(c["index_in_window"])
        if 0 <= at < len(acts):
            act = c.get("activation")
            acts[at] = float(act) if is_numeric(act) else HOT
        return _spans(tokens, acts, peak)
    if isinstance(c.get("context"), str) and "token" in c:  # text before the hot token
        return {"before": c["context"], "token": c["token"], "after": ""}
    if "before" in c and "token" in c:
        return {"before": c.get("before") or "", "token": c["token"], "after": c.get("after") or ""}
    toks = tokens or c.get("context_tokens")
    if isinstance(toks, list) and toks:
        acts = c.get("acts") or c.get("activations") or c.get("values")
        if acts is None and "position" in c:
            acts = [HOT if i == c.get("position") else 0.0 for i in range(len(toks))]
        return _spans(toks, acts)
    return {"text": c.get("context") or c.get("text") or ""}


def contexts_view(ctxs: Any, n: int = 3, peak: float | None = None) -> list[dict]:
    """The first ``n`` contexts of a list, ready for ``blocks.contexts``."""
    return [context_view(c, peak) for c in (ctxs or [])[:n] if isinstance(c, dict)]


def summary(report: dict) -> dict:
    """The findings, and every non-finite statistic (all sections, not only those that made a finding)."""
    broken, more = listed(report)
    return {"findings": report.get("findings") or [], "broken": broken, "more": more}


SETTINGS = (
    "data",
    "harmful",
    "harmless",
    "tokens",
    "layers",
    "adl_layer",
    "refusal_prompts",
    "crosscoder",
    "train_crosscoder",
)
"""Run settings the setup section lists (when set)."""


def _setting(v: Any) -> Any:
    """A run setting or input as one table value: lists and dicts joined, numbers formatted."""
    if isinstance(v, list):
        return ", ".join(map(str, v))
    if isinstance(v, dict):
        return ", ".join(f"{a}: {b}" for a, b in v.items())
    return v


def setup(report: dict) -> dict:
    """Models, run settings, what the steps read, and which steps ran."""
    run = report.get("config") or {}
    settings = [(k, _setting(run[k])) for k in SETTINGS if run.get(k) not in (None, [])]
    for k, v in (report.get("inputs") or {}).items():  # what the steps actually read
        settings.append((k, _setting(v) if isinstance(v, (list, dict)) else fmt_num(v)))
    steps = [
        (
            name,
            st.get("status"),
            f"{st['seconds'] if is_numeric(st.get('seconds')) else 0.0:.1f} s",
            st.get("reason") or "",
        )
        for name, st in (report.get("sections") or {}).items()
    ]
    m = report.get("models") or {}
    return {"models": m, "settings": settings, "steps": steps, "notes": m.get("notes") or []}


def _change(m: dict) -> str | None:
    """A module's relative change with its standard error when it is an estimate (else None)."""
    value, err = m.get("relative_change"), m.get("relative_error")
    if err is None or not is_numeric(value) or math.isnan(value):
        return None
    return f"{value:.4g} ± {100 * err:.0f}%"


def weights(report: dict) -> dict:
    """Per-module relative weight change: the bar chart and the top 25."""
    w = report["weights"]
    mods = w.get("modules") or []
    intro = f"{len(mods)} parameter tensors changed; the top 25 are listed."
    if w.get("source") == "sketch":
        k = w.get("sketch_size")
        intro += (
            f" The weights stayed on the remote server: matrices' changes are estimated from"
            f" {k} x {k} random sketches computed there (± one standard error); vectors are exact;"
            f" an effective rank is shown only when the sketch resolves it (low-rank deltas)."
        )
    return {
        "intro": intro,
        "figure": figures.weights_bar(mods),
        "modules": [(m, _change(m)) for m in mods[:25]],
    }


def activations(report: dict) -> dict:
    """Per-layer activation differences, overall and by token role."""
    layers = report["activations"].get("layers") or []
    return {
        "figure": figures.activations_by_layer(layers),
        "layers": layers,
        "roles": [(e.get("layer"), r, v) for e in layers for r, v in role_items(e.get("by_role"))],
    }


def kl(report: dict) -> dict:
    """Where the next-token distributions changed most."""
    k = report["kl"]
    kinds = [("all", k)] + [(n, k[n]) for n in ("text", "chat") if isinstance(k.get(n), dict)]
    tops = [c for c in (k.get("top_contexts") or [])[:15] if isinstance(c, dict)]
    return {
        "kinds": kinds,
        "figure": figures.kl_by_role(k),
        "tops": [(c, context_view(c)) for c in tops],
    }


def adl(report: dict) -> dict:
    """The Activation Difference Lens: promoted/suppressed tokens and steered samples."""
    a = report["adl"]
    prom, supp = a.get("promoted_tokens") or [], a.get("suppressed_tokens") or []
    steering = a.get("steering")
    examples = steering.get("examples") if isinstance(steering, dict) else steering
    examples = [e for e in examples or [] if isinstance(e, dict)]
    cols = [c for c in ("prompt", "unsteered", "steered") if examples and c in examples[0]]
    return {
        "adl": a,
        "promoted_figure": figures.token_scores(prom, "promoted", "#2a9d8f"),
        "suppressed_figure": figures.token_scores(supp, "suppressed", "#e76f51"),
        "ranks": [
            (i + 1, p, s) for i, (p, s) in enumerate(zip(prom[:15], list(supp[:15]) + [None] * 15))
        ],
        "examples": examples[:6],
        "columns": cols,
    }
