"""Resume state of a harvest: each rank's progress file, and waiting for the other ranks.

A rank's ``progress-rNNN.json`` lists its finished shards (with checksums) under the
settings key that must match for a rerun to continue; :func:`_load_progress` re-verifies
them, so a resume never builds on a corrupt shard.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from pathlib import Path

from diffing.errors import DiffingError
from diffing.store.format import ShardInfo, sha256_file, write_json_atomic


def _progress_path(out: Path, rank: int) -> Path:
    return out / f"progress-r{rank:03d}.json"


def _load_progress(out: Path, rank: int, key: dict) -> list[ShardInfo]:
    """Finished shards of this rank from an earlier run, verified; [] on a fresh store."""
    path = _progress_path(out, rank)
    if not path.is_file():
        return []
    state = json.loads(path.read_text())
    if state.get("key") != key:
        diff = sorted(
            k
            for k in set(key) | set(state.get("key", {}))
            if key.get(k) != state.get("key", {}).get(k)
        )
        raise DiffingError(
            f"{out} holds a harvest with different settings ({', '.join(diff)} differ); "
            "rerun with the same settings to resume, or pass a new `out`",
            fields=("out",),
        )
    shards = [ShardInfo(**s) for s in state["shards"]]
    for s in shards:
        p = out / s.file
        if not p.is_file() or p.stat().st_size != s.bytes or sha256_file(p) != s.sha256:
            raise DiffingError(
                f"shard {s.file} in {out} is missing or corrupt (checksum mismatch); delete it and {path.name}, then rerun"
            )
    return shards


def _save_progress(
    out: Path, rank: int, key: dict, tokens: int, shards: list[ShardInfo], done: bool
) -> None:
    state = {"key": key, "tokens": tokens, "done": done, "shards": [asdict(s) for s in shards]}
    write_json_atomic(_progress_path(out, rank), state)


def _barrier(out: Path, world_size: int, ready) -> None:
    """Wait until ``ready()`` (other ranks' files are there), then sync torch.distributed if initialised.

    Polling the shared folder first means ranks that finish hours apart never hit the
    process group's collective timeout.
    """
    if world_size <= 1:
        return
    deadline = time.time() + float(os.environ.get("DIFFING_BARRIER_TIMEOUT", 7 * 86400))
    while not ready():
        if time.time() > deadline:
            raise DiffingError(
                f"timed out waiting for the other harvest processes writing to {out}"
            )
        time.sleep(0.2)
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
