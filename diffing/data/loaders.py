"""Load the user's prompt sets and chat transcripts.

``load_prompts`` reads instructions from ``.txt`` (one per line), ``.json`` (a
list of strings or objects), ``.jsonl``, ``.csv``, or a Hugging Face dataset
(``hf:NAME[:split]``, needs the optional ``datasets`` package). From objects it
takes the first of the fields ``instruction``, ``goal``, ``prompt``, ``text``
(or the one named by ``field=``). ``load_conversations`` reads ``{"messages":
[...]}`` records. Every problem is a :class:`~diffing.errors.DiffingError`
naming the file and, where there is one, the line.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from diffing.errors import DiffingError

TEXT_FIELDS = ("instruction", "goal", "prompt", "text")
"""Fields tried, in order, when a record is an object and no ``field=`` is given."""
HF_PREFIX = "hf:"
"""Prefix of a Hugging Face dataset spec: ``hf:NAME[:split]``."""


def _pick(record, field: str | None, where: str) -> str:
    """The prompt text of one record (a string or an object)."""
    if isinstance(record, str):
        if field is not None:
            raise DiffingError(f"{where}: is a plain string, but field={field!r} was asked for")
        text = record
    elif isinstance(record, dict):
        names = (field,) if field is not None else TEXT_FIELDS
        key = next((n for n in names if n in record), None)
        if key is None:
            wanted = repr(field) if field is not None else "one of " + ", ".join(TEXT_FIELDS)
            have = ", ".join(map(str, record)) or "none"
            raise DiffingError(
                f"{where}: no usable field ({wanted}); fields present: {have}. Pass field=NAME"
            )
        text = record[key]
        if not isinstance(text, str):
            raise DiffingError(f"{where}: field {key!r} is {type(text).__name__}, not text")
    else:
        raise DiffingError(f"{where}: expected a string or an object, got {type(record).__name__}")
    if not text.strip():
        raise DiffingError(f"{where}: the prompt is empty")
    return text


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise DiffingError(f"prompt file {str(path)!r} does not exist") from err
    except IsADirectoryError as err:
        raise DiffingError(f"{str(path)!r} is a folder, not a prompt file") from err
    except UnicodeDecodeError as err:
        raise DiffingError(f"{str(path)!r} is not UTF-8 text: {err}") from err
    except OSError as err:
        raise DiffingError(f"cannot read {str(path)!r}: {err.strerror or err}") from err


def _jsonl_records(path: Path) -> list[tuple[int, object]]:
    """(line number, parsed value) of every non-blank line."""
    out = []
    for n, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append((n, json.loads(line)))
        except ValueError as err:
            raise DiffingError(f"{path}:{n}: malformed JSON line ({err.msg})") from err
    return out


def _load_json(path: Path, field: str | None) -> list[str]:
    try:
        data = json.loads(_read_text(path))
    except ValueError as err:
        raise DiffingError(f"{path}:{err.lineno}: malformed JSON ({err.msg})") from err
    if isinstance(data, dict):  # tolerate {"prompts": [...]}-style wrappers with exactly one list
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise DiffingError(f"{path}: expected a JSON list of strings or objects")
        data = lists[0]
    if not isinstance(data, list):
        raise DiffingError(
            f"{path}: expected a JSON list of strings or objects, got {type(data).__name__}"
        )
    return [_pick(r, field, f"{path}: item {i}") for i, r in enumerate(data)]


def _load_csv(path: Path, field: str | None) -> list[str]:
    rows = csv.DictReader(_read_text(path).splitlines())
    header = rows.fieldnames or []
    names = (field,) if field is not None else TEXT_FIELDS
    key = next((n for n in names if n in header), None)
    if key is None:
        wanted = repr(field) if field is not None else "one of " + ", ".join(TEXT_FIELDS)
        raise DiffingError(
            f"{path}:1: no usable column ({wanted}); columns: {', '.join(header) or 'none'}"
        )
    out = []
    for row in rows:
        where = f"{path}:{rows.line_num}"
        value = row.get(key)
        if value is None or not value.strip():
            raise DiffingError(f"{where}: the {key!r} cell is empty")
        out.append(value)
    return out


def _load_hf(spec: str, field: str | None) -> list[str]:
    name, _, split = spec[len(HF_PREFIX) :].partition(":")
    if not name:
        raise DiffingError(f"{spec!r}: give a dataset name, as in hf:NAME or hf:NAME:split")
    try:
        import datasets
    except ImportError as err:
        raise DiffingError(
            f"{spec!r} needs the optional 'datasets' package: pip install 'model-diffing[data]'"
        ) from err
    try:
        ds = datasets.load_dataset(name, split=split or "train")
    except Exception as err:  # noqa: BLE001 - network, auth, unknown name: all user-facing
        raise DiffingError(
            f"could not load Hugging Face dataset {name!r} (split {split or 'train'!r}): {err}"
        ) from err
    return [_pick(dict(r), field, f"{spec}: row {i}") for i, r in enumerate(ds)]


def load_prompts(path_or_spec: str | os.PathLike, field: str | None = None) -> list[str]:
    """Instructions from a file or a Hugging Face dataset; see the module docstring for formats."""
    spec = str(path_or_spec)
    if spec.startswith(HF_PREFIX):
        prompts = _load_hf(spec, field)
    else:
        path = Path(spec).expanduser()
        suffix = path.suffix.lower()
        if suffix == ".txt":
            prompts = [line for line in _read_text(path).splitlines() if line.strip()]
        elif suffix == ".json":
            prompts = _load_json(path, field)
        elif suffix == ".jsonl":
            prompts = [_pick(r, field, f"{path}:{n}") for n, r in _jsonl_records(path)]
        elif suffix == ".csv":
            prompts = _load_csv(path, field)
        else:
            raise DiffingError(
                f"{str(path)!r}: unknown prompt file type {suffix or '(none)'!r}; "
                "use .txt, .json, .jsonl, .csv or hf:NAME[:split]"
            )
    if not prompts:
        raise DiffingError(f"{spec}: no prompts found (the file is empty)")
    return prompts


def _check_messages(messages, where: str) -> list[dict]:
    if not isinstance(messages, list) or not messages:
        raise DiffingError(f"{where}: 'messages' must be a non-empty list")
    for i, msg in enumerate(messages):
        if (
            not isinstance(msg, dict)
            or not isinstance(msg.get("role"), str)
            or not isinstance(msg.get("content"), str)
        ):
            raise DiffingError(f"{where}: message {i} needs a string 'role' and a string 'content'")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def load_conversations(path: str | os.PathLike) -> list[list[dict]]:
    """Conversations from a ``.jsonl`` (or ``.json`` list) of ``{"messages": [{"role", "content"}, ...]}``."""
    p = Path(path).expanduser()
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(_read_text(p))
        except ValueError as err:
            raise DiffingError(f"{p}:{err.lineno}: malformed JSON ({err.msg})") from err
        if not isinstance(data, list):
            raise DiffingError(f'{p}: expected a JSON list of {{"messages": [...]}} records')
        items = [(f"{p}: item {i}", r) for i, r in enumerate(data)]
    else:
        items = [(f"{p}:{n}", r) for n, r in _jsonl_records(p)]
    out = []
    for where, rec in items:
        messages = (
            rec.get("messages") if isinstance(rec, dict) else rec if isinstance(rec, list) else None
        )
        if messages is None:
            raise DiffingError(f"{where}: expected an object with a 'messages' list")
        out.append(_check_messages(messages, where))
    if not out:
        raise DiffingError(f"{p}: no conversations found (the file is empty)")
    return out
