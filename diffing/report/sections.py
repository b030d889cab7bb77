"""One renderer per report section: report dict in, escaped HTML fragment out.

The renderers read only the keys docs/report.md documents and tolerate missing
ones (a number shows as '-'). A section that did not run shows its reason.
Everything that came from a model or data is escaped by the helpers in
:mod:`diffing.report.html`.
"""

from __future__ import annotations

from typing import Any

from diffing.report import figures
from diffing.report.config import METHOD_KEYS
from diffing.report.html import Raw, esc, figure, section, skipped, table, tokens_highlighted
from diffing.report.nonfinite import listed
from diffing.report.util import fmt_num, num, role_items, token_text

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


def skip_reason(report: dict, key: str) -> str | None:
    """The skip reason of the step behind ``key``, or None when it ran."""
    st = (report.get("sections") or {}).get(SECTION_OF.get(key, key)) or {}
    if st.get("status", "ok") != "ok":
        return st.get("reason") or st.get("status")
    if report.get(key) is None:
        return st.get("reason") or "this step produced no result for this section"
    return None


def kv(d: dict, keys: list[str] | None = None) -> Raw:
    """A definition list of the scalar entries of ``d`` (nested dicts flattened with dots)."""
    flat: list[tuple[str, Any]] = []

    def walk(prefix: str, v: Any) -> None:
        if isinstance(v, dict):
            for k, sub in v.items():
                walk(f"{prefix}.{k}" if prefix else str(k), sub)
        elif not isinstance(v, list):
            flat.append((prefix, v))
        elif len(v) <= 8 and all(
            isinstance(x, (int, float, str)) for x in v
        ):  # short lists of scalars
            flat.append((prefix, ", ".join(fmt_num(x) for x in v)))

    walk("", {k: d[k] for k in (keys or d) if k in d})
    rows = "".join(f"<dt>{esc(k)}</dt><dd>{esc(fmt_num(v))}</dd>" for k, v in flat)
    return Raw(f'<dl class="kv">{rows}</dl>')


def summary(report: dict) -> Raw:
    """The five findings, each linked to its evidence."""
    items = []
    for f in report.get("findings") or []:
        items.append(
            f'<li id="finding-{esc(f.get("id"))}"><a href="{esc(f.get("anchor", "#"))}"><strong>{esc(f.get("title"))}</strong></a>'
            f'<div class="detail">{esc(f.get("detail", ""))}</div></li>'
        )
    body = (
        f'<ol class="findings">{"".join(items)}</ol>'
        if items
        else skipped("no section produced a finding")
    )
    broken, more = listed(report)
    if broken:  # all sections, not only the first path of each that made a finding
        rows = "".join(f"<li><code>{esc(p)}</code>: {esc(k)}</li>" for p, k in broken)
        rows += f"<li>and {more} more (report.json lists every one)</li>" if more else ""
        body = Raw(
            '<div class="non-finite"><strong>Non-finite statistics: the model or data is broken; '
            f"no finding is drawn from them.</strong><ul>{rows}</ul></div>" + body
        )
    return section("summary", "Summary: what changed", body)


