"""Data-parallel training: process group under ``torchrun``, reductions, DDP, each rank's batch stream.

Each rank streams a disjoint part of the data (global batch ``g`` goes to rank
``g % world_size``, the store's rule), computes the loss on its local batch and
DDP averages the gradients, so with equal local batches one step equals a
single-process step on the concatenated global batch (exactly for L1; for
BatchTopK the top-k runs over each rank's batch, see docs/crosscoder.md).
Latent activity (dead-latent tracking) and the threshold statistic are
reduced across ranks so every rank keeps identical state.
"""

from __future__ import annotations

import dataclasses
import datetime
import itertools
import os
from collections.abc import Iterator
from typing import NamedTuple

import torch
import torch.distributed as dist

from diffing.crosscoder.config import CrossCoderConfig
from diffing.errors import DiffingError


class DistInfo(NamedTuple):
    """Where this process sits in the job."""

    rank: int
    """This process's index (0 in a single-process run)."""
    world_size: int
    """Number of processes (1 in a single-process run)."""
    initialized_here: bool
    """Whether :func:`setup` created the process group (and :func:`teardown` should destroy it)."""


def setup(device: str = "cpu") -> DistInfo:
    """Join the ``torchrun`` process group if there is one (NCCL on GPUs, gloo on CPU).

    Collectives time out after ``$DIFFING_DIST_TIMEOUT_S`` seconds (default 1800) instead of hanging.
    """
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), False)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or not dist.is_available():
        return DistInfo(0, 1, False)
    backend = "nccl" if str(device).startswith("cuda") and torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(
            torch.device(device) if ":" in str(device) else int(os.environ.get("LOCAL_RANK", "0"))
        )
    timeout = datetime.timedelta(seconds=float(os.environ.get("DIFFING_DIST_TIMEOUT_S", "1800")))
    dist.init_process_group(backend=backend, timeout=timeout)
    return DistInfo(dist.get_rank(), dist.get_world_size(), True)


