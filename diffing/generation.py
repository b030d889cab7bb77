"""Greedy generation of answers to single-turn user prompts, batched.

One helper for every place that needs a model's own answers without interventions
(self-generated chat transcripts, quick behaviour checks). Prompts are wrapped in
the tokenizer's chat template with a generation prompt when it has one, else fed as
plain text; batches are left-padded so every row's answer starts at the same column.
Greedy decoding makes the answers a deterministic function of the model and the
prompts, which is what lets callers cache them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch

from diffing.tokens import encode_chat, pad_id_of


class Generated(NamedTuple):
    """Greedy answers of one model to a list of prompts."""

    answers: list[str]
    """The decoded new tokens of each prompt (special tokens dropped), in prompt order."""
    chat_template: bool
    """Whether the prompts were wrapped in the chat template (else fed as plain text)."""


def has_chat_template(tokenizer) -> bool:
    """Whether ``tokenizer`` carries a chat template."""
    return bool(getattr(tokenizer, "chat_template", None))


def prompt_ids(tokenizer, prompt: str, *, chat: bool) -> list[int]:
    """Token ids of one user prompt: chat-formatted with a generation prompt, or plain text."""
    if chat:
        return list(
            encode_chat(
                tokenizer, [{"role": "user", "content": prompt}], add_generation_prompt=True
            ).input_ids
        )
    return list(tokenizer(prompt, add_special_tokens=True)["input_ids"])


def _left_pad(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)``, both ``[batch, width]``, padded on the left."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r) :] = 1
    return ids, mask


@torch.no_grad()
def greedy_answers(
    model: torch.nn.Module,
    tokenizer,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 64,
    batch_size: int = 16,
    max_prompt_tokens: int = 256,
    progress: Callable[[int, int], None] | None = None,
) -> Generated:
    """Greedy answers of the Hugging Face causal LM ``model`` to single-turn user ``prompts``.

    Prompts longer than ``max_prompt_tokens`` keep their last tokens (the generation
    prompt must survive). ``progress(done, total)`` is called after each batch.
    """
    chat = has_chat_template(tokenizer)
    pad = pad_id_of(tokenizer)
    eos = tokenizer.eos_token_id
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    answers: list[str] = []
    try:
        for start in range(0, len(prompts), batch_size):
            rows = [
                prompt_ids(tokenizer, p, chat=chat)[-max_prompt_tokens:]
                for p in prompts[start : start + batch_size]
            ]
            ids, mask = _left_pad(rows, pad)  # [batch, width]
            out = model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=pad,
                eos_token_id=eos,
            )
            new = out[:, ids.shape[1] :].cpu()  # [batch, new_tokens]
            answers += [
                tokenizer.decode(row.tolist(), skip_special_tokens=True).strip() for row in new
            ]
            if progress is not None:
                progress(len(answers), len(prompts))
    finally:
        model.train(was_training)
    return Generated(answers, chat)
