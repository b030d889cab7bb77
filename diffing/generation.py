"""Batched greedy generation: the one decoding helper of the toolkit.

Every place that needs a model's own answers goes through :func:`greedy_answers` (or,
with token ids already made, :func:`generate_ids`): self-generated chat transcripts,
the organisms' behaviour rates, refusal completions under directional ablation or
activation addition, and the Activation-Difference-Lens steering examples. The model
is a Hugging Face causal LM or an nnsight ``LanguageModel`` (local or on NDIF); with
the latter, an optional ``step`` callback runs inside every decoding step, which is
how interventions stay active on the prompt and on every generated token.

Batches are left-padded so every row's answer starts at the same column, prompts can
be cut to their last tokens, answers are bounded in length and cut at the first
end-of-sequence id (the model's end-of-turn ids when its generation config has them).
Greedy decoding makes the answers a deterministic function of the model and the
prompts, which is what lets callers cache them.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch

from diffing.errors import DiffingError
from diffing.tokens import encode_chat, encode_text, pad_id_of


class Generated(NamedTuple):
    """Greedy answers of one model to a list of prompts."""

    answers: list[str]
    """The decoded new tokens of each prompt up to its first end-of-sequence id (special tokens dropped), in prompt order."""
    tokens: list[list[int]]
    """The new token ids of each prompt up to (not including) its first end-of-sequence id."""
    chat_template: bool
    """Whether string prompts were wrapped in the chat template (else fed as plain text)."""


def has_chat_template(tokenizer) -> bool:
    """Whether ``tokenizer`` carries a chat template."""
    return bool(getattr(tokenizer, "chat_template", None))


def prompt_ids(tokenizer, prompt, *, chat: bool, template: str | None = None) -> list[int]:
    """Token ids of one prompt, ready for the model's answer to follow.

    A string is a single user turn in the chat template with a generation prompt when
    ``chat`` (``template`` is a Jinja template for tokenizers without one), else plain
    text with the tokenizer's special tokens. A message list (or ``{"messages": [...]}``)
    is always formatted with the chat template and a generation prompt.
    """
    if isinstance(prompt, dict) and "messages" in prompt:
        prompt = prompt["messages"]
    if isinstance(prompt, str) and not chat:
        return list(encode_text(tokenizer, prompt).input_ids)
    if isinstance(prompt, str):
        prompt = [{"role": "user", "content": prompt}]
    elif not (
        isinstance(prompt, (list, tuple)) and prompt and all(isinstance(m, dict) for m in prompt)
    ):
        raise DiffingError(
            f"cannot use a prompt of type {type(prompt).__name__}: give strings or lists of "
            '{"role", "content"} messages'
        )
    return list(
        encode_chat(
            tokenizer, list(prompt), add_generation_prompt=True, template=template
        ).input_ids
    )


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)``, both ``[batch, seq]``, with padding on the left.

    Left padding puts every row's last prompt token in the last column, so each
    decoding step appends one column for all rows.
    """
    if not rows:
        raise DiffingError("no prompts to generate from")
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if not len(r):
            raise DiffingError(f"prompt {i} encodes to no tokens; give a non-empty prompt")
        ids[i, width - len(r) :] = torch.tensor(list(r), dtype=torch.long)
        mask[i, width - len(r) :] = 1
    return ids, mask


def eos_ids_of(module: torch.nn.Module, tokenizer) -> list[int]:
    """End-of-sequence ids: the model's generation config (end-of-turn ids), else the tokenizer's EOS."""
    gen_cfg = getattr(module, "generation_config", None)
    eos = getattr(gen_cfg, "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    if eos is None:
        return []
    return [int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])]


def cut_at_eos(
    tokens: torch.Tensor | Sequence[Sequence[int]],
    eos_ids: Sequence[int],
    *,
    keep_eos: bool = False,
) -> list[list[int]]:
    """Each row's tokens up to its first end-of-sequence id (included when ``keep_eos``).

    A batched row keeps padding after its EOS while other rows go on; this drops it.
    """
    stop = {int(t) for t in eos_ids}
    rows = tokens.tolist() if isinstance(tokens, torch.Tensor) else [list(r) for r in tokens]
    out = []
    for row in rows:
        end = next((i for i, t in enumerate(row) if t in stop), len(row))
        out.append(row[: end + 1] if keep_eos and end < len(row) else row[:end])
    return out


def prompt_text(prompt) -> str:
    """What a report shows of a prompt: the string itself, or a conversation's last message content."""
    if isinstance(prompt, dict) and "messages" in prompt:
        prompt = prompt["messages"]
    if isinstance(prompt, str):
        return prompt
    return str(prompt[-1].get("content", "")) if prompt else ""


