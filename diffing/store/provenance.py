"""Which models a store came from: refs, revisions and content hashes for the manifest.

A hash identifies a checkpoint without reading its weights: sha256 over
``config.json``, the safetensors index (if any) and the names and sizes of the
weight files. Resuming a harvest with a different checkpoint under the same name is
then caught instead of silently mixing two models in one store.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from diffing.loading import looks_local


def folder_hash(folder: str | Path) -> str:
    """sha256 of a checkpoint folder's config/adapter config, index files, and weight file names and sizes."""
    folder = Path(folder).expanduser()
    h = hashlib.sha256()
    for name in ("config.json", "adapter_config.json", "model.safetensors.index.json"):
        if (folder / name).is_file():
            h.update(name.encode() + b"\0" + (folder / name).read_bytes())
    for p in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")):
        h.update(f"{p.name}:{p.stat().st_size}\n".encode())
    return h.hexdigest()


def model_info(ref: str, module) -> dict:
    """``{"ref", "revision", "hash"}`` for one side of a pair.

    Local folders are hashed from their files; hub models by their commit hash and
    the sha256 of their config (the weights of a hub revision never change).
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
