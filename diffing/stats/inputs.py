"""Reading ``--data`` files into plain texts and chat transcripts.

A small local reader (the statistics need to know which documents are chats):
``.txt`` files give one document per non-empty line; ``.jsonl`` (and ``.json`` lists)
give a chat for each record with ``messages`` and a text for each string or record
with a text field (``text`` by default, or ``prompt``/``content``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from diffing.errors import DiffingError
from diffing.io import not_utf8

TEXT_FIELDS = ("text", "prompt", "content")
"""Fields tried, in order, for the text of a JSON record without ``messages``."""


class Documents(NamedTuple):
    """Documents read from data files, split by kind."""

    texts: list[str]
    """Plain-text documents."""
    chats: list[list[dict]]
    """Conversations: lists of ``{"role", "content"}`` messages."""


def _record(obj, where: str, field: str | None, texts: list, chats: list) -> None:
    if isinstance(obj, str):
        texts.append(obj)
    elif isinstance(obj, dict) and isinstance(obj.get("messages"), list):
        chats.append(obj["messages"])
    elif isinstance(obj, list) and obj and all(isinstance(m, dict) and "role" in m for m in obj):
        chats.append(obj)
    elif isinstance(obj, dict):
        for key in (field,) if field else TEXT_FIELDS:
            if isinstance(obj.get(key), str):
                texts.append(obj[key])
                return
        raise DiffingError(
            f"{where}: a record without {'a ' + repr(field) if field else 'a text'} field or messages "
            f'(keys: {sorted(obj)[:6]}); give --text-field NAME or chat records {{"messages": [...]}}'
        )
    else:
        raise DiffingError(
            f"{where}: expected a string, a text record or a chat record, got {type(obj).__name__}"
        )


def read_documents(paths: Iterable[str | Path], *, field: str | None = None) -> Documents:
    """Read ``.txt`` / ``.jsonl`` / ``.json`` files into texts and chats."""
    texts: list[str] = []
    chats: list[list[dict]] = []
    for p in paths:
        path = Path(p).expanduser()
        if not path.is_file():
            raise DiffingError(
                f"data file {str(p)!r} does not exist; pass .txt (one document a line), .jsonl or .json"
            )
        try:
            raw = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise not_utf8(path, err) from err
        if path.suffix == ".jsonl":
            for i, line in enumerate(raw.splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as err:
                    raise DiffingError(
                        f"{path}:{i}: not valid JSON ({err.msg}); each line must be one JSON value"
                    ) from err
                _record(obj, f"{path}:{i}", field, texts, chats)
        elif path.suffix == ".json":
            try:
                data = json.loads(raw)
            except json.JSONDecodeError as err:
                raise DiffingError(f"{path}: not valid JSON ({err.msg})") from err
            for i, obj in enumerate(data if isinstance(data, list) else [data]):
                _record(obj, f"{path}[{i}]", field, texts, chats)
        else:
            texts += [line for line in raw.splitlines() if line.strip()]
    return Documents(texts, chats)
