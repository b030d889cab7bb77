"""Which models and data a store came from: refs, revisions and content hashes for the manifest.

A local checkpoint's hash covers ``config.json``, the safetensors index (if any) and
the names, sizes and *contents* of its weight files; a data spec's hash covers the
contents of the files it names. A harvest is resumed only when both still match, so
weights or data changed in place (even keeping their sizes) are caught instead of
silently mixing two models, or two corpora, in one store.

File contents are hashed by :func:`diffing.hashing.content_hash` (streamed sha256, cached by path,
size and modification time; see docs/reliability.md for the cost).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from diffing.hashing import content_hash, weights_hash
from diffing.loading import looks_local


def folder_hash(folder: str | Path) -> str:
    """sha256 over a checkpoint folder's config/adapter config, index file, and weight file names, sizes and contents."""
    folder = Path(folder).expanduser()
    h = hashlib.sha256()
    for name in ("config.json", "adapter_config.json", "model.safetensors.index.json"):
        if (folder / name).is_file():
            h.update(name.encode() + b"\0" + (folder / name).read_bytes())
    h.update(weights_hash(folder).encode())
    return h.hexdigest()


def model_info(ref: str, module) -> dict:
    """``{"ref", "revision", "hash"}`` for one side of a pair.

    Local folders are hashed from their files (weights included); hub models by their
    commit hash and the sha256 of their config (a hub revision's weights never change).
    """
    config = getattr(module, "config", None)
    revision = getattr(config, "_commit_hash", None)
    if looks_local(ref) and Path(ref).expanduser().is_dir():
        digest = folder_hash(ref)
    else:
        text = (
            json.dumps(config.to_dict(), sort_keys=True, default=str) if config is not None else ref
        )
        digest = hashlib.sha256(f"{ref}@{revision}\n{text}".encode()).hexdigest()
    return {"ref": str(ref), "revision": revision, "hash": digest}


def pair_info(pair) -> list[dict]:
    """:func:`model_info` of the base then the fine-tuned model of a ``ModelPair``."""
    return [
        model_info(pair.base_ref, pair.hf("base")),
        model_info(pair.finetuned_ref, pair.hf("finetuned")),
    ]


def data_identity(sources) -> list[list]:
    """``[spec, size, sha256]`` of every data file the resolved sources read, in stream order.

    ``sources`` are :func:`diffing.data.corpus.resolve_all`'s. Files (alone, in folders, or an
    organism corpus) are identified by content; ``hf:`` datasets by their spec alone,
    with size and hash ``None`` (a hub dataset is taken to be fixed by its name).
    """
    out = []
    for src in sources:
        path = getattr(src, "_path", None)
        if path is not None and Path(path).is_file():
            out.append([str(src.spec), Path(path).stat().st_size, content_hash(path)])
        else:
            out.append([str(src.spec), None, None])
    return out
