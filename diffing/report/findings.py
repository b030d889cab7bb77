"""The report's summary: the five most important findings, read from the section results.

Every rule is generic: it reads numbers under documented report keys (docs/report.md)
and compares them with the thresholds below, never with anything known about a
particular pair. Each finding links (``anchor``) to the section holding its evidence
and carries the numbers it was drawn from (``evidence``), so report.json has it in
machine-readable form.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from diffing.report import control_findings as _control
from diffing.report.method_findings import amplify as _amplify
from diffing.report.method_findings import diff_sae as _diff_sae
from diffing.report.method_findings import finding as _finding
from diffing.report.method_findings import pca as _pca
from diffing.report.method_findings import refusal_link as _refusal_link
from diffing.report.nonfinite import broken_findings, broken_sections, scrub
from diffing.report.results_common import finite, finite_or, or_nan, value_or
from diffing.report.util import fmt_pct, token_text

if TYPE_CHECKING:
    from diffing.report.results import ReportResults
    from diffing.report.results_crosscoder import CrosscoderLatent


@dataclass
class Thresholds:
    """Where a measure starts to count as a substantial change (documented in docs/report.md)."""

    kl_mean: float = 0.1
    """Mean next-token KL(fine-tuned || base) in nats per token; below it the outputs count as unchanged
    (calibration on two organism seeds: docs/report.md)."""
    weight_change: float = 0.01
    """Largest relative weight change ``||W_f - W_b|| / ||W_b||``; below it the weights count as unchanged."""
    activation_cosine: float = 0.95
    """Mean cosine between base and fine-tuned activations; above it at every layer the activations count as unchanged."""
    refusal_drop: float = 0.25
    """Drop of the harmful-prompt refusal rate under ablation (absolute) that shows a direction carries refusal."""
    refusal_present: float = 0.3
    """Harmful-prompt refusal rate of the fine-tuned model above which it counts as refusing."""
    chat_only: float = 0.9
    """Crosscoder relative decoder norm Δ above which a latent is chat-only (Minder et al. 2025)."""
    genuine_nu: float = 0.2
    """Latent Scaling ratios ν below which a chat-only latent is genuine (not shrinkage or decoupling)."""
    adl_tokens: int = 10
    """How many ADL-promoted tokens a finding lists."""
    constant_shift: float = 0.2
    """Share of the activation difference's energy at the crosscoder's layer that is one constant
    vector (``decoder_bias.constant_fraction``) above which the shift is a finding (calibration:
    docs/report.md)."""

    diff_sae_share: float = 0.1
    """Share of the activation difference one diff-SAE latent carries above which its logit lens is a finding
    (a diffuse difference spreads over dozens of latents; calibration: docs/report.md)."""
    amplify_gain: float = 0.2
    """Rise of the target's rate from the fine-tuned model (α = 0) to the best α (absolute) that is a finding."""
    amplify_word_rise: float = 0.35
    """Rise of a word's share of answers from the base to some α >= 0 (absolute) above which amplification
    without a target names it (the null control's top word: 0.25-0.28; calibration: docs/report.md)."""
    amplify_new_word_rise: float = 0.25
    """The same for a word the base's answers never contain (the null control's top such word: 0.16-0.19 on
    seed 0 of both organism families, so two prompts in 32 above it; calibration: docs/report.md)."""
    pca_component: float = 0.3
    """Explained variance ratio of the difference's first centred component above which it is a finding
    (a spread-out change stays well below it; calibration: docs/report.md)."""
    mining_raise: float = 2.0
    """Count-weighted mean raise (nats) of diff mining's top tokens where they are raised, above which
    the tokens are a finding (calibration: docs/report.md)."""
    unrelated_weight_change: float = 0.9
    """Relative change above which a tensor counts as replaced rather than tuned (independent weights
    differ by about 1.4)."""
    unrelated_parameter_share: float = 0.5
    """Share of the base's parameters in replaced tensors above which the weights say the pair is not a
    base and its fine-tune."""
    unrelated_cosine: float = 0.3
    """Mean activation cosine at the first layer below which the activations say the same."""

    def to_dict(self) -> dict:
        """Plain dict for report.json."""
        return asdict(self)


