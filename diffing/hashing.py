"""Content hashes of large files (model weights, data files), computed once and cached.

Hashing a 70B checkpoint (about 140 GB in bfloat16) reads every byte, so each file's
sha256 is kept in a small JSON cache keyed by its resolved path, size and modification
time (nanoseconds): a file rewritten in place gets a new modification time and is
hashed again; an untouched one costs one ``stat``. The cache lives at
``$DIFFING_CACHE/content-hashes.json`` (default ``~/.cache/diffing``); a cache that is
missing, unreadable or not writable only means hashing again. sha256 is streamed in
8 MiB blocks; with the SHA extensions of current x86 CPUs it runs at about 1.9 GiB/s
per core, faster than blake2b (docs/reliability.md has the measurement).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from filelock import FileLock, Timeout

from diffing.io import write_json
from diffing.loading import PICKLE_SUFFIXES

CACHE_NAME = "content-hashes.json"
"""File name of the cache inside the cache folder."""
BLOCK = 8 << 20
"""Bytes read per step while hashing."""

WEIGHT_SUFFIXES = (".safetensors", *PICKLE_SUFFIXES)
"""Files whose contents count as a checkpoint's weights (safetensors and pickle formats)."""

log = logging.getLogger(__name__)


def cache_path() -> Path:
    """Where the hash cache lives: ``$DIFFING_CACHE`` or ``~/.cache/diffing``, then :data:`CACHE_NAME`."""
    root = os.environ.get("DIFFING_CACHE") or Path.home() / ".cache" / "diffing"
    return Path(root).expanduser() / CACHE_NAME


def stream_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in :data:`BLOCK` steps (memory stays flat)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(BLOCK):
            h.update(block)
    return h.hexdigest()


def _key(path: Path) -> str:
    st = path.stat()
    return f"{path}|{st.st_size}|{st.st_mtime_ns}"


def _read(cache: Path) -> dict:
    try:
        data = json.loads(cache.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def content_hash(path: str | Path) -> str:
    """sha256 of a file's contents, from the cache when its path, size and mtime are unchanged."""
    path = Path(path).expanduser().resolve()
    key = _key(path)
    cache = cache_path()
    known = _read(cache).get(key)
    if isinstance(known, str):
        return known
    digest = stream_sha256(path)
    if _key(path) != key:  # changed while being read: do not cache a hash of mixed contents
        return digest
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(cache) + ".lock", timeout=30):
            prefix = f"{path}|"  # older versions of this file are dropped: the cache stays small
            data = {k: v for k, v in _read(cache).items() if not k.startswith(prefix)}
            data[key] = digest
            write_json(cache, data, indent=0, sort_keys=True)
    except (OSError, Timeout) as err:
        log.info("content-hash cache %s not updated: %s", cache, err)
    return digest


def weight_files(folder: str | Path) -> list[Path]:
    """A checkpoint folder's weight files (safetensors and pickle), sorted by name."""
    folder = Path(folder).expanduser()
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))


def weights_hash(folder: str | Path) -> str:
    """sha256 over the names and contents of a checkpoint folder's weight files (config not included).

    Two folders with equal weights under different paths, or with configs that differ
    only in bookkeeping fields, get the same value.
    """
    h = hashlib.sha256()
    for p in weight_files(folder):
        h.update(f"{p.name}:{p.stat().st_size}:{content_hash(p)}\n".encode())
    return h.hexdigest()
