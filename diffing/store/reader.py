"""Reading an activation store: memory-mapped shards, shuffled streaming batches, contexts.

Nothing is loaded whole: each shard is a ``numpy.memmap`` of its safetensors file
and tensors are views into it. Shuffled epochs cut every shard into chunks of
``CHUNK_TOKENS`` tokens, permute the chunks across all shards, and shuffle tokens
within windows of a bounded size (``window_bytes``), so memory stays flat however
large the store is. Activations are stored raw; ``normalize=True`` multiplies each
model's activations by its scalar from the manifest (docs/methods.md section 1).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from diffing.errors import DiffingError
from diffing.store.format import Manifest, ShardInfo, read_manifest, sha256_file, shard_path
from diffing.store.shardcheck import check_header

CHUNK_TOKENS = 1024
"""Tokens per chunk: the unit shuffled across shards (contiguous reads stay fast)."""

_NP = {
    "F32": np.float32,
    "F16": np.float16,
    "BF16": np.uint16,
    "I64": np.int64,
    "I32": np.int32,
    "I8": np.int8,
    "U8": np.uint8,
}


class StoreBatch(NamedTuple):
    """Activations of a set of tokens with their metadata."""

    acts: torch.Tensor
    """``[batch, n_models, d_model]`` activations (model axis: base=0, finetuned=1)."""
    token_ids: torch.Tensor
    """``[batch]`` int64 token ids."""
    doc_ids: torch.Tensor
    """``[batch]`` int64 sequence ("document") ids."""
    positions: torch.Tensor
    """``[batch]`` int64 position of each token in its sequence."""
    roles: torch.Tensor
    """``[batch]`` int64 role ids (index into ``diffing.tokens.ROLES``)."""


class _Shard:
    """One memory-mapped shard file (header parsed by hand so every tensor is a lazy view).

    Opening checks it lies in the store, has the listed size, and its header matches the
    manifest (:mod:`diffing.store.shardcheck`), before any tensor is read.
    """

    def __init__(self, folder: Path, info: ShardInfo, manifest: Manifest):
        self.path = shard_path(folder, info.file)
        if not self.path.is_file():
            raise DiffingError(
                f"shard {info.file} of store {str(folder)!r} is missing; re-harvest (the same command resumes)"
            )
        size = self.path.stat().st_size
        if size != info.bytes:
            raise DiffingError(
                f"shard {info.file} of store {str(folder)!r} has {size} bytes, the manifest says {info.bytes}: "
                "it is truncated or was replaced; delete it and rerun the harvest to rewrite it"
            )
        self.mm = np.memmap(self.path, mode="r", dtype=np.uint8)
        (hlen,) = struct.unpack("<Q", bytes(self.mm[:8])) if size >= 8 else (size,)
        try:
            if 8 + hlen > size:
                raise ValueError("header longer than the file")
            self.header = json.loads(bytes(self.mm[8 : 8 + hlen]))
            if not isinstance(self.header, dict):
                raise ValueError("header is not a JSON object")
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as err:
            raise DiffingError(
                f"shard {info.file} of store {str(folder)!r} is corrupt (unreadable header); delete it and re-harvest"
            ) from err
        self.base = 8 + hlen
        self.n = info.n_tokens
        check_header(self.header, size - self.base, info, manifest, folder)

    def array(self, name: str) -> np.ndarray:
        """Lazy memory-mapped view of tensor ``name`` (bfloat16 is viewed as uint16)."""
        meta = self.header[name]
        a, b = meta["data_offsets"]
        return (
            self.mm[self.base + a : self.base + b].view(_NP[meta["dtype"]]).reshape(meta["shape"])
        )


class ActivationStore:
    """A harvested store of paired activations. Open with :meth:`open`."""

    def __init__(self, path: Path, manifest: Manifest):
        self.path = path
        self._m = manifest
        self._shards: dict[int, _Shard] = {}
        self._manifest_dict: dict | None = None
        self._offsets = np.cumsum([0] + [s.n_tokens for s in manifest.shards])  # [n_shards + 1]

    @classmethod
    def open(cls, path: str | Path) -> ActivationStore:
        """Open a store folder (reads the manifest only); DiffingError if missing, invalid or empty."""
        path = Path(path).expanduser()
        return cls(path, read_manifest(path))

    # ---- what is in it -------------------------------------------------------------
    @property
    def manifest(self) -> dict:
        """The manifest as a plain dict (built once; treat it as read-only)."""
        if self._manifest_dict is None:
            self._manifest_dict = self._m.to_dict()
        return self._manifest_dict

    @property
    def layers(self) -> list[int]:
        """Stored layers."""
        return list(self._m.layers)

    @property
    def d_model(self) -> int:
        """Activation width."""
        return self._m.d_model

    @property
    def n_tokens(self) -> int:
        """Total stored tokens."""
        return self._m.n_tokens

    @property
    def model_names(self) -> list[str]:
        """Names of the model axis (``["base", "finetuned"]``)."""
        return list(self._m.model_names)

    @property
    def n_models(self) -> int:
        """Size of the model axis (2)."""
        return len(self._m.model_names)

    def __len__(self) -> int:
        return self.n_tokens

    def __repr__(self) -> str:
        return f"ActivationStore({str(self.path)!r}, layers={self.layers}, n_tokens={self.n_tokens}, d_model={self.d_model})"

    def layer_of(self, layer: int | None) -> int:
        """``layer`` checked to be in the store; None picks the only layer of a one-layer store."""
        if layer is None:
            if len(self._m.layers) == 1:
                return self._m.layers[0]
            raise DiffingError(
                f"the store holds layers {self._m.layers}; pick one with `layer`", fields=("layer",)
            )
        if int(layer) not in self._m.layers:
            raise DiffingError(
                f"layer {layer} is not in the store (it holds {self._m.layers}); harvest it (`layers`)",
                fields=("layers",),
            )
        return int(layer)

    def norm_scales(self, layer: int | None = None) -> torch.Tensor:
        """``[n_models]`` scalars that make each model's mean squared norm equal d_model at ``layer``."""
        return torch.tensor(self._m.norm_scales[str(self.layer_of(layer))], dtype=torch.float32)

    def verify(self) -> None:
        """Recompute every shard's sha256 and check its header against the manifest.

        DiffingError naming the first shard that is missing, outside the store, truncated,
        corrupt, or whose tensors do not match what the manifest lists.
        """
        for i, info in enumerate(self._m.shards):
            p = shard_path(self.path, info.file)
            if not p.is_file():
                raise DiffingError(
                    f"shard {info.file} of store {str(self.path)!r} is missing; re-harvest (the same command resumes)"
                )
            if p.stat().st_size != info.bytes or sha256_file(p) != info.sha256:
                raise DiffingError(
                    f"shard {info.file} of store {str(self.path)!r} is corrupt (checksum mismatch); "
                    "delete it and rerun the harvest command to rewrite it"
                )
            self._shard(i)  # opening checks dtypes, shapes and token counts

    # ---- low-level access ----------------------------------------------------------
    def _shard(self, i: int) -> _Shard:
        if i not in self._shards:
            self._shards[i] = _Shard(self.path, self._m.shards[i], self._m)
        return self._shards[i]

    def _finish(
        self, acts: torch.Tensor, layer: int, normalize: bool, dtype: torch.dtype
    ) -> torch.Tensor:
        acts = acts.to(dtype)  # [n, n_models, d]; a fresh tensor from every caller
        if normalize:
            acts.mul_(self.norm_scales(layer).to(dtype)[None, :, None])
        return acts

    def _gather(self, pieces: list[tuple[int, int, int]], name: str) -> torch.Tensor:
        """Rows ``[a, b)`` of tensor ``name`` of shard ``i`` for each ``(i, a, b)``, copied once into one tensor."""
        views = [self._shard(i).array(name)[a:b] for i, a, b in pieces]
        dst = np.empty((sum(len(v) for v in views), *views[0].shape[1:]), dtype=views[0].dtype)
        at = 0
        for v in views:
            dst[at : at + len(v)] = v  # the only copy out of the memory map
            at += len(v)
        out = torch.from_numpy(dst)
        return (
            out.view(torch.bfloat16)
            if self._m.dtype == "bfloat16" and name.startswith("acts.")
            else out
        )

    def _read(self, pieces: list[tuple[int, int, int]], layer: int, meta: bool):
        """Raw acts ``[n, n_models, d]`` (and optionally the metadata columns) of several row ranges."""
        acts = self._gather(pieces, f"acts.{layer}")
        if not meta:
            return acts, None
        cols = [
            self._gather(pieces, name).long()
            for name in ("token_ids", "doc_ids", "positions", "roles")
        ]
        return acts, cols

    def _pieces(self, start: int, stop: int) -> list[tuple[int, int, int]]:
        """Global token range -> per-shard row ranges."""
        if not 0 <= start <= stop <= self.n_tokens:
            raise DiffingError(
                f"token range [{start}, {stop}) is outside the store's 0..{self.n_tokens}"
            )
        out, i = [], int(np.searchsorted(self._offsets, start, side="right") - 1)
        while start < stop:
            lo, hi = int(self._offsets[i]), int(self._offsets[i + 1])
            take = min(stop, hi)
            if take > start:
                out.append((i, start - lo, take - lo))
            start, i = take, i + 1
        return out

    # ---- public reading ------------------------------------------------------------
    def read_tokens(
        self,
        start: int,
        stop: int,
        *,
        layer: int | None = None,
        normalize: bool = True,
        dtype: torch.dtype = torch.float32,
    ) -> StoreBatch:
        """Tokens ``[start, stop)`` in storage order, with metadata."""
        layer = self.layer_of(layer)
        acts, cols = self._read(self._pieces(start, stop), layer, True)
        return StoreBatch(self._finish(acts, layer, normalize, dtype), *cols)

    def iter_sequential(
        self,
        batch_size: int,
        *,
        layer: int | None = None,
        normalize: bool = True,
        dtype: torch.dtype = torch.float32,
    ) -> Iterator[StoreBatch]:
        """Every token once, in storage order, ``batch_size`` at a time (the last batch may be smaller)."""
        for start in range(0, self.n_tokens, batch_size):
            yield self.read_tokens(
                start,
                min(start + batch_size, self.n_tokens),
                layer=layer,
                normalize=normalize,
                dtype=dtype,
            )

    def iter_batches(
        self,
        batch_size: int,
        *,
        layer: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        normalize: bool = True,
        rank: int = 0,
        world_size: int = 1,
        skip_batches: int = 0,
        drop_last: bool = True,
        with_meta: bool = False,
        dtype: torch.dtype = torch.float32,
        window_bytes: int = 256 * 2**20,
    ) -> Iterator[torch.Tensor] | Iterator[StoreBatch]:
        """One epoch of batches ``[batch, n_models, d_model]`` (or :class:`StoreBatch` with ``with_meta``).

        Deterministic for a given ``seed``. Global batch ``g`` goes to rank ``g % world_size``,
        so ranks get disjoint parts; ``skip_batches`` skips this rank's first batches without
        reading them (resume). Shuffling permutes chunks of ``CHUNK_TOKENS`` across all
        shards, then tokens within windows of about ``window_bytes`` of activations.
        """
        if batch_size <= 0:
            raise DiffingError(f"batch_size must be positive, got {batch_size}")
        if not 0 <= rank < world_size:
            raise DiffingError(f"rank {rank} is outside 0..{world_size - 1}")
        layer = self.layer_of(layer)
        itemsize = torch.empty(0, dtype=_storage_torch_dtype(self._m.dtype)).element_size()
        window_tokens = max(
            batch_size, window_bytes // max(1, self.n_models * self.d_model * itemsize)
        )
        chunks = [
            (i, a, min(a + CHUNK_TOKENS, s.n_tokens))
            for i, s in enumerate(self._m.shards)
            for a in range(0, s.n_tokens, CHUNK_TOKENS)
        ]
        if shuffle:
            perm = torch.randperm(
                len(chunks), generator=torch.Generator().manual_seed(seed)
            ).tolist()
            chunks = [chunks[j] for j in perm]
        windows, cur, size = [], [], 0
        for c in chunks:
            cur.append(c)
            size += c[2] - c[1]
            if size >= window_tokens:
                windows.append(cur)
                cur, size = [], 0
        if cur:
            windows.append(cur)
        skip_tokens = skip_batches * world_size * batch_size
        g = skip_batches * world_size  # global index of the next batch
        pos = 0  # stream position of the start of the next window
        pend = None  # (acts, meta) rows left over from the previous window, fewer than batch_size
        for w, window in enumerate(windows):
            wn = sum(b - a for _, a, b in window)
            wstart, pos = pos, pos + wn
            if pos <= skip_tokens:
                continue
            acts, meta = self._read(window, layer, with_meta)
            if shuffle:
                gen = torch.Generator().manual_seed(seed * 1_000_003 + w + 1)
                order = torch.randperm(wn, generator=gen)
            else:
                order = torch.arange(wn)
            order = order[max(0, skip_tokens - wstart) :]
            i = 0
            if pend is not None:  # complete the straddling batch
                take = order[: batch_size - pend[0].shape[0]]
                pend = (
                    torch.cat([pend[0], acts[take]]),
                    [torch.cat([p, m[take]]) for p, m in zip(pend[1], meta)] if meta else None,
                )
                i = take.numel()
                if pend[0].shape[0] < batch_size:
                    continue
                if g % world_size == rank:
                    yield self._emit(pend[0], pend[1], layer, normalize, dtype, with_meta)
                g, pend = g + 1, None
            while i + batch_size <= order.numel():
                if g % world_size == rank:  # other ranks' batches are never gathered
                    rows = order[i : i + batch_size]
                    yield self._emit(
                        acts[rows],
                        [m[rows] for m in meta] if meta else None,
                        layer,
                        normalize,
                        dtype,
                        with_meta,
                    )
                g, i = g + 1, i + batch_size
            if i < order.numel():
                rows = order[i:]
                pend = (acts[rows], [m[rows] for m in meta] if meta else None)
        if not drop_last and pend is not None and g % world_size == rank:
            yield self._emit(pend[0], pend[1], layer, normalize, dtype, with_meta)

    def _emit(self, acts, meta, layer, normalize, dtype, with_meta):
        out = self._finish(acts, layer, normalize, dtype)
        return StoreBatch(out, *meta) if with_meta else out

    def context(
        self, token_index: int, window: int = 16, *, after: int | None = None
    ) -> tuple[list[int], int, list[int]]:
        """The tokens around stored token ``token_index`` in its own sequence.

        Returns ``(token_ids, where, roles)``: up to ``window`` tokens before and ``after``
        (default ``window``) tokens after it, ``where`` the index of the token in that list.
        Dropped positions (BOS, outliers) are included, so decode with the tokenizer as-is.
        """
        ((i, a, _),) = self._pieces(token_index, token_index + 1)
        shard = self._shard(i)
        doc = int(shard.array("doc_ids")[a])
        pos = int(shard.array("positions")[a])
        seq_ids = shard.array("seq_ids")
        k = int(np.nonzero(seq_ids == doc)[0][0])
        s0, s1 = (int(x) for x in shard.array("seq_starts")[k : k + 2])
        lo = max(s0, s0 + pos - window)
        hi = min(s1, s0 + pos + (window if after is None else after) + 1)
        ids = shard.array("seq_tokens")[lo:hi].astype(np.int64).tolist()
        roles = shard.array("seq_roles")[lo:hi].astype(np.int64).tolist()
        return ids, s0 + pos - lo, roles


def _storage_torch_dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(
        name, torch.float32
    )
