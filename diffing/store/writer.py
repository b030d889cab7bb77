"""Writing shards and manifests: atomic, checksummed, with a free-space check.

:func:`write_shard` is what the harvest calls for each block of tokens;
:func:`write_store` builds a whole store from in-memory tensors (tests and other
modules use it to fabricate stores with known contents).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch

import diffing
from diffing.errors import DiffingError
from diffing.store.format import (
    MANIFEST,
    MODEL_NAMES,
    Manifest,
    ShardInfo,
    shard_name,
    write_json_atomic,
)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
"""Storage dtypes a store may use, by name."""


def storage_dtype(name: str | torch.dtype) -> torch.dtype:
    """The torch dtype for a storage dtype name; DiffingError for anything else."""
    if isinstance(name, torch.dtype):
        name = str(name).removeprefix("torch.")
    if name not in DTYPES:
        raise DiffingError(f"unknown store dtype {name!r}; use one of {', '.join(DTYPES)}")
    return DTYPES[name]


def temp_name(name: str) -> str:
    """A hidden temporary name for ``name``, unique to this process (pid and a random suffix).

    Two processes never write the same temporary file, and a harvest resuming after a crash
    recognises any process's leftovers of its rank by the ``.NAME.`` prefix.
    """
    return f".{name}.{os.getpid()}-{secrets.token_hex(4)}.tmp"


def check_free_space(folder: Path, needed: int, what: str) -> None:
    """Raise a clear error when ``folder``'s disk has less than ``needed`` bytes (+5%) free."""
    free = shutil.disk_usage(folder).free
    if free < needed * 1.05:
        raise DiffingError(
            f"not enough disk space in {str(folder)!r} to write {what}: needs {needed / 2**20:.1f} MiB, "
            f"{free / 2**20:.1f} MiB free; free some space or choose another `out` (finished shards are kept; rerun to resume)",
            fields=("out",),
        )


def sq_norm_sums(acts: torch.Tensor) -> list[float]:
    """Per model, the sum over tokens of the squared norm (float64). ``acts``: [n, n_models, d]."""
    return acts.double().pow(2).sum(dim=(0, 2)).tolist()


def write_shard(
    folder: str | Path,
    *,
    rank: int,
    index: int,
    acts: dict[int, torch.Tensor],
    token_ids: torch.Tensor,
    doc_ids: torch.Tensor,
    positions: torch.Tensor,
    roles: torch.Tensor,
    seq_ids: torch.Tensor,
    seq_starts: torch.Tensor,
    seq_tokens: torch.Tensor,
    seq_roles: torch.Tensor,
    first_seq: int = 0,
    next_seq: int = 0,
) -> ShardInfo:
    """Write one shard atomically (temporary name, fsync, rename) and return its manifest entry.

    ``acts``: layer -> ``[n, n_models, d_model]`` already in the storage dtype. The
    other arrays are as described in :mod:`diffing.store.format`.
    """
    from safetensors.torch import save

    folder = Path(folder)
    n = int(token_ids.shape[0])
    tensors = {f"acts.{layer}": a.contiguous() for layer, a in acts.items()}
    tensors.update(
        token_ids=token_ids.to(torch.int32).contiguous(),
        doc_ids=doc_ids.to(torch.int64).contiguous(),
        positions=positions.to(torch.int32).contiguous(),
        roles=roles.to(torch.int8).contiguous(),
        seq_ids=seq_ids.to(torch.int64).contiguous(),
        seq_starts=seq_starts.to(torch.int64).contiguous(),
        seq_tokens=seq_tokens.to(torch.int32).contiguous(),
        seq_roles=seq_roles.to(torch.int8).contiguous(),
    )
    for layer, a in acts.items():
        if a.shape[0] != n:
            raise ValueError(f"acts.{layer} has {a.shape[0]} rows, token_ids {n}")
    sums = {str(layer): sq_norm_sums(a) for layer, a in acts.items()}
    # one key: safetensors writes metadata from a hash map, so several keys come out in random order
    meta = {
        "shard": json.dumps(
            {
                "n_tokens": n,
                "rank": rank,
                "index": index,
                "first_seq": first_seq,
                "next_seq": next_seq,
            },
            sort_keys=True,
        )
    }
    needed = sum(t.numel() * t.element_size() for t in tensors.values()) + 4096
    name = shard_name(rank, index)
    check_free_space(folder, needed, f"shard {name}")
    # serialised once in memory: the checksum comes from these bytes, not from re-reading the file
    data = save(tensors, metadata=meta)
    digest = hashlib.sha256(data).hexdigest()
    tmp = folder / temp_name(name)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, folder / name)
    finally:
        tmp.unlink(missing_ok=True)
    return ShardInfo(
        file=name,
        n_tokens=n,
        sha256=digest,
        bytes=len(data),
        rank=rank,
        index=index,
        first_seq=first_seq,
        next_seq=next_seq,
        n_seqs=int(seq_ids.shape[0]),
        sq_norm_sums=sums,
    )


def scales_from_shards(
    shards: Sequence[ShardInfo], layers: Sequence[int], d_model: int, n_models: int
) -> dict[str, list[float]]:
    """Per layer and model, ``sqrt(d_model / mean ||x||^2)`` over every kept token (docs/methods.md section 1)."""
    total = sum(s.n_tokens for s in shards)
    out = {}
    for layer in layers:
        sums = [sum(s.sq_norm_sums[str(layer)][m] for s in shards) for m in range(n_models)]
        out[str(layer)] = [float((d_model * total / s) ** 0.5) if s > 0 else 1.0 for s in sums]
    return out


