"""Documents -> the deterministic stream of token sequences a harvest feeds the models.

Plain text is tokenized and cut into sequences of at most ``seq_len`` tokens (each
continuation starts with the tokenizer's BOS again when the tokenizer uses one, so
every sequence looks like a normal model input). With ``pack`` (the harvest default)
the documents of a text source are first concatenated, each followed by an end-of-text
separator (EOS, else BOS), and the stream is cut into full ``seq_len`` sequences, each
opening with BOS when the tokenizer adds one: every text sequence but a source's last
has the same length, so batches of them need no padding mask. This is how crosscoder
harvests usually feed a corpus; the price is that a document's first tokens attend to
the previous document's tail (across the separator), as in pre-training. The stored
activations are exactly what the model computes for the packed sequence, and the
store's doc id / position of a token name that sequence and the token's place in it. Chat transcripts go through the
chat template (``diffing.tokens.encode``, which also labels each token's role) and
are truncated to ``seq_len``. Text and chat are interleaved so that chat makes up
``chat_fraction`` of the tokens. The stream is a pure function of the data and the
tokenizer: sequence ``i`` is the same on every run and on every rank, which is what
makes harvests resumable and splittable across processes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

from diffing.data.corpus import Source
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


def _packed_chunks(tokenizer, docs, seq_len: int) -> Iterator[tuple[list[int], list[int]]]:
    """Documents concatenated (each followed by EOS, else BOS) and cut into ``seq_len`` sequences.

    Each sequence opens with BOS when the tokenizer adds one to a text, like a normal
    model input; only the last one can be shorter.
    """
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    sep = [eos] if eos is not None else [bos] if bos is not None else []
    template = ROLE_IDS["template"]
    lead: list[int] | None = None  # [BOS] when the tokenizer adds it; known at the first document
    ids: list[int] = []
    roles: list[int] = []
    for doc in docs:
        if not (isinstance(doc, str) and doc.strip()):
            continue
        enc = encode(tokenizer, doc)
        skip = 1 if (bos is not None and enc.input_ids and enc.input_ids[0] == bos) else 0
        if lead is None:
            lead = [bos] if skip else []
        ids += enc.input_ids[skip:] + sep
        roles += enc.roles[skip:] + [template] * len(sep)
        step = seq_len - len(lead)
        while step > 0 and len(ids) >= step:
            yield lead + ids[:step], [template] * len(lead) + roles[:step]
            ids, roles = ids[step:], roles[step:]
    if ids and lead is not None:
        yield lead + ids, [template] * len(lead) + roles


def _pieces(
    tokenizer, source: Source, seq_len: int, pack: bool = False
) -> Iterator[tuple[list[int], list[int]]]:
    """All sequences of one source, in order (empty ones skipped; text packed when ``pack``)."""
    if pack and source.kind == "text":
        yield from _packed_chunks(tokenizer, source.documents(), seq_len)
        return
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

    def __init__(self, tokenizer, sources: list[Source], seq_len: int, pack: bool = False):
        self.iters = [_pieces(tokenizer, s, seq_len, pack) for s in sources]
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
    tokenizer, sources: list[Source], *, seq_len: int, chat_fraction: float, pack: bool = False
) -> Iterator[Sequence]:
    """The sequences of all sources, chat interleaved to make up ``chat_fraction`` of the tokens.

    ``pack``: text documents are concatenated and cut to full ``seq_len`` sequences
    (module docstring); chats are never packed (each keeps its own template and roles).

    The next sequence comes from chat while chat tokens so far are below
    ``chat_fraction`` of all tokens so far, else from text; when one kind runs out
    the other continues alone.
    """
    kinds = {
        k: _Kind(tokenizer, [s for s in sources if s.kind == k], seq_len, pack)
        for k in ("text", "chat")
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