def _weights(r: ReportResults, th: Thresholds) -> list[dict]:
    modules = r.weights.modules if r.weights else []
    if not modules:
        return []
    top = max(modules, key=lambda m: finite_or(m.relative_change, 0.0))
    rel = finite_or(top.relative_change, 0.0)
    if rel < th.weight_change:
        return []
    n = sum(1 for m in modules if finite_or(m.relative_change, 0.0) >= th.weight_change)
    detail = f"{n} of {len(modules)} changed tensors moved by at least {fmt_pct(th.weight_change)}."
    if top.effective_rank is not None:
        detail += f" The top one's change has effective rank {top.effective_rank}."
    return [
        _finding(
            "weights-top-module",
            "weights",
            f"Fine-tuning changed {top.name} most (relative change {fmt_pct(rel)})",
            detail,
            {"module": top.name, "relative_change": rel, "modules_above_threshold": n},
            2.0,
        )
    ]


def _activations(r: ReportResults, th: Thresholds) -> list[dict]:
    layers = r.activations.layers if r.activations else []
    if not layers:
        return []
    # a layer without a cosine counts as unchanged
    gap, entry = max(((1.0 - value_or(e.cosine, 1.0), e) for e in layers), key=lambda s: s[0])
    if 1.0 - gap >= th.activation_cosine:
        return []
    roles = [(role, 1.0 - value_or(s.cosine, 1.0)) for role, s in entry.by_role.items()]
    roles = [(role, g) for role, g in roles if not math.isnan(g)]
    title = f"Activations diverge most at layer {entry.layer} (mean cosine {1.0 - gap:.3f})"
    evidence = {"layer": entry.layer, "cosine": 1.0 - gap, "mean_diff_norm": entry.mean_diff_norm}
    detail = (
        "Per layer: " + ", ".join(f"L{e.layer} {or_nan(e.cosine):.3f}" for e in layers[:12]) + "."
    )
    if roles:
        role, rgap = max(roles, key=lambda x: x[1])
        title = f"Activations diverge most at layer {entry.layer} on {role} tokens (cosine {1.0 - rgap:.3f})"
        evidence.update(role=role, role_cosine=1.0 - rgap)
    return [_finding("activations-peak", "activations", title, detail, evidence, 3.0)]


def _kl(r: ReportResults, th: Thresholds) -> list[dict]:
    kl = r.kl
    if kl is None or not finite(kl.mean) or kl.mean < th.kl_mean:
        return []
    mean = kl.mean
    roles = [(role, s.mean) for role, s in kl.by_role.items() if finite(s.mean)]
    evidence = {"mean": mean}
    title = f"Next-token distributions changed: mean KL {mean:.3g} nats/token"
    if roles:
        role, value = max(roles, key=lambda x: x[1])
        title = f"Largest KL on {role} tokens ({value:.3g} nats/token vs {mean:.3g} overall)"
        evidence.update(role=role, role_mean=value)
    detail = "By role: " + ", ".join(f"{r} {v:.3g}" for r, v in roles) + "." if roles else ""
    if kl.top_contexts:
        t = kl.top_contexts[0]
        detail += f" Hottest token: {token_text(t.token or '')} (KL {or_nan(t.kl):.3g})."
    return [_finding("kl-hot-role", "kl", title, detail.strip(), evidence, 2.5)]


def _adl(r: ReportResults, th: Thresholds) -> list[dict]:
    adl = r.adl
    if adl is None or not adl.promoted_tokens:
        return []
    promoted = adl.promoted_tokens[: th.adl_tokens]
    toks = [token_text(p.token) for p in promoted]
    suppressed = [token_text(p.token) for p in adl.suppressed_tokens[:5]]
    detail = f"Mean activation difference on plain text at layer {adl.layer}, read through the fine-tuned logit lens."
    if suppressed:
        detail += " Suppressed: " + ", ".join(suppressed) + "."
    evidence = {"layer": adl.layer, "tokens": toks, "scores": [p.score for p in promoted]}
    return [
        _finding("adl-promoted", "adl", "ADL promotes: " + ", ".join(toks), detail, evidence, 1.5)
    ]


