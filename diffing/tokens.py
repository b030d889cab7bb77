"""Chat-template formatting and per-token roles.

Both models of a pair read exactly the ids produced here (docs/methods.md section 1),
and every token carries a role label because many fine-tuning effects live on the
template's control tokens rather than on the text. Roles are found without any
knowledge of a particular template: the conversation is rendered with the
tokenizer's own chat template, each message's content is located in the rendered
string, and tokens are labelled by which span they fall in.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from diffing.errors import DiffingError

ROLES: tuple[str, ...] = ("text", "system", "user", "assistant", "template")
"""Role names; a token's role id is its index here (``text`` is plain, non-chat text)."""
ROLE_IDS: dict[str, int] = {name: i for i, name in enumerate(ROLES)}

Conversation = Sequence[dict]
"""A list of ``{"role": ..., "content": ...}`` messages."""


class Encoded(NamedTuple):
    """One tokenized document."""

    input_ids: list[int]
    """Token ids, exactly as both models will read them."""
    roles: list[int]
    """Role id (index into :data:`ROLES`) of each token."""


class Batch(NamedTuple):
    """A right-padded batch of encoded documents."""

    input_ids: torch.Tensor
    """``[batch, seq]`` token ids (padding uses the tokenizer's pad id)."""
    attention_mask: torch.Tensor
    """``[batch, seq]`` 1 for real tokens, 0 for padding."""
    roles: torch.Tensor
    """``[batch, seq]`` role ids (int8); padding is ``template``."""


def encode_text(tokenizer, text: str, *, max_length: int | None = None) -> Encoded:
    """Tokenize plain text (with the tokenizer's usual special tokens); every real token is ``text``."""
    enc = tokenizer(
        text, add_special_tokens=True, truncation=max_length is not None, max_length=max_length
    )
    ids = list(enc["input_ids"])
    special = set(tokenizer.all_special_ids)
    roles = [ROLE_IDS["template"] if t in special else ROLE_IDS["text"] for t in ids]
    return Encoded(ids, roles)


def render_chat(
    tokenizer,
    messages: Conversation,
    *,
    add_generation_prompt: bool = False,
    template: str | None = None,
) -> str:
    """The conversation as the chat template renders it (a string)."""
    if template is None and not getattr(tokenizer, "chat_template", None):
        raise DiffingError(
            "the tokenizer has no chat template, so chat data cannot be formatted; "
            "pass one with `template` (a Jinja template), or use plain text",
            fields=("template",),
        )
    try:
        return tokenizer.apply_chat_template(
            list(messages),
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
            chat_template=template,
        )
    except Exception as err:  # jinja errors are user-facing: the template or the messages are wrong
        raise DiffingError(f"the chat template could not render this conversation: {err}") from err


def _content_spans(rendered: str, messages: Conversation) -> list[tuple[int, int, int]]:
    """(start, end, role id) of each message's content in the rendered string, in order."""
    spans, cursor = [], 0
    for msg in messages:
        content = str(msg.get("content", ""))
        role = ROLE_IDS.get(str(msg.get("role", "")), ROLE_IDS["user"])
        for needle in (content, content.strip()):
            if not needle:
                break
            at = rendered.find(needle, cursor)
            if at >= 0:
                spans.append((at, at + len(needle), role))
                cursor = at + len(needle)
                break
    return spans


def _role_of(start: int, end: int, spans: list[tuple[int, int, int]]) -> int:
    """The role of the span holding most of the characters [start, end), else ``template``."""
    width = max(end - start, 1)
    for s, e, role in spans:
        if 2 * (min(end, e) - max(start, s)) >= width and end > s and start < e:
            return role
    return ROLE_IDS["template"]


def encode_chat(
    tokenizer,
    messages: Conversation,
    *,
    add_generation_prompt: bool = False,
    template: str | None = None,
    max_length: int | None = None,
) -> Encoded:
    """Tokenize a conversation with the chat template and label each token's role.

    The template decides the special tokens (as ``apply_chat_template`` does), so no
    extra BOS is added. Content tokens get their message's role; everything the
    template adds (role markers, end-of-turn tokens, generation prompt) is ``template``.
    """
    rendered = render_chat(
        tokenizer, messages, add_generation_prompt=add_generation_prompt, template=template
    )
    spans = _content_spans(rendered, messages)
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(rendered, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        roles = [_role_of(s, e, spans) for s, e in enc["offset_mapping"]]
    else:  # slow tokenizers have no offsets: tokenize template pieces and contents separately
        ids, roles, cursor = [], [], 0
        for s, e, role in [*spans, (len(rendered), len(rendered), ROLE_IDS["template"])]:
            for piece, r in ((rendered[cursor:s], ROLE_IDS["template"]), (rendered[s:e], role)):
                piece_ids = tokenizer.encode(piece, add_special_tokens=False) if piece else []
                ids += piece_ids
                roles += [r] * len(piece_ids)
            cursor = e
    special = set(tokenizer.all_special_ids)
    roles = [ROLE_IDS["template"] if t in special else r for t, r in zip(ids, roles)]
    if max_length is not None:
        ids, roles = ids[:max_length], roles[:max_length]
    return Encoded(ids, roles)


def encode(
    tokenizer, item, *, max_length: int | None = None, template: str | None = None
) -> Encoded:
    """Encode a plain string, a message list, or a ``{"messages": [...]}`` record."""
    if isinstance(item, str):
        return encode_text(tokenizer, item, max_length=max_length)
    if isinstance(item, dict) and "messages" in item:
        item = item["messages"]
    if isinstance(item, (list, tuple)) and all(isinstance(m, dict) for m in item):
        return encode_chat(tokenizer, item, template=template, max_length=max_length)
    raise DiffingError(
        f"cannot encode an item of type {type(item).__name__}: expected a string, a list of "
        '{"role", "content"} messages, or {"messages": [...]}'
    )


def pad_batch(encoded: Sequence[Encoded], pad_id: int) -> Batch:
    """Right-pad encoded documents into tensors (right padding keeps positions 0..n-1 for real tokens)."""
    if not encoded:
        raise DiffingError("no documents to batch")
    seq = max(len(e.input_ids) for e in encoded)
    ids = torch.full((len(encoded), seq), pad_id, dtype=torch.long)
    mask = torch.zeros((len(encoded), seq), dtype=torch.long)
    roles = torch.full((len(encoded), seq), ROLE_IDS["template"], dtype=torch.int8)
    for i, e in enumerate(encoded):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids, dtype=torch.long)
        mask[i, :n] = 1
        roles[i, :n] = torch.tensor(e.roles, dtype=torch.int8)
    return Batch(ids, mask, roles)


def pad_id_of(tokenizer) -> int:
    """The id used for padding: the pad token, else EOS, else 0."""
    for tid in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return int(tid)
    return 0
