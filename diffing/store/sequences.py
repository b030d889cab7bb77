"""Documents -> the deterministic stream of token sequences a harvest feeds the models.

Plain text is tokenized and cut into sequences of at most ``seq_len`` tokens (each
continuation starts with the tokenizer's BOS again when the tokenizer uses one, so
every sequence looks like a normal model input). Chat transcripts go through the
chat template (``diffing.tokens.encode``, which also labels each token's role) and
are truncated to ``seq_len``. Text and chat are interleaved so that chat makes up
``chat_fraction`` of the tokens. The stream is a pure function of the data and the
tokenizer: sequence ``i`` is the same on every run and on every rank, which is what
makes harvests resumable and splittable across processes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

from diffing.corpus import Source
from diffing.tokens import ROLE_IDS, encode


class Sequence(NamedTuple):
    """One model input of the stream."""

    seq_id: int
    """Index in the stream (also the store's document id)."""
    input_ids: list[int]
    """Token ids, at most ``seq_len`` of them."""
    roles: list[int]
    """Role id of each token."""
    kind: str
    """``"text"`` or ``"chat"``."""


def _text_chunks(tokenizer, text: str, seq_len: int) -> Iterator[tuple[list[int], list[int]]]:
    """Cut one text into sequences; continuations are re-prefixed with BOS when the tokenizer adds one."""
    enc = encode(tokenizer, text)
    ids, roles = enc.input_ids, enc.roles
    bos = tokenizer.bos_token_id
    lead = 1 if (bos is not None and ids and ids[0] == bos) else 0
    body_ids, body_roles = ids[lead:], roles[lead:]
    step = seq_len - lead
    if step <= 0:
        return
    for start in range(0, len(body_ids), step):
        piece_ids = body_ids[start : start + step]
        piece_roles = body_roles[start : start + step]
        if lead:
            piece_ids = [bos, *piece_ids]
            piece_roles = [ROLE_IDS["template"], *piece_roles]
        yield piece_ids, piece_roles


def _pieces(tokenizer, source: Source, seq_len: int) -> Iterator[tuple[list[int], list[int]]]:
    """All sequences of one source, in order (empty ones skipped)."""
    for doc in source.documents():
        if source.kind == "text":
            if isinstance(doc, str) and doc.strip():
                yield from _text_chunks(tokenizer, doc, seq_len)
        else:
            enc = encode(tokenizer, {"messages": doc}, max_length=seq_len)
            if len(enc.input_ids) > 1:
                yield enc.input_ids, enc.roles


class _Kind:
    """Round-robin over the sources of one kind."""

    def __init__(self, tokenizer, sources: list[Source], seq_len: int):
        self.iters = [_pieces(tokenizer, s, seq_len) for s in sources]
        self.turn = 0

    def next(self):
        while self.iters:
            self.turn %= len(self.iters)
            item = next(self.iters[self.turn], None)
            if item is None:
                self.iters.pop(self.turn)
                continue
            self.turn += 1
            return item
        return None


def sequence_stream(
    tokenizer, sources: list[Source], *, seq_len: int, chat_fraction: float
) -> Iterator[Sequence]:
    """The sequences of all sources, chat interleaved to make up ``chat_fraction`` of the tokens.

    The next sequence comes from chat while chat tokens so far are below
    ``chat_fraction`` of all tokens so far, else from text; when one kind runs out
    the other continues alone.
    """
    kinds = {
        k: _Kind(tokenizer, [s for s in sources if s.kind == k], seq_len) for k in ("text", "chat")
    }
    counts = {"text": 0, "chat": 0}
    seq_id = 0
    while True:
        total = counts["text"] + counts["chat"]
        first = (
            "chat"
            if counts["chat"] < chat_fraction * max(total, 1) or chat_fraction >= 1
            else "text"
        )
        if chat_fraction <= 0:
            first = "text"
        order = (first, "text" if first == "chat" else "chat")
        for kind in order:
            item = kinds[kind].next()
            if item is not None:
                break
        else:
            return
        ids, roles = item
        counts[kind] += len(ids)
        yield Sequence(seq_id, ids, roles, kind)
        seq_id += 1