def _hf_module(model) -> torch.nn.Module:
    """The torch module behind ``model`` (itself, or an nnsight model's wrapped module)."""
    return model if isinstance(model, torch.nn.Module) else model._module


def module_input_device(module: torch.nn.Module) -> torch.device:
    """Where a local module's inputs go: its input embedding's device (first shard under device_map)."""
    try:
        return module.get_input_embeddings().weight.device
    except (AttributeError, NotImplementedError):
        return next(module.parameters()).device


@torch.no_grad()
def generate_ids(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    max_new_tokens: int,
    pad_id: int,
    eos_ids: Sequence[int] | None = None,
    step: Callable[[], None] | None = None,
) -> torch.Tensor:
    """Greedy new tokens ``[batch, new]`` of one *left*-padded batch ``[batch, seq]``.

    ``model`` is a Hugging Face causal LM or an nnsight ``LanguageModel`` (its remote mode
    is honoured). ``step()`` runs inside every decoding step of an nnsight generation (the
    prompt's forward included), so the interventions it applies act on every token; it
    must read or edit a module (nnsight moves to the next step on module access).
    ``eos_ids`` None stops where the model's generation config says. Rows that ended
    early are padded with ``pad_id`` (see :func:`cut_at_eos`).
    """
    kwargs = dict(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad_id)
    if eos_ids is not None:
        kwargs["eos_token_id"] = list(eos_ids) or None
    if isinstance(model, torch.nn.Module):
        if step is not None:
            raise TypeError("a generation step callback needs an nnsight model, not a torch module")
        was_training = model.training
        model.eval()
        device = module_input_device(model)
        try:
            out = model.generate(
                input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), **kwargs
            )
        finally:
            model.train(was_training)
        return out[:, input_ids.shape[1] :].cpu()
    from diffing.remote import input_device, trace_options

    device = input_device(model)
    inputs = {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device)}
    with warnings.catch_warnings():
        # an open tracer.all() ends with a "never reached" warning by design
        warnings.simplefilter("ignore")
        with model.generate(**kwargs, **trace_options(model)) as tracer:
            with tracer.invoke(inputs):
                if step is not None:
                    for _ in tracer.all():
                        step()
            with tracer.invoke():
                out = tracer.result.save()
    return getattr(out, "value", out).detach()[:, input_ids.shape[1] :].cpu()


@torch.no_grad()
def greedy_answers(
    model,
    tokenizer,
    prompts: Sequence,
    *,
    max_new_tokens: int = 64,
    batch_size: int = 16,
    max_prompt_tokens: int | None = None,
    chat: bool | None = None,
    template: str | None = None,
    step: Callable[[], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Generated:
    """Greedy answers of ``model`` (a Hugging Face causal LM or an nnsight model) to ``prompts``.

    ``prompts`` are strings (single user turns) or message lists, encoded by
    :func:`prompt_ids`; ``chat`` None wraps strings in the chat template when the
    tokenizer (or ``template``) has one. Prompts longer than ``max_prompt_tokens`` keep
    their last tokens (the generation prompt must survive). ``step`` runs inside every
    decoding step (nnsight models only; see :func:`generate_ids`).
    ``progress(done, total)`` is called after each batch of ``batch_size`` prompts.
    """
    if chat is None:
        chat = template is not None or has_chat_template(tokenizer)
    pad = pad_id_of(tokenizer)
    eos = eos_ids_of(_hf_module(model), tokenizer)
    answers: list[str] = []
    tokens: list[list[int]] = []
    for start in range(0, len(prompts), batch_size):
        rows = [
            prompt_ids(tokenizer, p, chat=chat, template=template)
            for p in prompts[start : start + batch_size]
        ]
        if max_prompt_tokens is not None:
            rows = [r[-max_prompt_tokens:] for r in rows]
        ids, mask = left_pad(rows, pad)  # [batch, width]
        new = generate_ids(
            model, ids, mask, max_new_tokens=max_new_tokens, pad_id=pad, eos_ids=eos, step=step
        )  # [batch, new_tokens]
        cut = cut_at_eos(new, eos)
        tokens += cut
        answers += tokenizer.batch_decode(cut, skip_special_tokens=True)
        if progress is not None:
            progress(len(answers), len(prompts))
    return Generated(answers, tokens, chat)


__all__ = [
    "Generated",
    "cut_at_eos",
    "eos_ids_of",
    "generate_ids",
    "greedy_answers",
    "has_chat_template",
    "left_pad",
    "module_input_device",
    "prompt_ids",
    "prompt_text",
]