def finish_manifest(folder: str | Path, manifest: Manifest) -> Manifest:
    """Compute totals and (unless given) norm scales from the shard entries, then write the manifest atomically."""
    manifest.shards = sorted(manifest.shards, key=lambda s: (s.rank, s.index))
    manifest.n_tokens = sum(s.n_tokens for s in manifest.shards)
    if not manifest.norm_scales:
        manifest.norm_scales = scales_from_shards(
            manifest.shards, manifest.layers, manifest.d_model, len(manifest.model_names)
        )
    manifest.package_version = diffing.__version__
    write_json_atomic(Path(folder) / MANIFEST, manifest.to_dict())
    return manifest


def _seq_arrays(
    doc_ids: torch.Tensor, positions: torch.Tensor, token_ids: torch.Tensor, roles: torch.Tensor
):
    """Rebuild per-sequence token arrays from kept tokens (missing positions become id 0, role template)."""
    seqs = torch.unique(doc_ids)
    starts, toks, rls = [0], [], []
    for s in seqs.tolist():
        sel = doc_ids == s
        length = int(positions[sel].max()) + 1
        t = torch.zeros(length, dtype=torch.int32)
        r = torch.full((length,), 4, dtype=torch.int8)
        t[positions[sel].long()] = token_ids[sel].to(torch.int32)
        r[positions[sel].long()] = roles[sel].to(torch.int8)
        toks.append(t)
        rls.append(r)
        starts.append(starts[-1] + length)
    return seqs, torch.tensor(starts, dtype=torch.int64), torch.cat(toks), torch.cat(rls)


def write_store(
    path: str | Path,
    acts_by_layer: dict[int, torch.Tensor],
    token_ids: torch.Tensor,
    doc_ids: torch.Tensor | None = None,
    positions: torch.Tensor | None = None,
    roles: torch.Tensor | None = None,
    *,
    layers: Sequence[int] | None = None,
    model_names: Sequence[str] = MODEL_NAMES,
    norm_scales: dict | None = None,
    shard_tokens: int = 4096,
    dtype: str = "float32",
    models: list[dict] | None = None,
    data: list[str] | None = None,
    settings: dict | None = None,
) -> Manifest:
    """Write a store from in-memory tensors; returns its manifest. Useful to fabricate stores in tests.

    ``acts_by_layer``: layer -> ``[n_tokens, n_models, d_model]`` raw activations.
    ``doc_ids`` defaults to one document, ``positions`` to 0..n-1 within each document,
    ``roles`` to ``text``. ``norm_scales`` (layer -> ``[n_models]``) defaults to the
    scalars computed from the data. Tokens keep their order; shards hold whole documents
    of about ``shard_tokens`` tokens.
    """
    folder = Path(path).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    layers = sorted(int(k) for k in (layers if layers is not None else acts_by_layer))
    n = int(token_ids.shape[0])
    if n == 0:
        raise DiffingError("write_store needs at least one token")
    first = acts_by_layer[layers[0]]
    d_model, n_models = int(first.shape[-1]), int(first.shape[1])
    if len(model_names) != n_models:
        raise DiffingError(f"{len(model_names)} model names for a model axis of {n_models}")
    doc_ids = torch.zeros(n, dtype=torch.int64) if doc_ids is None else doc_ids.to(torch.int64)
    if positions is None:
        positions = torch.zeros(n, dtype=torch.int32)
        for s in torch.unique(doc_ids).tolist():
            sel = doc_ids == s
            positions[sel] = torch.arange(int(sel.sum()), dtype=torch.int32)
    roles = torch.zeros(n, dtype=torch.int8) if roles is None else roles
    sd = storage_dtype(dtype)
    # shard boundaries at document changes once a shard holds >= shard_tokens
    cuts, start = [], 0
    change = torch.nonzero(doc_ids[1:] != doc_ids[:-1]).flatten().add(1).tolist() + [n]
    for c in change:
        if c - start >= shard_tokens or c == n:
            cuts.append((start, c))
            start = c
    shards = []
    for i, (a, b) in enumerate(cuts):
        seq_ids, seq_starts, seq_tokens, seq_roles = _seq_arrays(
            doc_ids[a:b], positions[a:b], token_ids[a:b], roles[a:b]
        )
        shards.append(
            write_shard(
                folder,
                rank=0,
                index=i,
                acts={k: acts_by_layer[k][a:b].to(sd) for k in layers},
                token_ids=token_ids[a:b],
                doc_ids=doc_ids[a:b],
                positions=positions[a:b],
                roles=roles[a:b],
                seq_ids=seq_ids,
                seq_starts=seq_starts,
                seq_tokens=seq_tokens,
                seq_roles=seq_roles,
                first_seq=int(seq_ids.min()),
                next_seq=int(seq_ids.max()) + 1,
            )
        )
    scales = None
    if norm_scales is not None:
        scales = {
            str(k): [float(x) for x in torch.as_tensor(v).flatten().tolist()]
            for k, v in norm_scales.items()
        }
    manifest = Manifest(
        layers=layers,
        d_model=d_model,
        dtype=dtype,
        n_tokens=n,
        shards=shards,
        norm_scales=scales or {},
        model_names=list(model_names),
        models=models or [],
        data=data or [],
        settings=settings or {},
    )
    return finish_manifest(folder, manifest)
