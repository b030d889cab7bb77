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

from diffing.report import control_findings as _control
from diffing.report.method_findings import amplify as _amplify
from diffing.report.method_findings import diff_sae as _diff_sae
from diffing.report.method_findings import finding as _finding
from diffing.report.method_findings import pca as _pca
from diffing.report.method_findings import refusal_link as _refusal_link
from diffing.report.nonfinite import broken_findings, broken_sections, scrub
from diffing.report.util import finite_num, fmt_pct, num, role_items, token_text


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


def _weights(report: dict, th: Thresholds) -> list[dict]:
    modules = (report.get("weights") or {}).get("modules") or []
    if not modules:
        return []
    top = max(modules, key=lambda m: finite_num(m.get("relative_change"), 0.0))
    rel = finite_num(top.get("relative_change"), 0.0)
    if rel < th.weight_change:
        return []
    n = sum(1 for m in modules if finite_num(m.get("relative_change"), 0.0) >= th.weight_change)
    detail = f"{n} of {len(modules)} changed tensors moved by at least {fmt_pct(th.weight_change)}."
    if top.get("effective_rank") is not None:
        detail += f" The top one's change has effective rank {top['effective_rank']}."
    return [
        _finding(
            "weights-top-module",
            "weights",
            f"Fine-tuning changed {top.get('name')} most (relative change {fmt_pct(rel)})",
            detail,
            {"module": top.get("name"), "relative_change": rel, "modules_above_threshold": n},
            2.0,
        )
    ]


def _activations(report: dict, th: Thresholds) -> list[dict]:
    layers = (report.get("activations") or {}).get("layers") or []
    scored = [(1.0 - num(entry.get("cosine"), 1.0), entry) for entry in layers]
    if not scored:
        return []
    gap, entry = max(scored, key=lambda s: s[0])
    if 1.0 - gap >= th.activation_cosine:
        return []
    layer = entry.get("layer")
    roles = [(r, 1.0 - num(v, 1.0, "cosine")) for r, v in role_items(entry.get("by_role"))]
    roles = [(r, g) for r, g in roles if not math.isnan(g)]
    title = f"Activations diverge most at layer {layer} (mean cosine {1.0 - gap:.3f})"
    evidence = {
        "layer": layer,
        "cosine": 1.0 - gap,
        "mean_diff_norm": num(entry.get("mean_diff_norm")),
    }
    detail = (
        "Per layer: "
        + ", ".join(f"L{e.get('layer')} {num(e.get('cosine')):.3f}" for e in layers[:12])
        + "."
    )
    if roles:
        role, rgap = max(roles, key=lambda r: r[1])
        title = (
            f"Activations diverge most at layer {layer} on {role} tokens (cosine {1.0 - rgap:.3f})"
        )
        evidence.update(role=role, role_cosine=1.0 - rgap)
    return [_finding("activations-peak", "activations", title, detail, evidence, 3.0)]


def _kl(report: dict, th: Thresholds) -> list[dict]:
    kl = report.get("kl") or {}
    mean = num(kl.get("mean"))
    if math.isnan(mean) or mean < th.kl_mean:
        return []
    roles = [(r, num(v, float("nan"), "mean")) for r, v in role_items(kl.get("by_role"))]
    roles = [(r, v) for r, v in roles if not math.isnan(v)]
    evidence = {"mean": mean}
    title = f"Next-token distributions changed: mean KL {mean:.3g} nats/token"
    if roles:
        role, value = max(roles, key=lambda r: r[1])
        title = f"Largest KL on {role} tokens ({value:.3g} nats/token vs {mean:.3g} overall)"
        evidence.update(role=role, role_mean=value)
    tops = kl.get("top_contexts") or []
    detail = "By role: " + ", ".join(f"{r} {v:.3g}" for r, v in roles) + "." if roles else ""
    if tops and isinstance(tops[0], dict):
        t = tops[0]
        where = token_text(t.get("token", ""))
        detail += f" Hottest token: {where} (KL {num(t.get('kl')):.3g})."
    return [_finding("kl-hot-role", "kl", title, detail.strip(), evidence, 2.5)]


def _adl(report: dict, th: Thresholds) -> list[dict]:
    adl = report.get("adl") or {}
    promoted = adl.get("promoted_tokens") or []
    if not promoted:
        return []
    toks = [token_text(p.get("token", "")) for p in promoted[: th.adl_tokens]]
    suppressed = [token_text(p.get("token", "")) for p in (adl.get("suppressed_tokens") or [])[:5]]
    detail = f"Mean activation difference on plain text at layer {adl.get('layer')}, read through the fine-tuned logit lens."
    if suppressed:
        detail += " Suppressed: " + ", ".join(suppressed) + "."
    return [
        _finding(
            "adl-promoted",
            "adl",
            "ADL promotes: " + ", ".join(toks),
            detail,
            {
                "layer": adl.get("layer"),
                "tokens": toks,
                "scores": [num(p.get("score")) for p in promoted[: th.adl_tokens]],
            },
            1.5,
        )
    ]


