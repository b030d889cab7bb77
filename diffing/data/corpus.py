"""Data specs -> documents: where harvest text and chat transcripts come from.

A spec is one of

- a ``.txt`` file: one plain-text document per line (multi-line documents: use jsonl);
- a ``.jsonl`` / ``.json`` file: one record per line, ``{"text": ...}`` (plain text) or
  ``{"messages": [{"role", "content"}, ...]}`` (a chat transcript);
- a ``.parquet`` file with a ``text`` or ``messages`` column (needs ``pyarrow``);
- a folder: every such file inside it, sorted by name;
- ``hf:NAME[:split]``: a Hugging Face dataset, streamed (needs ``datasets``);
- ``PREFIX:NAME`` for a registered scheme (:func:`register_scheme`): the model organisms
  register ``organism:NAME`` / ``organism-full:NAME``, the corpus file ``NAME`` (``text`` or
  ``chat``) of the cached fast / full organism build.

Each source yields documents in a fixed order, so a harvest that is interrupted and
rerun sees the same documents in the same order (resume depends on it).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from diffing.errors import DiffingError
from diffing.io import not_utf8

TEXT_FIELDS = ("text", "content", "document", "prompt")
"""Record fields read as plain text, in order of preference."""
CHAT_FIELDS = ("messages", "conversations", "conversation")
"""Record fields read as a chat transcript (a list of ``{"role", "content"}``)."""
SUFFIXES = (".txt", ".jsonl", ".json", ".parquet")
"""File types a folder spec picks up."""

Document = str | list
"""A plain-text string or a list of chat messages."""


@dataclass
class Source:
    """One stream of documents of a single kind."""

    spec: str
    """The spec (or file inside a folder spec) it came from."""
    kind: str
    """``"text"`` or ``"chat"``."""
    _path: Path | None = None
    _hf: tuple[str, str] | None = None

    def documents(self, field: str | None = None) -> Iterator[Document]:
        """The documents, always in the same order (``field``: the record field holding the text)."""
        if self._hf is not None:
            yield from (_doc(r, self.spec, field) for r in _hf_records(*self._hf))
        elif self._path.suffix == ".txt":
            yield from _txt_documents(self._path)
        else:
            yield from (_doc(r, self.spec, field) for r in _records(self._path))


def _txt_documents(path: Path) -> Iterator[str]:
    """One document per non-blank line (as ``diffing.data`` reads .txt), streamed."""
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    yield line.rstrip("\n")
    except UnicodeDecodeError as err:
        raise not_utf8(path, err) from err


def _records(path: Path) -> Iterator[dict]:
    """Records of a jsonl/json/parquet file."""
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as err:
            raise DiffingError(
                f"reading {path} needs pyarrow: pip install 'model-diffing[data]' (or pip install pyarrow)"
            ) from err
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
            yield from batch.to_pylist()
        return
    try:
        yield from _text_records(path)
    except UnicodeDecodeError as err:
        raise not_utf8(path, err) from err


def _text_records(path: Path) -> Iterator[dict]:
    """Records of a jsonl/json file."""
    with open(path, encoding="utf-8") as fh:
        if path.suffix == ".json":
            data = json.load(fh)
            yield from (data if isinstance(data, list) else [data])
            return
        for i, line in enumerate(fh, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as err:
                    raise DiffingError(
                        f"{path}, line {i}: not valid JSON ({err.msg}); fix or remove the line"
                    ) from err


def _hf_records(name: str, split: str) -> Iterator[dict]:
    try:
        import datasets
    except ImportError as err:
        raise DiffingError(
            f"the spec hf:{name} needs the datasets library: pip install 'model-diffing[data]' (or pip install datasets)"
        ) from err
    try:
        ds = datasets.load_dataset(name, split=split, streaming=True)
    except Exception as err:
        raise DiffingError(
            f"could not open Hugging Face dataset {name!r} (split {split!r}): {err}"
        ) from err
    yield from ds


def _kind(record, where: str) -> str:
    if isinstance(record, str):
        return "text"
    if isinstance(record, dict):
        if any(isinstance(record.get(f), list) for f in CHAT_FIELDS):
            return "chat"
        if any(isinstance(record.get(f), str) for f in TEXT_FIELDS):
            return "text"
    if isinstance(record, list) and all(isinstance(m, dict) for m in record):
        return "chat"
    raise DiffingError(
        f"{where}: cannot tell text from chat in a record like {str(record)[:80]!r}; "
        f"records need a {'/'.join(TEXT_FIELDS)} string or a {'/'.join(CHAT_FIELDS)} list of messages"
    )


def _doc(record, where: str, field: str | None = None) -> Document:
    """A record as a document: the text string or the message list."""
    if isinstance(record, (str, list)):
        return record
    for f in CHAT_FIELDS:
        if isinstance(record.get(f), list):
            return [
                {
                    "role": m.get("role", m.get("from", "user")),
                    "content": m.get("content", m.get("value", "")),
                }
                for m in record[f]
            ]
    for f in (field,) if field else TEXT_FIELDS:
        if isinstance(record.get(f), str):
            return record[f]
    wanted = repr(field) if field else "/".join(TEXT_FIELDS)
    raise DiffingError(
        f"{where}: a record has neither a {wanted} text nor messages (keys: {sorted(record)[:6]}): "
        'name the text field, or give chat records {"messages": [...]}'
    )


def _file_source(path: Path, spec: str) -> Source | None:
    """A source for one file, or None when it holds no records."""
    if path.suffix == ".txt":
        return Source(spec, "text", _path=path)
    first = next(iter(_records(path)), None)
    if first is None:
        return None
    return Source(spec, _kind(first, str(path)), _path=path)


SCHEMES: dict[str, Callable[[str], Path]] = {}
"""Spec prefix (before the colon) -> a function giving the local file the spec names.