def teardown(info: DistInfo) -> None:
    """Destroy the process group if :func:`setup` created it."""
    if info.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def active() -> bool:
    """True inside a process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce(t: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """In-place all-reduce (``"sum"``, ``"max"`` or ``"mean"``); a no-op in a single process."""
    if not active():
        return t
    work = t
    if dist.get_backend() == "nccl" and not t.is_cuda:  # NCCL reduces CUDA tensors only
        work = t.to(f"cuda:{torch.cuda.current_device()}")
    dist.all_reduce(work, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    if op == "mean":
        work /= dist.get_world_size()
    if work is not t:
        t.copy_(work)
    return t


def any_rank(flag: bool) -> bool:
    """True if ``flag`` is set on any rank (used to stop all ranks together on a bad batch)."""
    if not active():
        return flag
    t = torch.tensor([1.0 if flag else 0.0])
    return bool(all_reduce(t, "max").item() > 0)


def barrier() -> None:
    """Wait for all ranks (no-op in a single process)."""
    if active():
        dist.barrier()


def wrap(module: torch.nn.Module) -> torch.nn.Module:
    """``DistributedDataParallel(module)`` in a process group, else the module itself.

    Buffers (the BatchTopK threshold) are not broadcast: every rank updates them
    identically from all-reduced statistics.
    """
    if not active():
        return module
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    # Buffers are equal at init on every rank, so syncing them once then never is fine.
    params = inspect.signature(DistributedDataParallel).parameters
    key = "forward_sync_buffers" if "forward_sync_buffers" in params else "broadcast_buffers"
    return DistributedDataParallel(module, **{key: False})


# ---- data: sources, config from the data, each rank's stream ----------------------------------------------------------------


def is_store(source) -> bool:
    return hasattr(source, "iter_batches") and hasattr(source, "n_tokens")


def resolve_config(source, cfg: CrossCoderConfig) -> CrossCoderConfig:
    if is_store(source):
        if source.n_tokens == 0:
            raise DiffingError(
                f"the activation store {source.path} is empty; harvest some tokens first"
            )
        layer = source.layer_of(cfg.layer)
        man = source.manifest
        prov = {
            k: man[k]
            for k in ("models", "model_names", "d_model", "layers", "norm_scales", "n_tokens")
            if k in man
        }
        prov["path"] = str(source.path)
        prov["fingerprint"] = store_fingerprint(man)
        cfg = dataclasses.replace(cfg, layer=int(layer), store_manifest=prov)
        return cfg.resolved(d_model=source.d_model, n_models=source.n_models)
    if isinstance(source, torch.Tensor):
        if source.dim() != 3 or source.shape[0] == 0:
            raise DiffingError(
                f"training tensor must be [n_tokens, n_models, d_model] and non-empty, got {list(source.shape)}"
            )
        return cfg.resolved(d_model=source.shape[2], n_models=source.shape[1])
    return cfg.resolved()


def total_steps(source, cfg: CrossCoderConfig) -> int:
    if cfg.steps is not None:
        return int(cfg.steps)
    if cfg.tokens is not None:
        return max(1, int(cfg.tokens) // cfg.batch_size)
    n = (
        source.n_tokens
        if is_store(source)
        else (source.shape[0] if isinstance(source, torch.Tensor) else None)
    )
    if n is None:
        raise DiffingError("training from an iterable needs steps or tokens in the config")
    if n < cfg.batch_size:
        raise DiffingError(
            f"the data holds {n} tokens, fewer than one batch of {cfg.batch_size}; lower `batch_size`",
            fields=("batch_size",),
        )
    return n // cfg.batch_size


def store_dtype(source) -> torch.dtype:
    """The dtype a store keeps its activations in (float32 when unknown)."""
    name = source.manifest.get("dtype", "float32")
    return {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(name, torch.float32)


def epoch_batches(
    source, cfg, local_bs, rank, world, epoch, skip, raw: bool = False
) -> Iterator[torch.Tensor]:
    """One epoch of this rank's batches; global batch g goes to rank g % world (the store's rule).

    ``raw``: store batches come in the storage dtype, not normalised (the prefetcher
    widens and normalises them, on the GPU when training there).
    """
    if is_store(source):
        yield from source.iter_batches(
            local_bs, layer=cfg.layer, shuffle=True, seed=cfg.seed + epoch, normalize=not raw,
            rank=rank, world_size=world, skip_batches=skip, drop_last=True,
            dtype=store_dtype(source) if raw else torch.float32,
        )  # fmt: skip
        return
    n = source.shape[0]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed + epoch))
    for g in range((skip * world) + rank, n // local_bs, world):
        yield source[perm[g * local_bs : (g + 1) * local_bs]].float()


def stream(source, cfg, local_bs, rank, world, start_step, raw=False) -> Iterator[torch.Tensor]:
    """Endless stream of this rank's batches from ``start_step`` on (epochs chained); ``raw`` as in :func:`epoch_batches`."""
    if not (is_store(source) or isinstance(source, torch.Tensor)):
        return itertools.islice(iter(source), start_step, None)

    def gen():
        n = source.n_tokens if is_store(source) else source.shape[0]
        per_epoch = max(1, n // (local_bs * world))
        epoch, skip = divmod(start_step, per_epoch)
        while True:
            produced = False
            for batch in epoch_batches(source, cfg, local_bs, rank, world, epoch, skip, raw):
                produced = True
                yield batch
            if not produced and skip == 0:
                raise DiffingError(
                    f"the data yields no batch of {local_bs} tokens per rank; lower `batch_size`",
                    fields=("batch_size",),
                )
            epoch, skip = epoch + 1, 0

    return gen()


def check_batch(finite: bool, step: int, rank: int, source) -> None:
    """Stop every rank with a clear error when any rank's batch holds NaN or inf."""
    if any_rank(not finite):
        where = f" of store {source.path}" if is_store(source) else ""
        raise DiffingError(
            f"batch {step} (rank {rank}){where} contains NaN or inf activations; "
            "check the store's checksums (ActivationStore.verify) or re-harvest it (never trained on NaNs)"
        )


def store_fingerprint(manifest: dict) -> str:
    """Identity of a store's content: sha256 over its layers, width, dtype and every shard's checksum and token count."""
    import hashlib
    import json

    key = {
        "layers": manifest.get("layers"), "d_model": manifest.get("d_model"),
        "dtype": manifest.get("dtype"),
        "shards": sorted((s.get("file"), s.get("sha256"), s.get("n_tokens")) for s in manifest.get("shards", [])),
    }  # fmt: skip
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