def setup(report: dict) -> Raw:
    """Models, data and which steps ran."""
    m = report.get("models") or {}
    steps = [
        (name, st.get("status"), f"{num(st.get('seconds'), 0.0):.1f} s", st.get("reason") or "")
        for name, st in (report.get("sections") or {}).items()
    ]
    run = report.get("config") or {}
    settings = [
        "data",
        "harmful",
        "harmless",
        "tokens",
        "layers",
        "adl_layer",
        "refusal_prompts",
        "crosscoder",
        "train_crosscoder",
    ]
    rows = [
        (k, ", ".join(map(str, run[k])) if isinstance(run[k], list) else run[k])
        for k in settings
        if run.get(k) not in (None, [])
    ]
    for k, v in (
        report.get("inputs") or {}
    ).items():  # what the steps actually read (bundled files too)
        rows.append(
            (
                k,
                ", ".join(map(str, v))
                if isinstance(v, list)
                else fmt_num(v)
                if not isinstance(v, dict)
                else ", ".join(f"{a}: {b}" for a, b in v.items()),
            )
        )
    body = (
        kv(m)
        + Raw("<h3>Run settings</h3>")
        + table(["setting", "value"], rows)
        + Raw("<h3>Steps</h3>")
        + table(["step", "status", "time", "reason"], steps)
    )
    notes = m.get("notes") or []
    if notes:
        body += Raw("<ul>" + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>")
    return section("setup", "Models and setup", body)


def weights(report: dict) -> Raw:
    """Per-module relative weight change."""
    reason = skip_reason(report, "weights")
    if reason:
        return section("weights", "Weight changes", skipped(reason))
    w = report["weights"]
    mods = w.get("modules") or []
    rows = [(m.get("name"), _change(m), m.get("effective_rank")) for m in mods[:25]]
    body = figure(figures.weights_bar(mods), "Largest relative weight changes") + table(
        ["module", "relative change", "effective rank (90% energy)"], rows
    )
    intro = f"{len(mods)} parameter tensors changed; the top 25 are listed."
    if w.get("source") == "sketch":
        k = w.get("sketch_size")
        intro += (
            f" The weights stayed on the remote server: matrices' changes are estimated from"
            f" {k} x {k} random sketches computed there (± one standard error); vectors are exact;"
            f" an effective rank is shown only when the sketch resolves it (low-rank deltas)."
        )
    return section("weights", "Weight changes", body, intro=intro)


def _change(m: dict):
    """A module's relative change, with its standard error when it is an estimate."""
    value, err = num(m.get("relative_change")), m.get("relative_error")
    return f"{value:.4g} ± {100 * err:.0f}%" if err is not None and value == value else value


def activations(report: dict) -> Raw:
    """Per-layer activation differences, overall and by token role."""
    reason = skip_reason(report, "activations")
    if reason:
        return section("activations", "Activation changes by layer and token role", skipped(reason))
    layers = report["activations"].get("layers") or []
    rows = [
        (
            e.get("layer"),
            num(e.get("cosine")),
            num(e.get("mean_diff_norm")),
            num(e.get("relative_norm_change")),
        )
        for e in layers
    ]
    body = figure(
        figures.activations_by_layer(layers),
        "Per-layer mean cosine and mean-difference norm, by role",
    )
    body += table(["layer", "mean cosine", "||mean diff||", "relative norm change"], rows)
    role_rows = [
        (
            e.get("layer"),
            r,
            num(v, float("nan"), "cosine"),
            num(v, float("nan"), "mean_diff_norm"),
            num(v, float("nan"), "tokens"),
        )
        for e in layers
        for r, v in role_items(e.get("by_role"))
    ]
    if role_rows:
        body += Raw("<h3>By token role</h3>") + table(
            ["layer", "role", "mean cosine", "||mean diff||", "tokens"], role_rows
        )
    return section("activations", "Activation changes by layer and token role", body)


def context_html(c: dict, peak: float | None = None) -> Raw:
    """One top-KL or top-activation context: tokens with the hot one highlighted."""
    if (
        isinstance(c.get("tokens"), list) and "index_in_window" in c
    ):  # a crosscoder context: one activating token
        acts = [0.0] * len(c["tokens"])
        if 0 <= int(c["index_in_window"]) < len(acts):
            acts[int(c["index_in_window"])] = num(c.get("activation"), 1.0)
        return tokens_highlighted([str(t) for t in c["tokens"]], acts, peak=peak)
    if (
        isinstance(c.get("context"), str) and "token" in c
    ):  # text before the hot token, then the token
        return Raw(
            f'<span class="ctx">{esc(c["context"])}<span class="tok" style="background: rgba(255, 140, 0, 0.85)">'
            f"{esc(c['token'])}</span></span>"
        )
    toks = c.get("tokens") or c.get("context_tokens")
    if isinstance(toks, list) and toks:
        acts = c.get("acts") or c.get("activations") or c.get("values")
        if acts is None and "position" in c:
            acts = [1.0 if i == c.get("position") else 0.0 for i in range(len(toks))]
        return tokens_highlighted([str(t) for t in toks], acts)
    text = c.get("context") or c.get("text") or ""
    return Raw(f'<span class="ctx">{esc(text)}</span>')


def kl(report: dict) -> Raw:
    """Where the next-token distributions changed most."""
    reason = skip_reason(report, "kl")
    if reason:
        return section("kl", "KL hot spots", skipped(reason))
    k = report["kl"]
    quantiles = ("mean", "median", "p90", "max", "tokens")
    rows = [("all", *[k.get(q) for q in quantiles])]
    rows += [
        (kind, *[k[kind].get(q) for q in quantiles])
        for kind in ("text", "chat")
        if isinstance(k.get(kind), dict)
    ]
    body = table(["tokens from", *quantiles], rows)
    body += figure(figures.kl_by_role(k), "Mean KL(fine-tuned || base) by token role")
    tops = k.get("top_contexts") or []
    rows = [
        (num(c.get("kl")), token_text(c.get("token", "")), c.get("role", ""), context_html(c))
        for c in tops[:15]
        if isinstance(c, dict)
    ]
    if rows:
        body += Raw("<h3>Contexts with the largest KL</h3>") + table(
            ["KL", "token", "role", "context"], rows
        )
    return section(
        "kl",
        "KL hot spots",
        body,
        intro="KL(p_f || p_b) of the next-token distributions, per token, in nats.",
    )


def adl(report: dict) -> Raw:
    """The Activation Difference Lens: promoted/suppressed tokens and steered samples."""
    reason = skip_reason(report, "adl")
    if reason:
        return section("adl", "Activation Difference Lens", skipped(reason))
    a = report["adl"]
    prom, supp = a.get("promoted_tokens") or [], a.get("suppressed_tokens") or []
    body = kv(a, ["layer", "positions"])
    body += Raw(
        '<div class="cards">'
        + figure(
            figures.token_scores(prom, "promoted", "#2a9d8f"), "Tokens the mean difference promotes"
        )
        + figure(figures.token_scores(supp, "suppressed", "#e76f51"), "Tokens it suppresses")
        + "</div>"
    )
    body += table(
        ["rank", "promoted", "score", "suppressed", "score"],
        [
            (
                i + 1,
                token_text(p.get("token")),
                num(p.get("score")),
                token_text(s.get("token")) if s else "",
                num((s or {}).get("score")),
            )
            for i, (p, s) in enumerate(zip(prom[:15], list(supp[:15]) + [None] * 15))
        ],
    )
    steering = a.get("steering")
    examples = steering.get("examples") if isinstance(steering, dict) else steering
    examples = [e for e in examples or [] if isinstance(e, dict)]
    if examples:
        cols = [c for c in ("prompt", "unsteered", "steered") if c in examples[0]]
        body += Raw("<h3>Steering the fine-tuned model with the difference</h3>")
        body += table(
            cols,
            [
                tuple(Raw(f'<span class="gen">{esc(e.get(c, ""))}</span>') for c in cols)
                for e in examples[:6]
            ],
        )
    return section(
        "adl",
        "Activation Difference Lens",
        body,
        intro="Mean x_f - x_b over the first positions of plain text, read through the fine-tuned logit lens.",
    )