Packages above the data layer register their own specs here (the model organisms
register ``organism`` and ``organism-full``), so this layer imports none of them.
"""


def register_scheme(prefix: str, locate: Callable[[str], Path]) -> None:
    """Make ``PREFIX:NAME`` specs resolve to the file ``locate(spec)`` returns."""
    SCHEMES[prefix] = locate


def resolve(spec: str) -> list[Source]:
    """The sources a spec names (a folder gives one per file); DiffingError for unknown or empty specs."""
    spec = str(spec).strip()
    if spec.startswith("hf:"):
        name, _, split = spec[3:].partition(":")
        if not name:
            raise DiffingError(f"spec {spec!r} names no dataset; use hf:NAME[:split]")
        records = _hf_records(name, split or "train")
        first = next(iter(records), None)
        if first is None:
            raise DiffingError(f"Hugging Face dataset {name!r} is empty")
        return [Source(spec, _kind(first, spec), _hf=(name, split or "train"))]
    prefix = spec.partition(":")[0]
    if prefix in SCHEMES:
        src = _file_source(SCHEMES[prefix](spec), spec)
        return [src] if src else []
    if prefix.startswith("organism"):
        raise DiffingError(
            f"the spec {spec!r} needs the model organisms' scheme: import diffing.organisms first "
            "(the command line does this itself)"
        )
    path = Path(spec).expanduser()
    if not path.exists():
        raise DiffingError(
            f"data spec {spec!r} is neither an existing file or folder nor hf:NAME / organism:NAME; "
            "pass a .txt/.jsonl/.parquet file, a folder of them, hf:NAME[:split] or organism:text"
        )
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in SUFFIXES)
        if not files:
            raise DiffingError(f"folder {spec!r} holds no {'/'.join(SUFFIXES)} files")
        return [s for f in files if (s := _file_source(f, str(f))) is not None]
    if path.suffix not in SUFFIXES:
        raise DiffingError(f"data file {spec!r} has an unknown type; use {', '.join(SUFFIXES)}")
    src = _file_source(path, spec)
    return [src] if src else []


def resolve_all(specs: list[str] | str) -> list[Source]:
    """Sources of several specs (a comma-separated string works too); DiffingError when there is no data."""
    if isinstance(specs, str):
        specs = [s for s in specs.split(",") if s.strip()]
    if not specs:
        raise DiffingError(
            "no data given; pass `data`: a file, folder, hf:NAME or organism:NAME", fields=("data",)
        )
    sources = [s for spec in specs for s in resolve(spec)]
    if not sources:
        raise DiffingError(
            f"the data {', '.join(specs)} holds no documents; check the files are not empty"
        )
    return sources


class Documents(NamedTuple):
    """Documents of some data specs, split by kind."""

    texts: list[str]
    """Plain-text documents."""
    chats: list[list[dict]]
    """Conversations: lists of ``{"role", "content"}`` messages."""


def _chars(doc: Document) -> int:
    return len(doc) if isinstance(doc, str) else sum(len(str(m.get("content", ""))) for m in doc)


def read_documents(
    specs: list[str] | str,
    *,
    field: str | None = None,
    max_documents: int | None = None,
    max_chars: int | None = None,
) -> Documents:
    """Plain texts and chat transcripts of ``specs``, each kind read until it holds ``max_documents``
    documents or ``max_chars`` characters (None: all), so a large source is read only as far as a
    budget can use. Each record is classed by its own content, so a file may mix both kinds."""
    out: dict[str, list] = {"text": [], "chat": []}
    chars = {"text": 0, "chat": 0}

    def full(kind: str) -> bool:
        return (max_documents is not None and len(out[kind]) >= max_documents) or (
            max_chars is not None and chars[kind] >= max_chars
        )

    for source in resolve_all(specs):
        if full(source.kind) and full("chat" if source.kind == "text" else "text"):
            break
        for doc in source.documents(field):
            kind = "text" if isinstance(doc, str) else "chat"
            if full(kind):
                if full("chat" if kind == "text" else "text"):
                    break
                continue
            out[kind].append(doc)
            chars[kind] += _chars(doc)
    return Documents(out["text"], out["chat"])
