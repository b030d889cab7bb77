"""Harvest: run both models of a pair over a corpus and write their activations to a store.

The data is a deterministic stream of sequences (:mod:`diffing.store.sequences`; plain
text packed into full-length sequences with ``pack=True``, the CLI's default); the first sequences whose
lengths add up to ``tokens`` are harvested. Rank ``r`` of
``world_size`` processes takes sequences ``i`` with ``i % world_size == r``, groups
``sort_batches * batch_size`` of them, sorts each group by length (little padding), traces
both models up to the deepest requested layer (``diffing.tracing.trace_model``
stops the forward there), drops BOS positions and attention-sink outliers
(docs/methods.md section 1), and appends the kept tokens to the current shard. A shard
is written (temporary name, then rename) once it holds ``shard_tokens``; the
rank's progress file lists finished shards, so rerunning the same call continues
after the last one and produces byte-identical shards. Rank 0 merges one manifest
at the end, with the per-model normalisation scalars computed over every token.
Batches are built ahead on a thread and shards written behind on another
(:mod:`diffing.store.pipeline`); each rank holds a lock file in the store folder while
it writes, so a second harvest into the same folder stops with a clear error.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path

import torch

from diffing.data.corpus import resolve_all
from diffing.errors import DiffingError
from diffing.io import folder_lock
from diffing.progress import bar as progress_bar
from diffing.store.batches import (
    ShardBuffer,
    keep_mask,
    select_rows,
    stack_layers,
    transfer_dtype,
)
from diffing.store.config import HarvestConfig
from diffing.store.format import (
    MANIFEST,
    MODEL_NAMES,
    Manifest,
    ShardInfo,
    read_manifest,
)
from diffing.store.pipeline import HostCopier, Prefetcher, Writer, prepare_batches
from diffing.store.provenance import data_identity, pair_info
from diffing.store.reader import ActivationStore
from diffing.store.resume import (
    _barrier,
    _load_progress,
    _progress_path,
    _save_progress,
)
from diffing.store.sequences import sequence_stream
from diffing.store.writer import finish_manifest, storage_dtype
from diffing.tokens import Batch, pad_id_of
from diffing.tracing import forward_layers, trace_model

_after_shard = None
"""Test hook: called with each finished :class:`ShardInfo` (raise in it to simulate an interruption)."""


def _groups(
    stream, *, tokens: int, rank: int, world_size: int, start_seq: int, group_size: int
) -> Iterator[list]:
    """This rank's sequences of the harvested prefix (``tokens`` long), from ``start_seq``, in groups."""
    cum, group = 0, []
    for seq in stream:
        if cum >= tokens:
            break
        cum += len(seq.input_ids)
        if seq.seq_id % world_size != rank or seq.seq_id < start_seq:
            continue
        group.append(seq)
        if len(group) == group_size:
            yield group
            group = []
    if group:
        yield group


