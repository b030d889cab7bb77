"""Chat transcripts the fine-tuned model writes itself, for methods that need assistant turns.

Statistics by token role, the crosscoder's chat-side harvest and its causal check
need conversations whose assistant turns come from the fine-tuned model. A user who
brings none gets them generated: greedy answers of the fine-tuned model to user
prompts (by default the built-in chat prompts), bounded in length, batched. They are
cached as a JSONL file keyed by the model's identity, the prompts and the settings,
so a rerun into the same folder reuses them instead of generating again.

A tokenizer without a chat template cannot format a conversation: the prompts and
answers are then kept as plain-text documents (``prompt + answer``) and the result
carries a note saying so.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import torch

from diffing.io import dumps, write_text_atomic
from diffing.progress import bar as progress_bar

log = logging.getLogger(__name__)

CACHE_PREFIX = "self-transcripts-"
"""File name prefix of a cached transcript set (followed by the cache key and ``.jsonl``)."""


@dataclass(frozen=True)
class TranscriptSettings:
    """How the transcripts are generated (part of the cache key)."""

    max_new_tokens: int = 64
    """Longest answer, in tokens (greedy decoding stops earlier at end of sequence)."""
    batch_size: int = 16
    """Prompts generated together."""
    max_prompt_tokens: int = 256
    """Prompts longer than this keep their last tokens."""


class Transcripts(NamedTuple):
    """Self-generated transcripts and where they came from."""

    chats: list[list[dict]]
    """Conversations ``[user, assistant]`` (empty when the tokenizer has no chat template)."""
    texts: list[str]
    """Plain-text ``prompt + answer`` documents (only when the tokenizer has no chat template)."""
    path: Path
    """The cache file (JSONL, ``{"messages": [...]}`` or ``{"text": ...}`` records)."""
    reused: bool
    """Whether the cache file was read instead of generating."""
    key: str
    """The cache key: hash of model identity, prompts and settings."""
    note: str | None
    """A remark for the report (e.g. the plain-text fallback), or None."""

    def describe(self, prompt_source: str, settings: TranscriptSettings) -> dict:
        """The report's record of these transcripts: which prompts, how many, max tokens, cache file."""
        return {
            "prompts": prompt_source,
            "count": len(self.chats) + len(self.texts),
            "format": "chat" if self.chats else "plain text",
            "max_new_tokens": settings.max_new_tokens,
            "cache_file": str(self.path),
            "reused_cache": self.reused,
            "note": self.note,
        }


def model_fingerprint(model: torch.nn.Module, ref: str) -> str:
    """A cheap identity of a model: its reference, class, and a checksum of a slice of every tensor.

    Two different fine-tunes stored under the same name differ in their weights, so a
    few values of each parameter (not the whole model: that would cost a full pass
    over the weights) tell them apart.
    """
    h = hashlib.sha256(f"{ref}|{type(model).__name__}".encode())
    with torch.no_grad():
        for name, p in model.named_parameters():
            h.update(f"{name}{tuple(p.shape)}".encode())
            if p.device.type == "meta":  # offloaded: its values are not in memory
                continue
            head = p.detach().reshape(-1)[:256].float().cpu()  # [<=256]
            h.update(head.numpy().tobytes())
    return h.hexdigest()


def cache_key(fingerprint: str, prompts: Sequence[str], settings: TranscriptSettings) -> str:
    """Hash of the model identity, the prompts and the settings."""
    blob = json.dumps(
        {"model": fingerprint, "prompts": list(prompts), "settings": asdict(settings)},
        ensure_ascii=False,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _read_cache(path: Path) -> tuple[list[list[dict]], list[str]] | None:
    """The cached transcripts, or None when the file is missing or unreadable."""
    chats, texts = [], []
    try:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                rec = json.loads(line)
                if "messages" in rec:
                    chats.append(rec["messages"])
                else:
                    texts.append(rec["text"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return chats, texts


def self_transcripts(
    model: torch.nn.Module,
    tokenizer,
    prompts: Sequence[str],
    cache_dir: str | Path,
    *,
    model_ref: str = "",
    settings: TranscriptSettings | None = None,
    progress: bool = False,
) -> Transcripts:
    """Greedy transcripts of ``model`` (a Hugging Face causal LM) answering ``prompts``, cached in ``cache_dir``.

    ``model_ref`` (the hub id or folder) joins the weights checksum in the cache key.
    ``progress`` draws a progress bar over the prompts.
    """
    from diffing.generation import greedy_answers, has_chat_template

    settings = settings or TranscriptSettings()
    chat = has_chat_template(tokenizer)
    key = cache_key(model_fingerprint(model, model_ref), prompts, settings)
    path = Path(cache_dir) / f"{CACHE_PREFIX}{key}.jsonl"
    note = (
        None
        if chat
        else "the fine-tuned tokenizer has no chat template: its answers are used as plain text"
    )
    cached = _read_cache(path) if path.is_file() else None
    if cached is not None and len(cached[0]) + len(cached[1]) == len(prompts):
        log.info("reusing %d self-generated transcripts from %s", len(prompts), path)
        return Transcripts(cached[0], cached[1], path, True, key, note)
    bar = progress_bar(
        total=len(prompts), desc="generating transcripts", unit="prompt", enabled=progress
    )
    try:
        gen = greedy_answers(
            model,
            tokenizer,
            prompts,
            max_new_tokens=settings.max_new_tokens,
            batch_size=settings.batch_size,
            max_prompt_tokens=settings.max_prompt_tokens,
            chat=chat,
            progress=lambda done, total: bar.update(done - bar.n),
        )
    finally:
        bar.close()
    answers = [a.strip() for a in gen.answers]
    if chat:
        chats = [
            [{"role": "user", "content": p}, {"role": "assistant", "content": a}]
            for p, a in zip(prompts, answers)
        ]
        texts, records = [], [{"messages": c} for c in chats]
    else:
        chats, texts = [], [f"{p}\n{a}" for p, a in zip(prompts, answers)]
        records = [{"text": t} for t in texts]
    path.parent.mkdir(parents=True, exist_ok=True)
    # atomic: a crash mid-write never leaves a truncated cache behind
    write_text_atomic(
        path, "".join(dumps(r, indent=None, ensure_ascii=False) + "\n" for r in records)
    )
    return Transcripts(chats, texts, path, False, key, note)
