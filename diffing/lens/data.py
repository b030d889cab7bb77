"""The corpus both lens methods read: data specs -> encoded documents -> padded batches.

Documents are encoded the way the statistics encode them (``diffing.stats.encode_documents``:
plain text with the tokenizer's special tokens, chats with the chat template and per-token
roles; half the token budget each when both kinds are given), so the numbers of the two
commands are comparable on the same data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from diffing.data.corpus import read_documents
from diffing.stats.run import encode_documents
from diffing.tokens import Batch, Encoded, pad_batch, pad_id_of


def read_specs(specs: Sequence[str] | str, tokens: int, max_length: int) -> tuple[list, list]:
    """``(texts, chats)`` from data specs, reading no more documents than the token budget can use
    (each document gives at least 2 tokens, so ``tokens`` documents suffice)."""
    docs = read_documents(
        specs if isinstance(specs, str) else list(specs), max_documents=int(tokens)
    )
    return docs.texts, docs.chats


def encode_corpus(
    tokenizer, texts: Sequence | None, chats: Sequence | None, tokens: int, max_length: int
) -> list[Encoded]:
    """Plain-text documents then chat documents, encoded within ``tokens`` (DiffingError when empty)."""
    text_docs, chat_docs = encode_documents(tokenizer, texts, chats, tokens, max_length)
    return text_docs + chat_docs


def batches(
    docs: list[Encoded],
    size: int,
    tokenizer,
    progress: Callable[[str], None] | None = None,
    label: str = "batch",
) -> Iterator[Batch]:
    """Right-padded batches of ``size`` documents, in corpus order (contexts refer to it).

    ``progress`` is told ``"{label} {i}/{n}"`` before each batch is handed out.
    """
    pad = pad_id_of(tokenizer)
    n = -(-len(docs) // size)
    for i in range(0, len(docs), size):
        if progress is not None:
            progress(f"{label} {i // size + 1}/{n}")
        yield pad_batch(docs[i : i + size], pad)


def positions_mask(batch: Batch):
    """``[batch, seq]`` bool: real tokens other than position 0 (BOS / attention sink, an outlier
    in every model, skipped as the ADL skips it)."""
    keep = batch.attention_mask.bool().clone()
    keep[:, 0] = False
    return keep
