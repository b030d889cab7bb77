"""Checking a shard's safetensors header against the store manifest, before reading any tensor.

The reader maps shard files straight into memory and views bytes as the dtype and
shape the header declares. A header that disagrees with the manifest (another dtype
of the same byte size, another row count, offsets past the end of the file) would
otherwise be read as reinterpreted bits or cut silently, so each shard's header is
checked once, when the shard is first opened, against what the manifest implies
(layout in :mod:`diffing.store.format`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from diffing.errors import DiffingError
from diffing.store.format import STORAGE_DTYPES, Manifest, ShardInfo

_ITEMSIZE = {"F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I8": 1, "U8": 1}
"""Bytes per element of each safetensors dtype code the store uses."""
_COLUMNS = {"token_ids": "I32", "doc_ids": "I64", "positions": "I32", "roles": "I8"}
"""Per-token metadata columns (shape ``[n]``) and their dtypes."""
_SEQ_COLUMNS = {"seq_ids": "I64", "seq_starts": "I64", "seq_tokens": "I32", "seq_roles": "I8"}
"""Per-sequence columns and their dtypes."""


def expected_tensors(info: ShardInfo, manifest: Manifest) -> dict[str, tuple[str, list[int]]]:
    """Tensor name -> (dtype code, shape) for the tensors whose shape the manifest fixes."""
    n = info.n_tokens
    acts = STORAGE_DTYPES[manifest.dtype]
    out = {
        f"acts.{k}": (acts, [n, len(manifest.model_names), manifest.d_model])
        for k in manifest.layers
    }
    out.update({name: (code, [n]) for name, code in _COLUMNS.items()})
    return out


def check_header(
    header: dict, data_bytes: int, info: ShardInfo, manifest: Manifest, folder: Path
) -> None:
    """Raise DiffingError naming the shard and its first tensor that disagrees with the manifest.

    ``header`` is the shard's parsed safetensors header, ``data_bytes`` the size of the
    byte buffer after it. Checked: every expected tensor is present with the expected
    dtype and shape, the per-sequence columns have consistent shapes, each tensor's
    offsets lie inside the file and match its size, and the token count the shard
    records in its own metadata equals the manifest's.
    """

    def bad(what: str) -> DiffingError:
        return DiffingError(
            f"shard {info.file} of store {str(folder)!r} does not match the manifest: {what}; "
            "the shard or the manifest was altered: restore the store from a copy, or delete it "
            "and rerun the harvest command"
        )

    want = expected_tensors(info, manifest)
    s = _shape(header, "seq_ids", bad)
    seq_total = None
    for name, code in _SEQ_COLUMNS.items():
        shape = _shape(header, name, bad)
        if header[name].get("dtype") != code:
            raise bad(f"{name} is {header[name].get('dtype')}, expected {code}")
        if len(shape) != 1:
            raise bad(f"{name} has shape {shape}, expected one dimension")
        if name == "seq_starts" and shape[0] != s[0] + 1:
            raise bad(
                f"seq_starts has {shape[0]} entries for {s[0]} sequences (expected {s[0] + 1})"
            )
        if name in ("seq_tokens", "seq_roles"):
            if seq_total is not None and shape[0] != seq_total:
                raise bad(f"seq_tokens and seq_roles differ in length ({seq_total} vs {shape[0]})")
            seq_total = shape[0]
    for name, (code, shape) in want.items():
        got = _shape(header, name, bad)
        if header[name].get("dtype") != code:
            raise bad(
                f"{name} is stored as {header[name].get('dtype')}, the manifest says {code} "
                f"({manifest.dtype if name.startswith('acts.') else 'the store format'})"
            )
        if got != shape:
            raise bad(f"{name} has shape {got}, the manifest implies {shape}")
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        if meta.get("dtype") not in _ITEMSIZE:
            raise bad(f"{name} has unknown dtype {meta.get('dtype')!r}")
        offsets = meta.get("data_offsets")
        if not (isinstance(offsets, list) and len(offsets) == 2) or not all(
            isinstance(x, int) for x in offsets
        ):
            raise bad(f"{name} has no valid data offsets")
        a, b = offsets
        size = math.prod(meta["shape"]) * _ITEMSIZE[meta["dtype"]]
        if not 0 <= a <= b <= data_bytes or b - a != size:
            raise bad(
                f"{name} spans bytes [{a}, {b}) of {data_bytes}, but {meta['shape']} x "
                f"{meta['dtype']} needs {size}"
            )
    own = _own_token_count(header)
    if own is not None and own != info.n_tokens:
        raise bad(f"the shard records {own} tokens, the manifest lists {info.n_tokens}")


def _shape(header: dict, name: str, bad) -> list[int]:
    meta = header.get(name)
    if not isinstance(meta, dict):
        raise bad(f"tensor {name} is missing")
    shape = meta.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in shape
    ):
        raise bad(f"tensor {name} has no valid shape")
    return shape


def _own_token_count(header: dict) -> int | None:
    """The ``n_tokens`` a shard writes into its own safetensors metadata, if it has any."""
    meta = header.get("__metadata__") or {}
    try:
        return int(json.loads(meta["shard"])["n_tokens"])
    except (KeyError, TypeError, ValueError):
        return None
