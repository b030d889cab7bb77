"""The data that ships with the package, written for this project (no copied datasets).

Every method needs text to run on; a user who brings none gets these:

- ``corpus()``: plain-text documents of several genres (encyclopedic, narrative,
  technical, code, dialogue, ...), several hundred tokens each;
- ``chat_prompts()``: user requests across everyday chat topics, the seeds of
  self-generated chat transcripts;
- ``harmful_prompts()`` / ``harmless_prompts()``: requests across the usual harm
  categories, and harmless requests matched to them one to one in form and topic
  words (as in the splits of Arditi et al. 2024, arXiv 2406.11717).

The files live in ``diffing/data/files`` as JSONL, one record per line. Their
composition is documented in ``docs/data.md``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

from diffing.errors import DiffingError

FILES = "files"
"""Folder of the built-in data inside the ``diffing.data`` package."""
CORPUS_GLOB = "corpus-*.jsonl"
"""Corpus files: records ``{"id", "genre", "title", "text"}``."""
CHAT_PROMPTS = "chat_prompts.jsonl"
"""Everyday user requests: records ``{"id", "topic", "prompt"}``."""
HARMFUL = "harmful.jsonl"
"""Harmful requests: records ``{"id", "category", "prompt"}``."""
HARMLESS = "harmless.jsonl"
"""Harmless requests, line i matched to line i of :data:`HARMFUL`: records ``{"id", "category", "prompt"}``."""


@dataclass(frozen=True)
class Record:
    """One built-in item: an identifier, a group (genre, topic or category) and its text."""

    id: str
    """Stable identifier, unique within its file."""
    group: str
    """Genre (corpus), topic (chat prompts) or harm category (prompt sets)."""
    text: str
    """The document or the prompt."""


def _folder():
    return resources.files("diffing.data").joinpath(FILES)


def _read(name: str, group_key: str, text_key: str) -> tuple[Record, ...]:
    path = _folder().joinpath(name)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, FileNotFoundError) as err:
        raise DiffingError(
            f"built-in data file {name} is missing from the installed package ({err}); "
            "reinstall model-diffing"
        ) from err
    out = []
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            out.append(Record(str(rec["id"]), str(rec[group_key]), str(rec[text_key])))
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise DiffingError(f"built-in data {name} line {no} is malformed: {err}") from err
    return tuple(out)


@cache
def corpus_records() -> tuple[Record, ...]:
    """All built-in corpus documents, in file order (files sorted by name)."""
    names = sorted(p.name for p in _folder().iterdir() if p.name.endswith(".jsonl"))
    names = [n for n in names if n.startswith("corpus-")]
    return tuple(r for n in names for r in _read(n, "genre", "text"))


@cache
def chat_prompt_records() -> tuple[Record, ...]:
    """The built-in everyday user requests."""
    return _read(CHAT_PROMPTS, "topic", "prompt")


@cache
def harmful_records() -> tuple[Record, ...]:
    """The built-in harmful requests (line i matched to :func:`harmless_records` line i)."""
    return _read(HARMFUL, "category", "prompt")


@cache
def harmless_records() -> tuple[Record, ...]:
    """The built-in harmless requests, matched one to one with :func:`harmful_records`."""
    return _read(HARMLESS, "category", "prompt")


def corpus() -> list[str]:
    """The built-in plain-text documents."""
    return [r.text for r in corpus_records()]


def chat_prompts() -> list[str]:
    """The built-in everyday user requests."""
    return [r.text for r in chat_prompt_records()]


def harmful_prompts() -> list[str]:
    """The built-in harmful requests."""
    return [r.text for r in harmful_records()]


def harmless_prompts() -> list[str]:
    """The built-in harmless requests."""
    return [r.text for r in harmless_records()]


def composition() -> str:
    """A Markdown summary of the built-in data (counts by group, lengths), for ``docs/data.md``.

    Written from the files themselves, so the page cannot drift from what ships:
    ``python -m diffing.data.builtin`` prints it.
    """
    sets = (
        ("corpus", corpus_records(), "genre"),
        ("chat prompts", chat_prompt_records(), "topic"),
        ("harmful prompts", harmful_records(), "category"),
        ("harmless prompts", harmless_records(), "category"),
    )
    lines = [
        "| set | records | words per record (min / mean / max) | by group |",
        "|---|---|---|---|",
    ]
    for name, records, group in sets:
        words = [len(r.text.split()) for r in records]
        counts: dict[str, int] = {}
        for r in records:
            counts[r.group] = counts.get(r.group, 0) + 1
        groups = ", ".join(f"{g} {n}" for g, n in sorted(counts.items()))
        mean = sum(words) / max(1, len(words))
        lines.append(
            f"| {name} | {len(records)} | {min(words)} / {mean:.0f} / {max(words)} | {group}: {groups} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(composition(), end="")
