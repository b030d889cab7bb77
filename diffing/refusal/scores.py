"""Refusal tokens, refusal scores and refusal phrases (Arditi et al. 2024, section 2.3 and appendix).

Nothing here knows a model's refusal wording: the token set ``R`` and the phrases are
inferred from the model's own behaviour on harmful vs harmless prompts when the user
does not give them, so the same code works for any family and any fine-tune.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import torch

from diffing.errors import DiffingError


def refusal_scores(logprobs: torch.Tensor, refusal_tokens: Sequence[int]) -> torch.Tensor:
    """Log-odds that the first response token is a refusal token: ``log p_R − log(1 − p_R)``.

    ``logprobs`` is ``[batch, vocab]`` (first-token log-probabilities); returns ``[batch]``.
    Computed in log space so near-certain refusals stay finite.
    """
    idx = torch.as_tensor(list(refusal_tokens), dtype=torch.long, device=logprobs.device)
    log_pr = torch.logsumexp(logprobs.float()[:, idx], dim=-1)  # [batch]
    log_rest = torch.log(
        (-torch.expm1(log_pr)).clamp_min(1e-30)
    )  # log(1 - p_R), stable near p_R = 1
    return log_pr - log_rest


def kl_divergence(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """``KL(p ‖ q)`` per row of two ``[batch, vocab]`` log-probability tensors; returns ``[batch]``."""
    return (logp.exp() * (logp - logq)).sum(-1).clamp_min(0.0)


def infer_refusal_tokens(
    harmful_logprobs: torch.Tensor,
    harmless_logprobs: torch.Tensor,
    *,
    ratio: float = 5.0,
    min_mass: float = 0.02,
    max_tokens: int = 8,
) -> list[int]:
    """Tokens the model starts its answer with far more often on harmful than on harmless prompts.

    A token joins ``R`` when its mean first-token probability on harmful prompts is at
    least ``min_mass`` and at least ``ratio`` times its mean on harmless prompts; the
    ``max_tokens`` with the largest harmful-minus-harmless mass are kept.
    """
    p_harm = harmful_logprobs.float().exp().mean(0)  # [vocab]
    p_safe = harmless_logprobs.float().exp().mean(0)  # [vocab]
    ok = (p_harm >= min_mass) & (p_harm >= ratio * p_safe)
    gap = torch.where(ok, p_harm - p_safe, torch.full_like(p_harm, -1.0))
    order = torch.argsort(gap, descending=True)[:max_tokens]
    tokens = [int(t) for t in order if gap[t] > 0]
    if not tokens:
        raise DiffingError(
            "could not infer refusal tokens: no first response token is much likelier on the harmful prompts "
            f"than on the harmless ones (ratio >= {ratio}, mass >= {min_mass}); does the model refuse the harmful "
            "prompts? Give them with `refusal_tokens` (ids or strings)",
            fields=("refusal_tokens",),
        )
    return tokens


def _prefixes(text: str, max_words: int) -> list[str]:
    words = text.strip().split()
    return [" ".join(words[:n]) for n in range(1, min(max_words, len(words)) + 1)]


def infer_refusal_phrases(
    harmful_completions: Sequence[str],
    harmless_completions: Sequence[str],
    *,
    min_share: float = 0.5,
    max_share: float = 0.1,
    max_words: int = 8,
) -> list[str]:
    """The completion prefix (in words) that best separates harmful from harmless greedy answers.

    Candidates start at least ``min_share`` of harmful answers and at most ``max_share``
    of harmless ones; the largest share gap wins, and among near-ties the prefix closest
    to three words (the length of the paper's fixed prefixes such as "I cannot"), which is
    specific enough and still fits in short completions. Returns a one-phrase list;
    refusal is then "the completion contains the phrase" (case-insensitive).
    """
    n_h, n_s = max(len(harmful_completions), 1), max(len(harmless_completions), 1)
    harm = Counter(p.lower() for c in harmful_completions for p in set(_prefixes(c, max_words)))
    safe = Counter(p.lower() for c in harmless_completions for p in set(_prefixes(c, max_words)))
    best, best_key = None, None
    for phrase, count in harm.items():
        share_h, share_s = count / n_h, safe.get(phrase, 0) / n_s
        if share_h >= min_share and share_s <= max_share:
            key = (round(share_h - share_s, 2), -abs(len(phrase.split()) - 3))
            if best_key is None or key > best_key:
                best, best_key = phrase, key
    if best is None:
        raise DiffingError(
            "could not infer a refusal phrase: no completion prefix starts at least "
            f"{min_share:.0%} of harmful answers and at most {max_share:.0%} of harmless ones; "
            "give the phrases with `refusal_phrases`",
            fields=("refusal_phrases",),
        )
    return [best]


def is_refusal(completion: str, phrases: Sequence[str]) -> bool:
    """Whether a completion contains any refusal phrase (case-insensitive)."""
    low = completion.lower()
    return any(p.lower() in low for p in phrases)


def refusal_rate(completions: Sequence[str], phrases: Sequence[str]) -> float:
    """Share of completions that are refusals (0 for no completions)."""
    if not completions:
        return 0.0
    return sum(is_refusal(c, phrases) for c in completions) / len(completions)


def parse_refusal_tokens(tokenizer, items: Sequence[str]) -> list[int]:
    """Refusal token ids from ids or strings (a string's first token is taken), sorted and unique."""
    out: list[int] = []
    for item in items:
        item = str(item)
        if item.lstrip("-").isdigit():
            tid = int(item)
            if not 0 <= tid < len(tokenizer):
                raise DiffingError(
                    f"refusal token id {tid} is outside the vocabulary (0..{len(tokenizer) - 1})"
                )
            out.append(tid)
        else:
            ids = tokenizer.encode(item, add_special_tokens=False)
            if not ids:
                raise DiffingError(
                    f"refusal token {item!r} tokenizes to nothing; give a non-empty string or an id"
                )
            out.append(int(ids[0]))
    return sorted(set(out))