def _default_shard_tokens(n_layers: int, d_model: int, dtype: torch.dtype) -> int:
    per_token = n_layers * len(MODEL_NAMES) * d_model * torch.empty(0, dtype=dtype).element_size()
    return max(1024, (128 * 2**20) // per_token)


def _store_lock(out: Path, rank: int):
    """Hold ``out/.harvest-rNNN.lock`` (one per rank, so the ranks of one run coexist)."""
    return folder_lock(out, f"harvest-r{rank:03d}", f"harvest (rank {rank})")


def _run(
    pair,
    out: Path,
    cfg: HarvestConfig,
    key: dict,
    shards: list[ShardInfo],
    sources,
    sdtype: torch.dtype,
    *,
    rank: int,
    progress: bool,
) -> None:
    """This rank's share of the harvest after the finished ``shards``: forwards on this thread,
    batches prepared ahead and shards written behind (module :mod:`diffing.store.pipeline`)."""
    layers, batch_size = cfg.layers, cfg.batch_size
    start_seq = shards[-1].next_seq if shards else 0
    stream = sequence_stream(
        pair.tokenizer, sources, seq_len=cfg.seq_len, chat_fraction=cfg.chat_fraction, pack=cfg.pack
    )
    groups = _groups(
        stream,
        tokens=cfg.tokens,
        rank=rank,
        world_size=cfg.world_size,
        start_seq=start_seq,
        group_size=cfg.sort_batches * batch_size,
    )
    local = not pair.remote
    device = next(pair.hf("base").parameters()).device if local else torch.device("cpu")
    cuda = device.type == "cuda"
    bar = progress_bar(
        total=cfg.tokens // cfg.world_size,
        initial=sum(s.n_tokens for s in shards),
        unit="tok",
        enabled=progress and rank == 0,
        desc="harvest" if cfg.world_size == 1 else f"harvest (rank 0 of {cfg.world_size})",
    )
    buf = ShardBuffer(layers)
    copier = HostCopier()

    def write(job) -> None:  # on the writer thread, in batch order
        seqs, batch, group_end, copy = job
        if copy.event is not None:
            copy.event.synchronize()
        mask = copy.keep.clone()
        rows = select_rows(copy.acts, mask, layers, sdtype)
        copier.release(copy.slot)
        buf.add(seqs, batch, (mask, rows))
        if group_end is None:
            return
        buf.next_seq = group_end
        if buf.n_tokens >= cfg.shard_tokens:
            shards.append(buf.flush(out, rank=rank, index=len(shards)))
            _save_progress(out, rank, key, cfg.tokens, shards, done=False)
            if _after_shard is not None:
                _after_shard(shards[-1])

    prefetch = Prefetcher(prepare_batches(groups, batch_size, pad_id_of(pair.tokenizer), pin=cuda))
    writer = Writer(write)
    try:
        for item in prefetch:
            writer.check()
            ids = item.batch.input_ids.to(device, non_blocking=True)  # [batch, seq]
            attn = item.batch.attention_mask
            if local:  # plain hooks; no mask at all when every sequence is full length
                mask_dev = attn.to(device, non_blocking=True) if item.padded else None
                acts = [
                    forward_layers(lm._module, pair.arch, ids, mask_dev, layers).layers
                    for lm in pair.models
                ]
            else:
                acts = [
                    trace_model(lm, pair.arch, ids, attn, layers, remote=pair.remote).layers
                    for lm in pair.models
                ]
            keep = keep_mask(
                acts,
                Batch(ids, attn, item.batch.roles),
                layers,
                drop_bos=cfg.drop_bos,
                drop_outliers=cfg.drop_outliers,
                outlier_factor=cfg.outlier_factor,
            )
            both = stack_layers(acts, layers, transfer_dtype(acts[0][layers[0]].dtype, sdtype))
            copy = copier.copy(both, keep, writer.check)
            writer.put((item.seqs, item.batch, item.group_end, copy))
            bar.update(sum(len(s.input_ids) for s in item.seqs))
        writer.finish()
    except BaseException:
        writer.abort()
        raise
    finally:
        prefetch.close()
    if buf.n_tokens:
        shards.append(buf.flush(out, rank=rank, index=len(shards)))
    _save_progress(out, rank, key, cfg.tokens, shards, done=True)
    bar.close()


def harvest(
    pair,
    out: str | Path,
    *,
    layers: Sequence[int],
    data: Sequence[str] | str,
    tokens: int,
    seq_len: int = 1024,
    batch_size: int = 8,
    dtype: str = "float32",
    chat_fraction: float = 0.5,
    drop_bos: bool = True,
    drop_outliers: bool = True,
    outlier_factor: float = 10.0,
    shard_tokens: int | None = None,
    sort_batches: int = 8,
    pack: bool = False,
    progress: bool = True,
    rank: int = 0,
    world_size: int = 1,
) -> ActivationStore:
    """Harvest both models' activations at ``layers`` over ``tokens`` tokens of ``data`` into ``out``.

    Resumable: rerunning the same call continues after the last finished shard (and
    returns at once if the store is complete). Multi-process: call it in each of
    ``world_size`` processes with its ``rank``; rank 0 writes the manifest after all
    finish. ``pack``: plain text is packed into full ``seq_len`` sequences (see
    :mod:`diffing.store.sequences` for the trade-off). Returns the opened :class:`ActivationStore`.
    """
    if not 0 <= rank < world_size:
        raise DiffingError(f"rank {rank} is outside 0..{world_size - 1}")
    sdtype = storage_dtype(dtype)
    layers = pair.check_layers(layers)
    specs = (
        [s.strip() for s in data.split(",") if s.strip()]
        if isinstance(data, str)
        else [str(s) for s in data]
    )
    cfg = HarvestConfig(
        layers=layers,
        data=specs,
        tokens=tokens,
        seq_len=seq_len,
        batch_size=batch_size,
        dtype=str(sdtype).removeprefix("torch."),
        chat_fraction=chat_fraction,
        drop_bos=drop_bos,
        drop_outliers=drop_outliers,
        outlier_factor=outlier_factor,
        shard_tokens=shard_tokens or _default_shard_tokens(len(layers), pair.d_model, sdtype),
        world_size=world_size,
        sort_batches=sort_batches,
        pack=pack,
    )
    sources = resolve_all(specs)  # after the settings are checked: reading data can take a while
    models = pair_info(pair)
    key = cfg.resume_key(models) | {"data_content": data_identity(sources)}
    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    if (out / MANIFEST).is_file():
        done = read_manifest(out)
        if done.settings.get("resume_key") != json.loads(json.dumps(key)):
            raise DiffingError(
                f"{out} already holds a store harvested with other settings; pass a new `out` or delete it",
                fields=("out",),
            )
        if done.settings.get("tokens") == tokens:
            return ActivationStore.open(out)
    with _store_lock(out, rank):  # held until the store is complete
        for tmp in out.glob(f".shard-r{rank:03d}-*.tmp"):
            tmp.unlink()  # a shard interrupted mid-write (by any process: the lock says none is live)
        shards = _load_progress(out, rank, key)
        _run(pair, out, cfg, key, shards, sources, sdtype, rank=rank, progress=progress)

        def all_done() -> bool:
            paths = [_progress_path(out, r) for r in range(world_size)]
            return all(
                p.is_file()
                and json.loads(p.read_text()).get("done")
                and json.loads(p.read_text()).get("tokens") == tokens
                for p in paths
            )

        _barrier(out, world_size, all_done)
        if rank == 0:
            everything = [
                ShardInfo(**s)
                for r in range(world_size)
                for s in json.loads(_progress_path(out, r).read_text())["shards"]
            ]
            if not sum(s.n_tokens for s in everything):
                raise DiffingError(
                    f"the data {', '.join(specs)} gave no tokens to store (documents empty or all positions dropped)"
                )
            settings = asdict(cfg) | {"resume_key": key}
            manifest = Manifest(
                layers=layers,
                d_model=pair.d_model,
                dtype=cfg.dtype,
                n_tokens=0,
                shards=everything,
                norm_scales={},
                models=models,
                data=specs,
                settings=settings,
                tokenizer=pair.finetuned_ref,
            )
            finish_manifest(out, manifest)
        _barrier(
            out,
            world_size,
            lambda: (
                (out / MANIFEST).is_file() and read_manifest(out).settings.get("tokens") == tokens
            ),
        )
        return ActivationStore.open(out)