def _refusal(report: dict, th: Thresholds) -> list[dict]:
    ref = report.get("refusal") or {}
    rates = (ref.get("refusal_rate") or {}).get("harmful") or {}
    before, after = num(rates.get("baseline")), num(rates.get("ablation"))
    if math.isnan(before) or math.isnan(after) or before < th.refusal_present:
        return []
    sel = ref.get("selected") or {}
    layer, pos = sel.get("layer"), sel.get("position")
    kl = num(ref.get("kl_harmless"), float("nan"), "ablation")
    evidence = {
        "layer": layer,
        "position": pos,
        "harmful_baseline": before,
        "harmful_ablation": after,
        "kl_harmless": kl,
    }
    kl_txt = f", KL {kl:.3g} nats on harmless prompts" if not math.isnan(kl) else ""
    harmless = (ref.get("refusal_rate") or {}).get("harmless") or {}
    induced = num(harmless.get("addition"))
    detail = f"Direction chosen at layer {layer}, position {pos}."
    if not math.isnan(induced):
        detail += f" Adding it makes the model refuse {fmt_pct(induced)} of harmless prompts (from {fmt_pct(num(harmless.get('baseline'), 0.0))})."
        evidence["harmless_addition"] = induced
    if before - after >= th.refusal_drop:
        title = (
            f"Refusal is carried by a direction at layer {layer}: ablating it cuts harmful refusals "
            f"from {fmt_pct(before)} to {fmt_pct(after)}{kl_txt}"
        )
        return [_finding("refusal-direction", "refusal", title, detail, evidence, 0.5)]
    title = f"The model refuses {fmt_pct(before)} of harmful prompts, but ablating the best direction only reaches {fmt_pct(after)}"
    return [_finding("refusal-not-one-direction", "refusal", title, detail, evidence, 1.0)]


def _crosscoder(report: dict, th: Thresholds) -> list[dict]:
    cc = report.get("crosscoder") or {}
    latents = cc.get("latents") or []
    summary = cc.get("summary") or {}
    if not latents and not summary:
        return []
    chat_only = [
        x
        for x in latents
        if x.get("class") == "chat_only" or num(x.get("delta"), 0.5) > th.chat_only
    ]

    def genuine(x: dict) -> bool:
        if x.get("flag") is not None:
            return x["flag"] == "genuine"
        return (
            num(x.get("nu_error"), 1.0) < th.genuine_nu
            and num(x.get("nu_reconstruction"), 1.0) < th.genuine_nu
        )

    real = [x for x in chat_only if genuine(x)]
    classes = summary.get("classes") or summary.get("counts") or {}
    n_chat = int(num(classes.get("chat_only"), len(chat_only)))
    flags = (summary.get("latent_scaling") or {}).get("chat_only") or {}
    n_genuine = int(num(flags.get("genuine"), len(real)))
    if n_chat == 0:
        return []
    title = f"{n_genuine} genuine chat-only latents (of {n_chat} with Δ > {th.chat_only})"
    evidence = {"chat_only": n_chat, "genuine_chat_only": n_genuine}
    detail = ""
    best = (real or chat_only)[:1]
    if best:
        lens = [
            token_text(t.get("token", t) if isinstance(t, dict) else t)
            for t in (best[0].get("logit_lens") or [])[:6]
        ]
        evidence["top_latent"] = best[0].get("index")
        if lens:
            title += f"; latent {best[0].get('index')} promotes " + ", ".join(lens)
            evidence["top_latent_tokens"] = lens
        detail = f"Latent {best[0].get('index')}: Δ {num(best[0].get('delta')):.2f}."
    return [_finding("crosscoder-chat-only", "crosscoder", title, detail, evidence, 1.2)]


def _constant_shift(report: dict, th: Thresholds) -> list[dict]:
    """Fine-tuning added one vector on every token: the crosscoder keeps it in its decoder biases."""
    bias = ((report.get("crosscoder") or {}).get("summary") or {}).get("decoder_bias") or {}
    share = num(bias.get("constant_fraction"))
    if math.isnan(share) or share < th.constant_shift:
        return []
    lens = (bias.get("logit_lens") or {}).get("finetuned") or []
    toks = [token_text(t.get("token", "")) for t in lens[:6]]
    title = (
        f"{fmt_pct(share)} of the activation difference is one constant shift, carried by no latent"
    )
    if toks:
        title += "; it promotes " + ", ".join(toks)
    detail = (
        "The crosscoder's decoder-bias difference (norm "
        f"{num(bias.get('norm')):.3g}, cosine {num(bias.get('bias_cosine')):.2f} with the mean "
        "difference), read through the fine-tuned logit lens. Chat-only latent counts do not see it."
    )
    evidence = {"constant_fraction": share, "norm": num(bias.get("norm")), "tokens": toks}
    return [_finding("crosscoder-constant-shift", "crosscoder", title, detail, evidence, 1.6)]


def _no_change(report: dict, th: Thresholds) -> list[dict]:
    """The control finding: every functional measure that ran is below its threshold."""
    kl = num((report.get("kl") or {}).get("mean"))
    layers = (report.get("activations") or {}).get("layers") or []
    min_cos = min((num(e.get("cosine"), 1.0) for e in layers), default=float("nan"))
    modules = (report.get("weights") or {}).get("modules") or []
    max_w = max((finite_num(m.get("relative_change"), 0.0) for m in modules), default=0.0)
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
"""Finding rules; each reads the report dict and returns zero or more findings."""

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
    report: dict, thresholds: Thresholds | None = None, *, limit: int | None = 5
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
    """
    th = thresholds or Thresholds()
    broken = broken_sections(report)
    found = broken_findings(report)
    for rule in RULES:
        reads = READS.get(rule)
        if broken and (reads is None or any(sec in broken for sec in reads)):
            continue
        try:
            found.extend(rule(report, th))
        except (
            TypeError,
            ValueError,
            KeyError,
            AttributeError,
        ):  # a malformed section never breaks the summary
            continue
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
