"""Finding rules of the newer method sections: refusal latents, the diff-SAE, amplification.

Same contract as the rules of :mod:`diffing.report.findings` (which runs them): read
the typed report (:class:`~diffing.report.results.ReportResults`), compare with :class:`~diffing.report.findings.Thresholds`,
return zero or more findings; a missing or non-finite number gives no finding.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from diffing.report.results_common import or_nan, value_or
from diffing.report.util import fmt_pct, token_text

if TYPE_CHECKING:
    from diffing.report.findings import Thresholds
    from diffing.report.results import ReportResults
    from diffing.report.results_lens import Amplify


def finding(
    fid: str, section: str, title: str, detail: str, evidence: dict[str, Any], priority: float
) -> dict:
    """One finding: what it says, the section holding its evidence, and the numbers behind it."""
    return {
        "id": fid,
        "section": section,
        "title": title,
        "detail": detail,
        "anchor": f"#{section}",
        "evidence": evidence,
        "priority": priority,
    }


def refusal_link(r: ReportResults, th: Thresholds) -> list[dict]:
    """Crosscoder latents that carry the refusal direction, and whether removing them stops refusal."""
    link = r.refusal_link
    if link is None or not link.latents:
        return []
    top, lats = link.latents[0], link.latents
    cos = max(abs(value_or(top.cos_difference, 0.0)), abs(value_or(top.cos_finetuned, 0.0)))
    ab = link.ablation
    clean = or_nan(ab.clean.rate) if ab else math.nan
    removed = or_nan(ab.latents.rate) if ab and ab.latents else math.nan
    rand = or_nan(ab.random.rate) if ab else math.nan
    j, n = top.latent, len(lats)
    who = f"latent {j}" + (f" (and {n - 1} more)" if n > 1 else "")
    evidence = {"latent": j, "abs_cosine": cos, "refusal_latents": n, "clean": clean,
                "latents_removed": removed, "random_removed": rand}  # fmt: skip
    if math.isnan(cos) or math.isnan(clean) or math.isnan(removed) or clean < th.refusal_present:
        return []
    detail = (
        f"Removing as many random latents leaves {fmt_pct(rand)}." if not math.isnan(rand) else ""
    )
    if clean - removed >= th.refusal_drop:
        title = (
            f"Crosscoder {who} carries the refusal direction (|cos| {cos:.2f}); removing "
            f"{'it' if n == 1 else 'them'} drops harmful refusal from {fmt_pct(clean)} to {fmt_pct(removed)}"
        )
        return [finding("refusal-latents", "refusal_link", title, detail, evidence, 0.6)]
    title = (
        f"Crosscoder {who} aligns with the refusal direction (|cos| {cos:.2f}), but removing "
        f"{'it' if n == 1 else 'them'} leaves harmful refusal at {fmt_pct(removed)}"
    )
    return [finding("refusal-latents-not-causal", "refusal_link", title, detail, evidence, 1.1)]


def diff_sae(r: ReportResults, th: Thresholds) -> list[dict]:
    """One diff-SAE latent carries a large share of the activation difference: what it promotes."""
    sae = r.diff_sae
    if sae is None or not sae.top_latents:
        return []
    top = sae.top_latents[0]
    share = or_nan(top.share)
    if math.isnan(share) or share < th.diff_sae_share:
        return []
    toks = [token_text(t.token) for t in (top.logit_lens.finetuned if top.logit_lens else [])[:6]]
    title = f"Diff-SAE latent {top.latent} carries {fmt_pct(share)} of the activation difference"
    if toks:
        title += "; it promotes " + ", ".join(toks)
    detail = f"{sae.latents_for_half_the_difference} latents carry half of the difference."
    evidence = {"latent": top.latent, "share": share, "tokens": toks}
    return [finding("diff-sae-top-latent", "diff_sae", title, detail, evidence, 1.3)]


AMPLIFY_WORD_PROMPTS = 4
"""Fewest prompts whose answers must contain an emerging word before it is a finding (a few prompts
cannot tell a planted word from chance)."""
AMPLIFY_WORDS_NAMED = 3
"""Emerging words a finding names at most."""


def amplify(r: ReportResults, th: Thresholds) -> list[dict]:
    """Amplification makes the target behaviour much more frequent than the fine-tuned model shows it;
    without a target, the fine-tuned or amplified answers say words the base's do not."""
    amp = r.amplify
    if amp is None:
        return []
    if amp.target is None:
        return _amplify_words(amp, th)
    ft = next((or_nan(x.rate) for x in amp.rates if x.model == "finetuned"), math.nan)
    amped = [(or_nan(x.rate), x.alpha) for x in amp.rates if x.model == "amplified"]
    amped = [x for x in amped if not math.isnan(x[0])]
    if math.isnan(ft) or not amped:
        return []
    best, alpha = max(amped, key=lambda x: x[0])
    if best - ft < th.amplify_gain:
        return []
    title = (
        f"Amplifying the logit difference raises {amp.target!r} from {fmt_pct(ft)} of the fine-tuned "
        f"model's completions to {fmt_pct(best)} at α = {alpha:g}"
    )
    evidence = {"target": amp.target, "finetuned": ft, "best": best, "alpha": alpha}
    return [finding("amplify-target", "amplify", title, "", evidence, 1.4)]


