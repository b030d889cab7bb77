"""Emerging words: what the fine-tuned (and amplified) model says that the base does not.

Without a target, amplification still answers "what does the fine-tune make the model
say?": count, per word, the share of prompts whose answer contains it under each setting
(the base alone, the fine-tuned model at α = 0, each amplified α). A word the fine-tune
introduced (a sign-off, a payload, a secret word) is in far more fine-tuned or amplified
answers than base answers; a word of the shared language is in both. The rise of a word
is its largest share at any α >= 0 minus the base's share. Words are what a reader sees
(lower-cased, punctuation stripped), not tokenizer pieces, so the measure is the same
for every tokenizer. Pure Python: it reads completions, not tensors.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from diffing.typed import Num, Result

__all__ = [
    "EmergingWord",
    "WordShare",
    "words_of",
    "prompt_words",
    "word_counts",
    "emerging_words",
    "EMERGING_WORDS",
]

EMERGING_WORDS = 10
"""Emerging words kept in a result, largest rise first."""
WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")
"""A word: letters and digits, with inner apostrophes (``don't``); everything else separates words."""


class WordShare(Result):
    """A word's share of answers under one setting."""

    alpha: Num
    """α (None for the base alone)."""
    share: float
    """Fraction of prompts whose answer contains the word."""


class EmergingWord(Result):
    """A word the fine-tuned or amplified answers use more than the base's (docs/amplify.md)."""

    word: str
    """The word, lower-cased, punctuation stripped."""
    rise: float
    """Its largest share at any α >= 0 minus its share in the base's answers."""
    alpha: float
    """The α of that largest share (0: the fine-tuned model alone; the smallest such α on a tie)."""
    share: float
    """Fraction of prompts whose answer at ``alpha`` contains the word."""
    count: int
    """Prompts whose answer at ``alpha`` contains the word."""
    base: float
    """Fraction of prompts whose base answer contains the word."""
    shares: list[WordShare]
    """Its share per setting: the base alone, then each α in the sweep's order."""


def words_of(text: str) -> set[str]:
    """The distinct words of one completion, lower-cased, punctuation stripped.

    A completion that stops in the middle of a word (cut by the token limit: it ends in a
    letter or digit) loses that last word, which may be a fragment (``bak`` of ``bakers``).
    """
    found = [m.group(0) for m in WORD.finditer(text.lower())]
    if found and text and text[-1].isalnum():
        found = found[:-1]
    return set(found)


def prompt_words(texts: Sequence[str], samples: int = 1) -> list[set[str]]:
    """Per prompt, the words any of its answers contains (``samples`` consecutive answers per prompt).

    Each answer is read on its own (:func:`words_of`: its cut last word dropped), so a word
    counts once per prompt however many of its samples say it.
    """
    k = max(1, samples)
    return [set().union(*(words_of(t) for t in texts[i : i + k])) for i in range(0, len(texts), k)]


def word_counts(settings: Sequence[Sequence[set[str]]]) -> dict[str, list[int]]:
    """Per word, how many prompts' answers contain it under each setting (``settings[s][i]``: prompt i's words)."""
    counts: dict[str, list[int]] = {}
    for s, prompts in enumerate(settings):
        for words in prompts:
            for w in words:
                counts.setdefault(w, [0] * len(settings))[s] += 1
    return counts


def emerging_words(
    base: Sequence[str],
    settings: Sequence[tuple[float, Sequence[str]]],
    *,
    samples: int = 1,
    limit: int = EMERGING_WORDS,
) -> list[EmergingWord]:
    """The ``limit`` words whose share of answers rises most from the base to some α >= 0, plus
    the words the base never says with the largest rises (up to ``limit`` of those in all).

    ``base`` holds the base's answers and ``settings`` ``(α, answers)`` per fine-tuned or
    amplified setting, each with ``samples`` consecutive answers per prompt in the same
    prompt order. Shares are of prompts (a prompt counts when any of its samples says the
    word). Only words with a positive rise are kept; ties go to the higher share, then the
    word's alphabetical order, so the ranking is deterministic.
    """
    if not settings:
        return []
    words = [prompt_words(texts, samples) for texts in [base, *(t for _, t in settings)]]
    counts, n = word_counts(words), [len(w) for w in words]
    alphas: list[float | None] = [None, *(a for a, _ in settings)]
    out = []
    for word, c in counts.items():
        share = [c[s] / n[s] if n[s] else 0.0 for s in range(len(n))]
        best = max(range(1, len(n)), key=lambda s: (share[s], -alphas[s]))  # type: ignore[operator]
        rise = share[best] - share[0]
        if rise <= 0:
            continue
        out.append(
            EmergingWord(
                word=word,
                rise=rise,
                alpha=float(alphas[best]),  # type: ignore[arg-type]
                share=share[best],
                count=c[best],
                base=share[0],
                shares=[
                    WordShare(alpha=None if a is None else float(a), share=v)
                    for a, v in zip(alphas, share)
                ],
            )
        )
    out.sort(key=lambda w: (-w.rise, -w.share, w.word))
    # the words the base never says are kept too (up to ``limit`` of them), even below the
    # shared-language words that merely rise more: they are the stronger evidence of a new behaviour
    kept = out[:limit]
    kept += [w for w in out[limit:] if w.base == 0][
        : max(0, limit - sum(w.base == 0 for w in kept))
    ]
    return kept


def emerging_words_json(data: dict, limit: int = EMERGING_WORDS) -> list[dict] | None:
    """The emerging words of an ``amplify.json`` dictionary, as plain dicts (None without the base alone).

    Each: ``{word, rise, alpha, share, count, base, shares: [{alpha, share}]}`` (``alpha``
    None in ``shares`` is the base alone).
    """
    base = data.get("base_model")
    if not base:
        return None
    samples = int((data.get("config") or {}).get("samples") or 1)
    found = emerging_words(
        [s["completion"] for s in base["samples"]],
        [(r["alpha"], [s["completion"] for s in r["samples"]]) for r in data["alphas"]],
        samples=samples,
        limit=limit,
    )
    return [w.model_dump() for w in found]