def _refusal(r: ReportResults, th: Thresholds) -> list[dict]:
    ref = r.refusal
    if ref is None:
        return []
    before, after = ref.refusal_rate.harmful.baseline, ref.refusal_rate.harmful.ablation
    if not finite(before) or not finite(after) or before < th.refusal_present:
        return []
    layer, pos = ref.selected.layer, ref.selected.position
    kl = ref.kl_harmless.ablation if ref.kl_harmless else None
    evidence = {
        "layer": layer,
        "position": pos,
        "harmful_baseline": before,
        "harmful_ablation": after,
        "kl_harmless": kl,
    }
    kl_txt = f", KL {kl:.3g} nats on harmless prompts" if finite(kl) else ""
    harmless = ref.refusal_rate.harmless
    detail = f"Direction chosen at layer {layer}, position {pos}."
    if finite(harmless.addition):
        detail += f" Adding it makes the model refuse {fmt_pct(harmless.addition)} of harmless prompts (from {fmt_pct(value_or(harmless.baseline, 0.0))})."
        evidence["harmless_addition"] = harmless.addition
    if before - after >= th.refusal_drop:
        title = (
            f"Refusal is carried by a direction at layer {layer}: ablating it cuts harmful refusals "
            f"from {fmt_pct(before)} to {fmt_pct(after)}{kl_txt}"
        )
        return [_finding("refusal-direction", "refusal", title, detail, evidence, 0.5)]
    title = f"The model refuses {fmt_pct(before)} of harmful prompts, but ablating the best direction only reaches {fmt_pct(after)}"
    return [_finding("refusal-not-one-direction", "refusal", title, detail, evidence, 1.0)]


def _crosscoder(r: ReportResults, th: Thresholds) -> list[dict]:
    cc = r.crosscoder
    if cc is None:
        return []
    # a latent without a Δ is not chat-only; without a flag, both Latent Scaling ratios decide
    chat_only = [
        x for x in cc.latents if x.class_ == "chat_only" or value_or(x.delta, 0.5) > th.chat_only
    ]

    def genuine(x: CrosscoderLatent) -> bool:
        if x.flag is not None:
            return x.flag == "genuine"
        return (
            value_or(x.nu_error, 1.0) < th.genuine_nu
            and value_or(x.nu_reconstruction, 1.0) < th.genuine_nu
        )

    real = [x for x in chat_only if genuine(x)]
    summary = cc.summary
    classes = summary.classes or summary.counts or {}
    n_chat = classes.get("chat_only", len(chat_only))
    flags = (summary.latent_scaling or {}).get("chat_only") or {}
    n_genuine = flags.get("genuine", len(real))
    if n_chat == 0:
        return []
    title = f"{n_genuine} genuine chat-only latents (of {n_chat} with Δ > {th.chat_only})"
    evidence = {"chat_only": n_chat, "genuine_chat_only": n_genuine}
    detail = ""
    best = (real or chat_only)[:1]
    if best:
        lens = [token_text(t.token) for t in best[0].logit_lens[:6]]
        evidence["top_latent"] = best[0].index
        if lens:
            title += f"; latent {best[0].index} promotes " + ", ".join(lens)
            evidence["top_latent_tokens"] = lens
        detail = f"Latent {best[0].index}: Δ {or_nan(best[0].delta):.2f}."
    return [_finding("crosscoder-chat-only", "crosscoder", title, detail, evidence, 1.2)]


def _constant_shift(r: ReportResults, th: Thresholds) -> list[dict]:
    """Fine-tuning added one vector on every token: the crosscoder keeps it in its decoder biases."""
    bias = r.crosscoder.summary.decoder_bias if r.crosscoder else None
    if (
        bias is None
        or not finite(bias.constant_fraction)
        or bias.constant_fraction < th.constant_shift
    ):
        return []
    share = bias.constant_fraction
    toks = [token_text(t.token) for t in (bias.logit_lens.finetuned if bias.logit_lens else [])[:6]]
    title = (
        f"{fmt_pct(share)} of the activation difference is one constant shift, carried by no latent"
    )
    if toks:
        title += "; it promotes " + ", ".join(toks)
    detail = (
        "The crosscoder's decoder-bias difference (norm "
        f"{or_nan(bias.norm):.3g}, cosine {or_nan(bias.bias_cosine):.2f} with the mean "
        "difference), read through the fine-tuned logit lens. Chat-only latent counts do not see it."
    )
    evidence = {"constant_fraction": share, "norm": bias.norm, "tokens": toks}
    return [_finding("crosscoder-constant-shift", "crosscoder", title, detail, evidence, 1.6)]


