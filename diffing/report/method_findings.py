"""Finding rules of the newer method sections: refusal latents, the diff-SAE, amplification.

Same contract as the rules of :mod:`diffing.report.findings` (which runs them): read
documented report keys, compare with :class:`~diffing.report.findings.Thresholds`,
return zero or more findings; a missing or non-finite number gives no finding.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from diffing.report.util import fmt_pct, num, token_text

if TYPE_CHECKING:
    from diffing.report.findings import Thresholds


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


def refusal_link(report: dict, th: Thresholds) -> list[dict]:
    """Crosscoder latents that carry the refusal direction, and whether removing them stops refusal."""
    link = report.get("refusal_link") or {}
    lats = link.get("latents") or []
    if not lats:
        return []
    top = lats[0]
    cos = max(abs(num(top.get("cos_difference"), 0.0)), abs(num(top.get("cos_finetuned"), 0.0)))
    ab = link.get("ablation") or {}
    clean = num((ab.get("clean") or {}).get("rate"))
    removed = num((ab.get("latents") or {}).get("rate"))
    rand = num((ab.get("random") or {}).get("rate"))
    j, n = top.get("latent"), len(lats)
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


def diff_sae(report: dict, th: Thresholds) -> list[dict]:
    """One diff-SAE latent carries a large share of the activation difference: what it promotes."""
    top = ((report.get("diff_sae") or {}).get("top_latents") or [None])[0]
    if not top:
        return []
    share = num(top.get("share"))
    if math.isnan(share) or share < th.diff_sae_share:
        return []
    lens = top.get("logit_lens") or {}
    lens = lens.get("finetuned", []) if isinstance(lens, dict) else lens
    toks = [token_text(t.get("token", "") if isinstance(t, dict) else t) for t in lens[:6]]
    title = (
        f"Diff-SAE latent {top.get('latent')} carries {fmt_pct(share)} of the activation difference"
    )
    if toks:
        title += "; it promotes " + ", ".join(toks)
    half = (report.get("diff_sae") or {}).get("latents_for_half_the_difference")
    detail = f"{half} latents carry half of the difference." if half is not None else ""
    evidence = {"latent": top.get("latent"), "share": share, "tokens": toks}
    return [finding("diff-sae-top-latent", "diff_sae", title, detail, evidence, 1.3)]


def amplify(report: dict, th: Thresholds) -> list[dict]:
    """Amplification makes the target behaviour much more frequent than the fine-tuned model shows it."""
    amp = report.get("amplify") or {}
    if amp.get("target") is None:
        return []
    rates = amp.get("rates") or []
    ft = next((num(r.get("rate")) for r in rates if r.get("model") == "finetuned"), float("nan"))
    amped = [(num(r.get("rate")), r.get("alpha")) for r in rates if r.get("model") == "amplified"]
    amped = [x for x in amped if not math.isnan(x[0])]
    if math.isnan(ft) or not amped:
        return []
    best, alpha = max(amped, key=lambda x: x[0])
    if best - ft < th.amplify_gain:
        return []
    title = (
        f"Amplifying the logit difference raises {amp['target']!r} from {fmt_pct(ft)} of the fine-tuned "
        f"model's completions to {fmt_pct(best)} at α = {alpha:g}"
    )
    evidence = {"target": amp["target"], "finetuned": ft, "best": best, "alpha": alpha}
    return [finding("amplify-target", "amplify", title, "", evidence, 1.4)]


def pca(report: dict, th: Thresholds) -> list[dict]:
    """One centred component carries a large share of how the activation difference varies."""
    out = []
    for lay in (report.get("pca") or {}).get("layers") or []:
        pcs = [d for d in lay.get("directions") or [] if d.get("name") != "uncentred"]
        if not pcs:
            continue
        ratio = num(pcs[0].get("explained"))
        if math.isnan(ratio) or ratio < th.pca_component:
            continue
        toks = [token_text(t) for t in (pcs[0].get("promoted") or [])[:6]]
        title = (
            f"One direction ({pcs[0].get('name')}) explains {fmt_pct(ratio)} of the variance of the "
            f"activation difference at layer {lay.get('layer')}"
        )
        if toks:
            title += "; it promotes " + ", ".join(toks)
        evidence = {"layer": lay.get("layer"), "explained": ratio, "tokens": toks}
        out.append(finding("pca-component", "pca", title, "", evidence, 1.5))
    return out[:1]
