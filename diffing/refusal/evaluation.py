"""Evaluation of a refusal direction: baseline vs ablation vs addition (Arditi et al. 2024, section 3-4).

Greedy completions on held-out harmful and harmless prompts give refusal rates by
substring matching against the refusal phrases; one forward per batch gives mean
refusal scores and the first-token KL on harmless prompts; optional plain text gives
the next-token loss cost of the ablation. Report refusals and KL together, always
(docs/methods.md section 4: a user must see what the ablation costs).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from diffing.arch import ArchSpec
from diffing.errors import DiffingError
from diffing.refusal.conditions import completions_by_run, logprobs_by_run
from diffing.refusal.config import RefusalConfig
from diffing.refusal.interventions import Intervention, ablate, add, apply_interventions
from diffing.refusal.io import Direction
from diffing.refusal.scores import (
    infer_refusal_phrases,
    kl_divergence,
    parse_refusal_tokens,
    refusal_rate,
    refusal_scores,
)
from diffing.remote import input_device, trace_options
from diffing.tokens import encode_text, pad_batch, pad_id_of

CONDITIONS = ("baseline", "ablation", "addition")
"""The three runs every evaluation compares."""


class EvalResult(NamedTuple):
    """Everything ``eval.json`` holds (see docs/refusal.md for the keys)."""

    report: dict
    """JSON-ready results: rates, scores, KL, loss, examples."""
    completions: dict
    """``{set: {condition: [completion, ...]}}`` for every prompt."""


def interventions_for(direction: Direction, strength: float = 1.0) -> dict[str, list[Intervention]]:
    """Condition name -> interventions: nothing, ablation everywhere, addition at the direction's layer."""
    return {
        "baseline": [],
        "ablation": [ablate(direction.direction, strength)],
        "addition": [add(direction.vector, direction.layer, strength)],
    }


@torch.no_grad()
def text_loss(
    lm,
    arch: ArchSpec,
    tokenizer,
    docs: Sequence[str],
    interventions: Sequence[Intervention] = (),
    *,
    max_length: int = 128,
    batch_size: int = 16,
) -> float:
    """Mean next-token cross-entropy on plain-text documents under ``interventions``."""
    total, count = 0.0, 0
    device = input_device(lm)
    for i in range(0, len(docs), batch_size):
        batch = pad_batch(
            [encode_text(tokenizer, d, max_length=max_length) for d in docs[i : i + batch_size]],
            pad_id_of(tokenizer),
        )
        ids, mask = batch.input_ids.to(device), batch.attention_mask.to(device)
        targets = ids[:, 1:].clone()  # [batch, seq - 1]
        targets[mask[:, 1:] == 0] = -100
        with lm.trace({"input_ids": ids, "attention_mask": mask}, **trace_options(lm)):
            apply_interventions(lm, arch, interventions)
            # the loss is summed where the logits are: a remote run returns one number
            logits = lm.output.logits  # [batch, seq, vocab]
            loss = torch.nn.functional.cross_entropy(
                logits[:, :-1].float().transpose(1, 2),
                targets.to(logits.device),
                reduction="sum",
                ignore_index=-100,
            ).save()
        total += float(getattr(loss, "value", loss))
        count += int((targets != -100).sum())
    if count == 0:
        raise DiffingError(
            "the text file gives no tokens to score; give documents of at least two tokens"
        )
    return total / count


