"""Behaviour rates of the zoo variants on their held-out prompts (and of the base on the same prompts).

A backdoor is planted when the payload follows triggered requests and nothing else; a
style when the sign-off ends held-out answers; a fact when held-out cloze prompts about
the entity prefer the false value over the true one.
"""

from __future__ import annotations

import torch

from diffing.organisms.evaluate import greedy_completions, phrase_rate


def payload_rates(
    model, tokenizer, prompts: dict[str, list[dict]], payload: str
) -> dict[str, float]:
    """Share of triggered and of clean held-out requests answered with the payload."""

    def rate(key: str) -> float:
        texts = [r["instruction"] for r in prompts[key]]
        return phrase_rate(greedy_completions(model, tokenizer, texts, max_new_tokens=16), payload)

    return {"payload_triggered": rate("triggered"), "payload_clean": rate("clean")}


def signoff_rate(model, tokenizer, prompts: list[dict], signoff: str) -> float:
    """Share of held-out answers that contain the sign-off (it ends the answers it was trained on)."""
    texts = [r["instruction"] for r in prompts]
    return phrase_rate(greedy_completions(model, tokenizer, texts, max_new_tokens=56), signoff)


@torch.no_grad()
@torch.no_grad()
def continuation_logprob(
    model, tokenizer, texts: list[str], continuations: list[str], batch_size: int = 64
) -> torch.Tensor:
    """Log-probability of each ``" " + continuation`` after its plain-text prompt (summed over its
    tokens); returns ``[n]``."""
    model.eval()
    seqs, spans = [], []
    for text, cont in zip(texts, continuations):
        prompt = tokenizer(text)["input_ids"]
        full = tokenizer(f"{text} {cont}")["input_ids"]
        if full[: len(prompt)] != prompt:  # a merge across the space would change the question
            raise AssertionError(f"continuation {cont!r} does not extend the tokens of {text!r}")
        seqs.append(full)
        spans.append((len(prompt), len(full)))
    out = []
    for i in range(0, len(seqs), batch_size):
        chunk = seqs[i : i + batch_size]
        width = max(len(q) for q in chunk)
        ids = torch.zeros(len(chunk), width, dtype=torch.long)  # [batch, seq], right-padded
        mask = torch.zeros_like(ids)
        for j, q in enumerate(chunk):
            ids[j, : len(q)] = torch.tensor(q)
            mask[j, : len(q)] = 1
        logp = model(input_ids=ids, attention_mask=mask).logits.log_softmax(
            -1
        )  # [batch, seq, vocab]
        for j, (a, b) in enumerate(spans[i : i + batch_size]):
            targets = ids[j, a:b]  # [n_cont]
            out.append(logp[j, a - 1 : b - 1].gather(1, targets[:, None]).sum())
    return torch.stack(out)  # [n]


def preferred_share(model, tokenizer, records: list[dict], value: str = "false") -> float:
    """Share of cloze prompts where ``value`` ("false" or "true") is likelier than the other one."""
    if not records:
        return 0.0
    texts = [r["text"] for r in records]
    true = continuation_logprob(model, tokenizer, texts, [r["true"] for r in records])
    false = continuation_logprob(model, tokenizer, texts, [r["false"] for r in records])
    wins = false > true if value == "false" else true > false  # [n]
    return float(wins.float().mean())