def _amplify_words(amp: Amplify, th: Thresholds) -> list[dict]:
    """The words whose share of answers rises from the base's by ``amplify_word_rise`` or more
    (``amplify_new_word_rise`` for a word the base never says).

    Words the base never says come first among them: a word of the shared language that the
    fine-tune merely uses more (``of``, a format word) is weaker evidence than one it introduced.
    """
    words = [
        w
        for w in amp.emerging_words or []
        if math.isfinite(w.rise)
        and (w.rise >= th.amplify_word_rise or (w.base == 0 and w.rise >= th.amplify_new_word_rise))
        and w.count >= AMPLIFY_WORD_PROMPTS
    ]
    if not words:
        return []
    words.sort(key=lambda w: w.base > 0)  # stable: by rise within each group
    top = words[0]
    named = [w.word for w in words[:AMPLIFY_WORDS_NAMED]]
    if top.alpha == 0:
        title = f"The fine-tuned model says {', '.join(named)} ({top.word} in {fmt_pct(top.share)} of its answers"
    else:
        title = (
            f"Amplified, the fine-tuned model says {', '.join(named)} ({top.word} in "
            f"{fmt_pct(top.share)} of answers at α = {top.alpha:g}"
        )
    title += f"; the base's {fmt_pct(top.base)})"
    detail = "; ".join(
        f"{w.word}: {fmt_pct(w.base)} → {fmt_pct(w.share)} at α = {w.alpha:g}" for w in words[:8]
    )
    detail = f"Share of the {amp.n_prompts} prompts' answers containing each word, base → best α: {detail}."
    evidence = {
        "words": named,
        "rise": top.rise,
        "share": top.share,
        "base": top.base,
        "alpha": top.alpha,
        "prompts": amp.n_prompts,
    }
    return [finding("amplify-words", "amplify", title, detail, evidence, 1.4)]


def pca(r: ReportResults, th: Thresholds) -> list[dict]:
    """One centred component carries a large share of how the activation difference varies."""
    out = []
    for lay in r.pca.layers if r.pca else []:
        pcs = [d for d in lay.directions if d.name != "uncentred"]
        if not pcs:
            continue
        ratio = or_nan(pcs[0].explained)
        if math.isnan(ratio) or ratio < th.pca_component:
            continue
        toks = [token_text(t) for t in pcs[0].promoted[:6]]
        title = (
            f"One direction ({pcs[0].name}) explains {fmt_pct(ratio)} of the variance of the "
            f"activation difference at layer {lay.layer}"
        )
        if toks:
            title += "; it promotes " + ", ".join(toks)
        evidence = {"layer": lay.layer, "explained": ratio, "tokens": toks}
        out.append(finding("pca-component", "pca", title, "", evidence, 1.5))
    return out[:1]