def _no_change(r: ReportResults, th: Thresholds) -> list[dict]:
    """The control finding: every functional measure that ran is below its threshold."""
    kl = or_nan(r.kl.mean) if r.kl else float("nan")
    layers = r.activations.layers if r.activations else []
    min_cos = min((value_or(e.cosine, 1.0) for e in layers), default=float("nan"))
    modules = r.weights.modules if r.weights else []
    max_w = max((finite_or(m.relative_change, 0.0) for m in modules), default=0.0)
    measured = {
        "kl_mean": kl,
        "min_activation_cosine": min_cos,
        "max_relative_weight_change": max_w,
    }
    functional = [v for v in (kl, min_cos) if not math.isnan(v)]
    if not functional and not modules:
        return []
    if not math.isnan(kl) and kl >= th.kl_mean:
        return []
    if not math.isnan(min_cos) and min_cos < th.activation_cosine:
        return []
    if not functional and max_w >= th.weight_change:
        return []
    parts = []
    if not math.isnan(kl):
        parts.append(f"mean KL {kl:.2g} nats < {th.kl_mean}")
    if not math.isnan(min_cos):
        parts.append(f"activation cosine >= {min_cos:.3f} at every layer")
    title = "No substantial change was found: " + "; ".join(parts)
    detail = "Every measure that ran stays below the thresholds listed under Methods."
    if max_w >= th.weight_change and functional:
        detail += f" The weights did move (largest relative change {fmt_pct(max_w)}), but not the model's activations or outputs."
    else:
        title += f"; largest relative weight change {fmt_pct(max_w)}"
    section = (
        "kl" if not math.isnan(kl) else "activations" if not math.isnan(min_cos) else "weights"
    )
    return [_finding("no-substantial-change", section, title, detail, measured, 0.0)]


RULES = (
    _no_change,
    _control.unrelated,
    _refusal,
    _refusal_link,
    _crosscoder,
    _diff_sae,
    _amplify,
    _adl,
    _pca,
    _control.mining,
    _constant_shift,
    _kl,
    _weights,
    _activations,
)
"""Finding rules; each reads the typed report (:class:`~diffing.report.results.ReportResults`) and returns zero or more findings."""

READS: dict = {
    _refusal: ("refusal",),
    _crosscoder: ("crosscoder",),
    _refusal_link: ("refusal_link",),
    _diff_sae: ("diff_sae",),
    _amplify: ("amplify",),
    _pca: ("pca",),
    _control.mining: ("mining",),
    _control.unrelated: ("weights", "activations"),
    _adl: ("adl",),
    _constant_shift: ("crosscoder",),
    _kl: ("kl",),
    _weights: ("weights",),
    _activations: ("activations",),
}
"""The report sections each rule reads; a rule missing here (the "no change" verdict) needs every one finite."""


def compute_findings(
    report: dict,
    thresholds: Thresholds | None = None,
    *,
    limit: int | None = 5,
    results: ReportResults | None = None,
) -> list[dict]:
    """The ``limit`` most important findings of a report dict (None: all), most important first.

    Priorities: a "no substantial change" verdict first, then refusal, crosscoder
    and ADL evidence (which name what changed), then KL, weights and activations.
    A "refusal" section finding is only made when the model does refuse. A
    non-finite statistic comes before all of them, and no rule reads a section
    that holds one ("no substantial change" needs every section finite). The two
    verdicts drop what they make noise (``control_findings.apply_verdicts``): under
    "no substantial change" the findings with no threshold of their own, under
    "unrelated pair" every finding that compares the two models.

    The rules read typed sections: ``results`` when the caller validated the report
    already (the pipeline), else each section of ``report`` read on its own, one that
    does not match its model reading as absent (a malformed section never breaks the
    summary). The non-finite scan reads ``report`` itself (raw NaNs and ``non_finite``).
    """
    from diffing.report.results import read_sections

    th = thresholds or Thresholds()
    typed = results if results is not None else read_sections(report)
    broken = broken_sections(report)
    found = broken_findings(report)
    for rule in RULES:
        reads = READS.get(rule)
        if broken and (reads is None or any(sec in broken for sec in reads)):
            continue
        found.extend(rule(typed, th))
    found = _control.apply_verdicts(found)  # a verdict drops the findings it makes noise
    found.sort(key=lambda f: f["priority"])
    out = []
    for f in found[:limit]:
        f = dict(f)
        f.pop("priority")
        f["evidence"] = scrub(
            f["evidence"]
        )  # a number a rule could not read is missing, not broken
        out.append(f)
    return out
