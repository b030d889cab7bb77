"""Resumable build stages: write into a temporary path, rename when complete, record a fingerprint.

A stage is *done* when its record ``OUT/.stages/NAME.json`` exists, its outputs
exist with the fingerprint recorded there, and every stage it depends on is done
with the fingerprint it was built from. Anything else (a crash mid-stage, a
deleted folder, a rebuilt dependency) makes the stage run again. Outputs only
appear under their final names through a rename after they are complete, so a
half-written model folder never exists under a name that loads.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from diffing.io import write_json

STAGE_DIR = ".stages"
"""Folder (under the output folder) holding one record per finished stage."""
TMP_PREFIX = ".tmp-"
"""Prefix of the temporary path a stage writes before renaming."""


class Stage(NamedTuple):
    """One unit of the build."""

    name: str
    """Unique stage name (also the record's file name)."""
    outputs: tuple[str, ...]
    """Paths (relative to the output folder) that the stage creates: folders or files."""
    deps: tuple[str, ...]
    """Names of the stages whose outputs this stage reads."""
    run: Callable[[dict[str, Path]], dict]
    """Writes every output into the temporary path given for it; returns facts for the manifest."""
    work: int
    """Rough cost in progress units (training steps)."""


def fingerprint(root: Path, rel_paths: tuple[str, ...]) -> str:
    """sha256 over the names and bytes of every file under the given paths."""
    h = hashlib.sha256()
    for rel in rel_paths:
        p = root / rel
        files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
        for f in files:
            h.update(str(f.relative_to(root)).encode())
            with open(f, "rb") as fh:
                for block in iter(lambda fh=fh: fh.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()


def record_path(root: Path, name: str) -> Path:
    """Where stage ``name``'s record lives."""
    return root / STAGE_DIR / f"{name}.json"


def read_record(root: Path, name: str) -> dict | None:
    """The stage's record, or None when missing or unreadable."""
    try:
        return json.loads(record_path(root, name).read_text())
    except (OSError, ValueError):
        return None


def is_done(root: Path, stages: dict[str, Stage], name: str, _memo: dict | None = None) -> bool:
    """Whether stage ``name`` and everything it depends on are complete and consistent."""
    memo = {} if _memo is None else _memo
    if name in memo:
        return memo[name]
    stage = stages[name]
    rec = read_record(root, name)
    ok = (
        rec is not None
        and all((root / o).exists() for o in stage.outputs)
        and rec.get("fingerprint") == fingerprint(root, stage.outputs)
        and all(
            is_done(root, stages, d, memo)
            and rec.get("inputs", {}).get(d) == read_record(root, d)["fingerprint"]
            for d in stage.deps
        )
    )
    memo[name] = ok
    return ok


def write_json_atomic(path: Path, obj) -> None:
    """Write JSON through a temporary file and an atomic replace."""
    write_json(
        path, obj, non_finite="null"
    )  # a NaN eval loss is listed, not a crash at the end of a build


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    elif p.exists() or p.is_symlink():
        p.unlink()


def run_stage(root: Path, stages: dict[str, Stage], stage: Stage) -> dict:
    """Run one stage: clear stale paths, write to temporaries, rename, then record."""
    _remove(record_path(root, stage.name))
    tmps: dict[str, Path] = {}
    for out in stage.outputs:
        final = root / out
        tmp = final.with_name(f"{TMP_PREFIX}{final.name}")
        _remove(tmp)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        if not Path(out).suffix:  # a folder output
            tmp.mkdir()
        tmps[out] = tmp
    facts = stage.run(tmps)
    for out, tmp in tmps.items():
        _remove(root / out)
        os.rename(tmp, root / out)
    rec = {
        "fingerprint": fingerprint(root, stage.outputs),
        "inputs": {d: read_record(root, d)["fingerprint"] for d in stage.deps},
        "facts": facts,
    }
    write_json_atomic(record_path(root, stage.name), rec)
    return rec


def clean_temporaries(root: Path) -> list[str]:
    """Remove temporaries left by an interrupted build; returns their names."""
    removed = []
    for parent in (root, root / "eval"):
        if parent.is_dir():
            for p in parent.iterdir():
                if p.name.startswith(TMP_PREFIX):
                    _remove(p)
                    removed.append(str(p.relative_to(root)))
    return removed