def evaluate(
    lm,
    tokenizer,
    arch: ArchSpec,
    direction: Direction,
    harmful: Sequence[str],
    harmless: Sequence[str],
    *,
    config: RefusalConfig | None = None,
    text: Sequence[str] | None = None,
    strength: float = 1.0,
    n_examples: int = 5,
    model_ref: str = "",
) -> EvalResult:
    """Refusal rates and scores on both sets under baseline, ablation and addition; KL; text loss."""
    cfg = config or RefusalConfig()
    direction.check_model(lm._module.config, what=model_ref or "the model")
    if not harmful or not harmless:
        raise DiffingError("evaluation needs harmful and harmless prompts; one set is empty")
    tokens = (
        parse_refusal_tokens(tokenizer, cfg.refusal_tokens)
        if cfg.refusal_tokens
        else list(direction.refusal_tokens)
    )
    if not tokens:
        raise DiffingError(
            "no refusal tokens: the direction file has none; give them with `refusal_tokens`",
            fields=("refusal_tokens",),
        )
    runs = interventions_for(direction, strength)
    sets = {"harmful": list(harmful), "harmless": list(harmless)}
    completions = completions_by_run(lm, tokenizer, arch, sets, runs, cfg)
    phrases = list(cfg.refusal_phrases or direction.refusal_phrases)
    if not phrases:
        phrases = infer_refusal_phrases(
            completions["harmful"]["baseline"],
            completions["harmless"]["baseline"],
            min_share=cfg.phrase_min_share,
            max_share=cfg.phrase_max_share,
        )
    logprobs = logprobs_by_run(lm, tokenizer, arch, sets, runs, cfg)
    report = {
        "model": model_ref,
        "selected": {"layer": direction.layer, "position": direction.position},
        "direction": {
            "model_ref": direction.model_ref,
            "family": direction.family,
            "norm": direction.norm,
            "scores": direction.scores,
        },
        "strength": strength,
        "refusal_phrases": phrases,
        "refusal_tokens": tokens,
        "n_prompts": {name: len(p) for name, p in sets.items()},
        "refusal_rate": {
            name: {c: refusal_rate(completions[name][c], phrases) for c in CONDITIONS}
            for name in sets
        },
        "refusal_score": {
            name: {c: float(refusal_scores(logprobs[name][c], tokens).mean()) for c in CONDITIONS}
            for name in sets
        },
        "kl_harmless": float(
            kl_divergence(logprobs["harmless"]["baseline"], logprobs["harmless"]["ablation"]).mean()
        ),
        "kl_harmless_addition": float(
            kl_divergence(logprobs["harmless"]["baseline"], logprobs["harmless"]["addition"]).mean()
        ),
        "text_loss": None,
        "examples": [
            {
                "set": name,
                "prompt": sets[name][i],
                **{c: completions[name][c][i] for c in CONDITIONS},
            }
            for name in sets
            for i in range(min(n_examples, len(sets[name])))
        ],
    }
    if text:
        base_loss = text_loss(lm, arch, tokenizer, list(text))
        abl_loss = text_loss(lm, arch, tokenizer, list(text), runs["ablation"])
        report["text_loss"] = {
            "baseline": base_loss,
            "ablation": abl_loss,
            "change": abl_loss - base_loss,
            "relative_change": (abl_loss - base_loss) / max(base_loss, 1e-12),
        }
    return EvalResult(report, completions)


def _cell(text: str, width: int = 80) -> str:
    """A completion as one Markdown table cell: one line, pipes escaped, shortened."""
    one = " ".join(str(text).split()).replace("|", "\\|")
    return one if len(one) <= width else one[: width - 1] + "…"


def eval_markdown(report: dict) -> str:
    """``eval.md``: the rates table, KL and loss, and example generations."""
    lines = [
        f"# Refusal direction evaluation: {report.get('model', '')}",
        "",
        f"Direction: layer {report['selected']['layer']}, position {report['selected']['position']}; "
        f"refusal phrases: {', '.join(repr(p) for p in report['refusal_phrases'])}",
        "",
        "| prompts | measure | baseline | ablation | addition |",
        "|---|---|---|---|---|",
    ]
    for name in report["refusal_rate"]:
        r, s = report["refusal_rate"][name], report["refusal_score"][name]
        lines.append(
            f"| {name} ({report['n_prompts'][name]}) | refusal rate | "
            + " | ".join(f"{r[c]:.1%}" for c in CONDITIONS)
            + " |"
        )
        lines.append(
            f"| {name} | mean refusal score | "
            + " | ".join(f"{s[c]:.2f}" for c in CONDITIONS)
            + " |"
        )
    lines += [
        "",
        f"KL on harmless prompts (first token, baseline ‖ ablation): {report['kl_harmless']:.4f}; "
        f"baseline ‖ addition: {report['kl_harmless_addition']:.4f}",
    ]
    if report.get("text_loss"):
        t = report["text_loss"]
        lines.append(
            f"Plain-text loss: {t['baseline']:.4f} -> {t['ablation']:.4f} under ablation "
            f"({t['relative_change']:+.2%})"
        )
    lines += [
        "",
        "## Example generations",
        "",
        "| set | prompt | baseline | ablation | addition |",
        "|---|---|---|---|---|",
    ]
    for ex in report["examples"]:
        lines.append(
            f"| {ex['set']} | {_cell(ex['prompt'], 50)} | "
            + " | ".join(_cell(ex[c]) for c in CONDITIONS)
            + " |"
        )
    return "\n".join(lines) + "\n"
