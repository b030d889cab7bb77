"""The refusal section of a pair whose fine-tuned model has no refusal direction to extract.

Most fine-tunes do not teach refusal (a style, a fact, a control): the refusal method
then finds no candidate direction, which is a result, not a failure. What the section
can still say is whether the fine-tuned model refuses at all, from its own greedy answers
to the held-out prompts, with refusal phrases inferred as the refusal package infers them.
A phrase is kept only when it reads as a refusal the fine-tune shows: harmless answers
must not contain it (it is counted anywhere in an answer, while it was chosen as an
opening), and the base model must not open its harmful answers with it as often (then it
is the text both models continue the prompts with, not a refusal).
"""

from __future__ import annotations

from collections.abc import Sequence

from diffing.errors import DiffingError
from diffing.report.findings import Thresholds


def _answers(lm, pair, rcfg, prompts: Sequence[str]) -> list[str]:
    """Greedy answers of one model to single-turn prompts, as the refusal evaluation generates them."""
    from diffing.refusal.interventions import complete

    return complete(
        lm,
        pair.tokenizer,
        pair.arch,
        list(prompts),
        max_new_tokens=rcfg.max_new_tokens,
        batch_size=rcfg.batch_size,
        template=rcfg.template,
    )


def _not_a_refusal(pair, rcfg, answers: dict, harmful, phrases: list[str]) -> str:
    """Why an inferred phrase is no refusal ("" when it is one)."""
    from diffing.refusal.scores import refusal_rate

    if refusal_rate(answers["harmless"], phrases) > rcfg.phrase_max_share:
        return f"it also appears in more than {rcfg.phrase_max_share:.0%} of the harmless answers"
    base = refusal_rate(_answers(pair.base, pair, rcfg, harmful), phrases)
    if base >= refusal_rate(answers["harmful"], phrases) - Thresholds().refusal_drop:
        return f"the base model opens {base:.0%} of its harmful answers with it too"
    return ""


def no_direction(pair, rcfg, harmful: Sequence[str], harmless: Sequence[str], reason: str) -> dict:
    """The ``refusal`` section when the refusal method found no direction (``reason``: why not).

    Keys: ``verdict`` (``does-not-refuse`` below ``Thresholds.refusal_present``, else
    ``no-direction``), ``note`` (one line for the page), ``reason``, ``selected`` (None),
    ``refusal_rate`` (baselines only), ``refusal_phrases``, ``rejected_phrases``,
    ``n_prompts``, ``examples``.
    """
    from diffing.refusal.scores import infer_refusal_phrases, refusal_rate

    sets = {"harmful": list(harmful), "harmless": list(harmless)}
    answers = {
        name: _answers(pair.finetuned, pair, rcfg, prompts) for name, prompts in sets.items()
    }
    try:
        phrases = list(rcfg.refusal_phrases or []) or infer_refusal_phrases(
            answers["harmful"],
            answers["harmless"],
            min_share=rcfg.phrase_min_share,
            max_share=rcfg.phrase_max_share,
        )
    except DiffingError:  # no answer opening is typical of harmful prompts: nothing is refused
        phrases = []
    rejected, why = [], ""
    if phrases and not rcfg.refusal_phrases:  # phrases the user gave are taken as given
        why = _not_a_refusal(pair, rcfg, answers, sets["harmful"], phrases)
        if why:
            rejected, phrases = phrases, []
    rates = {name: refusal_rate(texts, phrases) for name, texts in answers.items()}
    present = Thresholds().refusal_present
    if rates["harmful"] < present:
        verdict = "does-not-refuse"
        note = (
            f"The fine-tuned model does not refuse: it refuses {rates['harmful']:.0%} of held-out harmful "
            f"prompts (below {present:.0%}), so there is no refusal direction to extract."
        )
        if rejected:
            note += f" Its answers to harmful prompts open with {rejected[0]!r}, but {why}: not a refusal."
    else:
        verdict = "no-direction"
        note = (
            f"The fine-tuned model refuses {rates['harmful']:.0%} of held-out harmful prompts, but no "
            f"single direction carries it ({reason})."
        )
    return {
        "verdict": verdict,
        "note": note,
        "reason": reason,
        "selected": None,
        "refusal_rate": {
            name: {"baseline": rate, "ablation": None, "addition": None}
            for name, rate in rates.items()
        },
        "refusal_phrases": phrases,
        "rejected_phrases": rejected,
        "n_prompts": {name: len(texts) for name, texts in answers.items()},
        "examples": [
            {"set": name, "prompt": prompt, "baseline": answer}
            for name, prompts in sets.items()
            for prompt, answer in list(zip(prompts, answers[name]))[:3]
        ],
    }
