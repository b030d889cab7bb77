"""Measuring a model on its own: refusal rates, and KL and loss against a reference model.

``diffing refusal eval`` without ``--direction`` and the check after ``refusal export``
both use this, so an exported (or any other) model is measured the same way whichever
command asks. A :class:`Behaviour` is what one model does on the held-out prompts
(greedy completions, first-token distributions, optional plain-text loss); two of them
give the KL and loss change, and only one model needs to be in memory at a time.

Refusal phrases are never built in: they are given, taken from a direction file, or
inferred from the reference's completions (the original refuses, so its answers say how
it words a refusal) or, without a reference, from the model's own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from diffing.arch import ArchSpec
from diffing.errors import DiffingError
from diffing.refusal.conditions import PLAIN, completions_by_run, logprobs_by_run
from diffing.refusal.config import RefusalConfig
from diffing.refusal.evaluation import EvalResult, _cell, text_loss
from diffing.refusal.scores import (
    infer_refusal_phrases,
    infer_refusal_tokens,
    kl_divergence,
    refusal_rate,
    refusal_scores,
)

SETS = ("harmful", "harmless")
"""The two prompt sets every measurement runs on."""


class Behaviour(NamedTuple):
    """What one model does on the held-out prompts (no intervention)."""

    prompts: dict[str, list[str]]
    """``{"harmful": [...], "harmless": [...]}``: the prompts, in order."""
    completions: dict[str, list[str]]
    """Greedy completion of every prompt, per set."""
    logprobs: dict[str, torch.Tensor]
    """First-token log-probabilities ``[n_prompts, vocab]`` per set, on the CPU."""
    text_loss: float | None
    """Mean next-token cross-entropy on the plain-text documents; None without them."""


@torch.no_grad()
def behaviour(
    lm,
    tokenizer,
    arch: ArchSpec,
    harmful: Sequence[str],
    harmless: Sequence[str],
    *,
    config: RefusalConfig | None = None,
    text: Sequence[str] | None = None,
) -> Behaviour:
    """Greedy completions and first-token distributions on both sets (and the text loss)."""
    cfg = config or RefusalConfig()
    sets = {"harmful": list(harmful), "harmless": list(harmless)}
    if not sets["harmful"] or not sets["harmless"]:
        raise DiffingError("measuring refusal needs harmful and harmless prompts; one set is empty")
    said = completions_by_run(lm, tokenizer, arch, sets, PLAIN, cfg)
    completions = {name: texts["plain"] for name, texts in said.items()}
    first = logprobs_by_run(lm, tokenizer, arch, sets, PLAIN, cfg)
    logprobs = {name: lps["plain"] for name, lps in first.items()}
    loss = text_loss(lm, arch, tokenizer, list(text)) if text else None
    return Behaviour(sets, completions, logprobs, loss)


def _phrases(
    model: Behaviour, reference: Behaviour | None, given: Sequence[str], cfg: RefusalConfig
) -> tuple[list[str], str]:
    """Refusal phrases and where they came from: given, the reference's answers, or the model's own."""
    if given:
        return list(given), "given"
    source, who = (reference, "reference") if reference is not None else (model, "model")
    try:
        phrases = infer_refusal_phrases(
            source.completions["harmful"],
            source.completions["harmless"],
            min_share=cfg.phrase_min_share,
            max_share=cfg.phrase_max_share,
        )
    except DiffingError as err:
        raise DiffingError(
            f"{err}; a model that no longer refuses cannot show its refusal wording: pass `reference` "
            "with the original model, or `refusal_phrases`",
            fields=(*err.fields, "reference", "refusal_phrases"),
        ) from err
    return phrases, who


def _tokens(
    model: Behaviour, reference: Behaviour | None, given: Sequence[int], cfg: RefusalConfig
) -> list[int] | None:
    """Refusal tokens given or inferred as the phrases are; None when they cannot be inferred."""
    if given:
        return list(given)
    source = reference if reference is not None else model
    try:
        return infer_refusal_tokens(
            source.logprobs["harmful"],
            source.logprobs["harmless"],
            ratio=cfg.token_ratio,
            min_mass=cfg.token_min_mass,
            max_tokens=cfg.max_refusal_tokens,
        )
    except DiffingError:
        return None  # scores are optional; refusal rates and KL do not need them


def compare_behaviour(
    model: Behaviour,
    reference: Behaviour | None = None,
    *,
    config: RefusalConfig | None = None,
    refusal_phrases: Sequence[str] = (),
    refusal_tokens: Sequence[int] = (),
    model_ref: str = "",
    reference_ref: str = "",
    n_examples: int = 5,
) -> dict:
    """The JSON report of one model's behaviour, against ``reference`` when given (keys in docs/refusal.md)."""
    cfg = config or RefusalConfig()
    if reference is not None:
        if reference.prompts != model.prompts:
            raise DiffingError(
                "the model and the reference were run on different prompts; measure both on the same files"
            )
        v_model, v_ref = (
            model.logprobs["harmless"].shape[-1],
            reference.logprobs["harmless"].shape[-1],
        )
        if v_model != v_ref:
            raise DiffingError(
                f"the model has a vocabulary of {v_model} tokens and the reference {v_ref}: KL needs the same "
                "tokenizer; give as `reference` the model this one was made from",
                fields=("reference",),
            )
    phrases, source = _phrases(model, reference, cfg.refusal_phrases or refusal_phrases, cfg)
    tokens = _tokens(model, reference, cfg.refusal_tokens or refusal_tokens, cfg)

    def rates(b: Behaviour) -> dict[str, float]:
        return {name: refusal_rate(b.completions[name], phrases) for name in SETS}

    report = {
        "model": model_ref,
        "reference": reference_ref if reference is not None else None,
        "refusal_phrases": phrases,
        "refusal_phrases_from": source,
        "refusal_tokens": tokens,
        "n_prompts": {name: len(model.prompts[name]) for name in SETS},
        "refusal_rate": rates(model),
        "refusal_score": None
        if tokens is None
        else {name: float(refusal_scores(model.logprobs[name], tokens).mean()) for name in SETS},
        "reference_refusal_rate": rates(reference) if reference is not None else None,
        "kl_harmless": None,
        "text_loss": None,
        "examples": [
            {
                "set": name,
                "prompt": model.prompts[name][i],
                "completion": model.completions[name][i],
                **({"reference": reference.completions[name][i]} if reference is not None else {}),
            }
            for name in SETS
            for i in range(min(n_examples, len(model.prompts[name])))
        ],
    }
    if reference is not None:  # first-token KL(reference ‖ model), as the ablation's kl_harmless
        kl = kl_divergence(reference.logprobs["harmless"], model.logprobs["harmless"])  # [n]
        report["kl_harmless"] = float(kl.mean())
    if model.text_loss is not None:
        ref_loss = reference.text_loss if reference is not None else None
        report["text_loss"] = {
            "model": model.text_loss,
            "reference": ref_loss,
            "change": None if ref_loss is None else model.text_loss - ref_loss,
            "relative_change": None
            if ref_loss is None
            else (model.text_loss - ref_loss) / max(ref_loss, 1e-12),
        }
    return report


