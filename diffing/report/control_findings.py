"""Finding rules that keep the summary honest on controls: diff mining, the unrelated-pair verdict,
and what the two verdicts ("nothing changed", "not a fine-tune") remove from the summary.

Same contract as :mod:`diffing.report.findings` (which runs them): read the typed report
sections, compare with :class:`~diffing.report.findings.Thresholds`,
return zero or more findings; a missing or non-finite number gives no finding. Nothing here
knows a particular pair.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from diffing.report.method_findings import finding
from diffing.report.nonfinite import NON_FINITE
from diffing.report.util import fmt_pct, token_text

if TYPE_CHECKING:
    from diffing.report.findings import Thresholds
    from diffing.report.results import ReportResults

NO_CHANGE = "no-substantial-change"
"""Id of the verdict that every functional measure stayed below its threshold."""
UNRELATED = "unrelated-pair"
"""Id of the verdict that the two models are not a base and a fine-tune of it."""
VERDICTS = (NO_CHANGE, UNRELATED)
"""Findings that say nothing meaningful changed (a control's expected summary)."""

UNTHRESHOLDED = ("adl-promoted", "kl-hot-role", "activations-peak", "weights-top-module")
"""Findings that describe whatever difference there is, with no threshold of their own deciding that
it matters: under the "no substantial change" verdict they would read noise as a change."""
FINETUNED_ALONE = ("refusal-direction", "refusal-not-one-direction")
"""Findings that measure the fine-tuned model on its own (its refusal rates): they stay under the
unrelated-pair verdict. Every other finding (but a verdict or a non-finite statistic) compares the
two models, so it reads noise when they are unrelated; a new rule's finding is dropped there by default."""


def _float(value: object) -> float:
    """A number as a float; None (missing) as NaN."""
    return float("nan") if value is None else float(value)


def _numel(module) -> float:
    """Parameters of one tensor of the weights section (``numel``, else the product of ``shape``; NaN: unknown)."""
    n = _float(module.numel)
    shape = (module.model_extra or {}).get("shape")
    if math.isnan(n) and isinstance(shape, list) and shape:
        n = float(math.prod(int(x) for x in shape if isinstance(x, int)))
    return n


def mining(r: ReportResults, th: Thresholds) -> list[dict]:
    """Diff mining's top tokens, when the fine-tune raises them sharply where it raises them.

    Every pair has a top-k of raised tokens at every position, so the ranking alone
    means nothing; what separates a change from noise is how much the fine-tune raises
    those tokens. The measure is the count-weighted mean raise (nats) of the listed
    top tokens at the positions where they are in the top k.
    """
    sec = r.mining
    if sec is None:
        return []
    rows = [(float(t.count), _float(t.mean_diff), t) for t in sec.top_tokens]
    rows = [(c, d, t) for c, d, t in rows if math.isfinite(c) and math.isfinite(d) and c > 0]
    if not rows:
        return []
    total = sum(c for c, _, _ in rows)
    raise_ = sum(c * d for c, d, _ in rows) / total
    if raise_ < th.mining_raise:
        return []
    positions = float(sec.positions)
    toks = [token_text(t.token) for _, _, t in rows[:8]]
    title = "Diff mining: the fine-tune raises " + ", ".join(toks)
    title += f" (by {raise_:.2g} nats where raised)"
    detail = ""
    if positions > 0:
        detail = f"The top token is in the top {len(sec.top_tokens)} raised at {fmt_pct(rows[0][0] / positions)} of {int(positions)} positions."
    if sec.clusters:
        words = [token_text(t) for t in sec.clusters[0].tokens[:8]]
        detail += " Largest cluster: " + ", ".join(words) + "."
    evidence = {"mean_raise": raise_, "tokens": toks, "positions": positions}
    return [finding("mining-promoted", "mining", title, detail.strip(), evidence, 1.55)]


def unrelated(r: ReportResults, th: Thresholds) -> list[dict]:
    """The verdict that the two checkpoints are not a base and a fine-tune of it.

    A fine-tune (LoRA or full, even a long one) moves most tensors by a fraction of
    their norm and keeps the embedding, so the residual streams at the first layer
    stay aligned; two independently trained models replace every tensor (independent
    weights of one shape differ by about sqrt(2) of their norm) and their first-layer
    activations are nearly orthogonal. The weights' sign is the share of the base's
    parameters in replaced tensors (a hand edit may zero a few tensors outright); both
    signs are required when both were measured.
    """
    modules = r.weights.modules if r.weights else []
    # an infinite change (a zero base tensor) counts as a replacement; a missing one does not count
    modules = [m for m in modules if not math.isnan(_float(m.relative_change))]
    sizes = [_numel(m) for m in modules]
    total = _float(((r.models.parameters if r.models else None) or {}).get("base"))
    if any(math.isnan(n) for n in sizes):  # sizes unknown: count tensors instead
        sizes, total = [1.0] * len(modules), float(len(modules))
    elif not total > 0:
        total = sum(sizes)
    layers = r.activations.layers if r.activations else []
    first = min(layers, key=lambda e: e.layer, default=None)
    cos = _float(first.cosine) if first is not None else float("nan")
    if not modules and math.isnan(cos):
        return []
    replaced = [
        n for m, n in zip(modules, sizes) if _float(m.relative_change) >= th.unrelated_weight_change
    ]
    # tied embeddings are one parameter tensor but may be listed twice: at most all of them
    share = min(1.0, sum(replaced) / total) if modules and total > 0 else float("nan")
    if modules and not share >= th.unrelated_parameter_share:
        return []
    if not math.isnan(cos) and cos >= th.unrelated_cosine:
        return []
    parts = []
    if modules:
        parts.append(
            f"{len(replaced)} tensors holding {fmt_pct(share)} of the parameters moved by more than "
            f"{fmt_pct(th.unrelated_weight_change)}"
        )
    if not math.isnan(cos):
        parts.append(f"activations at layer {first.layer} have mean cosine {cos:.2f}")
    title = "The two models are not a base and a fine-tune of it: " + "; ".join(parts)
    detail = (
        "Method findings that compare the two models would read this difference as noise and are "
        "left out; the sections keep their numbers."
    )
    evidence = {
        "replaced_share": share,
        "first_layer_cosine": cos,
        "replaced_tensors": len(replaced),
    }
    return [finding(UNRELATED, "weights", title, detail, evidence, -0.5)]


def apply_verdicts(found: list[dict]) -> list[dict]:
    """Drop the findings a verdict makes meaningless (see :data:`UNTHRESHOLDED` and :data:`FINETUNED_ALONE`)."""
    ids = {f["id"] for f in found}
    if UNRELATED in ids:
        found = [
            f
            for f in found
            if f["id"] in (UNRELATED, *FINETUNED_ALONE) or f["id"].startswith(NON_FINITE)
        ]
    elif NO_CHANGE in ids:
        found = [f for f in found if f["id"] not in UNTHRESHOLDED]
    return found