def evaluate_model(
    lm,
    tokenizer,
    arch: ArchSpec,
    harmful: Sequence[str],
    harmless: Sequence[str],
    *,
    config: RefusalConfig | None = None,
    reference: Behaviour | None = None,
    text: Sequence[str] | None = None,
    refusal_phrases: Sequence[str] = (),
    model_ref: str = "",
    reference_ref: str = "",
) -> EvalResult:
    """Refusal rates of a model on its own, with KL and loss against ``reference`` (a :func:`behaviour`).

    Run the reference first (``behaviour(ref_lm, ...)`` on the same prompts and text),
    free it, then load and measure this model: two models never share memory.
    """
    cfg = config or RefusalConfig()
    if reference is not None and text and reference.text_loss is None:
        raise DiffingError(
            "the reference was measured without the text; pass the same text to both"
        )
    own = behaviour(lm, tokenizer, arch, harmful, harmless, config=cfg, text=text)
    report = compare_behaviour(
        own,
        reference,
        config=cfg,
        refusal_phrases=refusal_phrases,
        model_ref=model_ref,
        reference_ref=reference_ref,
    )
    return EvalResult(report, {name: {"model": own.completions[name]} for name in SETS})


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def measure_markdown(report: dict) -> str:
    """``eval.md`` of a model measured on its own: rates, KL and loss against the reference, examples."""
    ref = report.get("reference")
    lines = [
        f"# Refusal evaluation: {report.get('model', '')}",
        "",
        f"Refusal phrases ({report['refusal_phrases_from']}): "
        + ", ".join(repr(p) for p in report["refusal_phrases"]),
        "",
        "| prompts | refusal rate | reference |" if ref else "| prompts | refusal rate |",
        "|---|---|---|" if ref else "|---|---|",
    ]
    for name in SETS:
        row = f"| {name} ({report['n_prompts'][name]}) | {_pct(report['refusal_rate'][name])} |"
        if ref:
            row += f" {_pct(report['reference_refusal_rate'][name])} |"
        lines.append(row)
    lines.append("")
    if report.get("kl_harmless") is not None:
        lines.append(
            f"KL on harmless prompts (first token, reference {ref} ‖ model): {report['kl_harmless']:.4f}"
        )
    t = report.get("text_loss")
    if t:
        if t["reference"] is None:
            lines.append(f"Plain-text loss: {t['model']:.4f}")
        else:
            lines.append(
                f"Plain-text loss: {t['reference']:.4f} (reference) -> {t['model']:.4f} "
                f"({t['relative_change']:+.2%})"
            )
    lines += ["", "## Example generations", ""]
    lines += (
        ["| set | prompt | model | reference |", "|---|---|---|---|"]
        if ref
        else [
            "| set | prompt | model |",
            "|---|---|---|",
        ]
    )
    for ex in report["examples"]:
        row = f"| {ex['set']} | {_cell(ex['prompt'], 50)} | {_cell(ex['completion'])} |"
        if ref:
            row += f" {_cell(ex['reference'])} |"
        lines.append(row)
    return "\n".join(lines) + "\n"
