"""From one traced batch to stored rows: which positions to keep, and the buffer that becomes a shard."""

from __future__ import annotations

from pathlib import Path

import torch

from diffing.store.format import ShardInfo
from diffing.store.writer import write_shard
from diffing.tokens import Batch


def keep_mask(
    acts: list[dict[int, torch.Tensor]],
    batch: Batch,
    layers: list[int],
    *,
    drop_bos: bool,
    drop_outliers: bool,
    outlier_factor: float,
) -> torch.Tensor:
    """``[batch, seq]`` bool: real tokens, minus position 0 (``drop_bos``) and norm outliers.

    A position is an outlier when its norm exceeds ``outlier_factor`` times the median
    norm of its own sequence, in either model at any stored layer (attention sinks; they
    would dominate a crosscoder's loss). The median is per sequence so the decision does
    not depend on how sequences were batched (1 or N processes give the same store).
    Computed on the activations' device, so nothing waits for it there.
    """
    device = acts[0][layers[0]].device if acts and layers else batch.attention_mask.device
    mask = batch.attention_mask.to(device, non_blocking=True).bool()
    if drop_bos:
        mask = mask.clone()
        mask[:, 0] = False
    if not drop_outliers:
        return mask
    keep = mask.clone()
    for model_acts in acts:
        for layer in layers:
            norms = model_acts[layer].float().norm(dim=-1)  # [batch, seq]
            here = mask.to(norms.device, non_blocking=True)
            med = norms.masked_fill(~here, float("nan")).nanmedian(dim=1).values  # [batch]
            out = norms > outlier_factor * med[:, None]  # NaN median (empty row) flags nothing
            keep &= ~out.to(device, non_blocking=True)  # the models may sit on different devices
    return keep


def transfer_dtype(acts: torch.dtype, storage: torch.dtype) -> torch.dtype:
    """The dtype to move activations to the host in: the narrower of the model's and the store's.

    Rounding to the storage dtype gives the same bits on the device as on the host, so a
    narrower store is converted before the copy (fewer bytes to move) and a wider one after.
    """
    size = torch.empty(0, dtype=storage).element_size()
    return storage if size <= torch.empty(0, dtype=acts).element_size() else acts


def stack_layers(
    acts: list[dict[int, torch.Tensor]], layers: list[int], dtype: torch.dtype
) -> torch.Tensor:
    """``[n_layers, batch, seq, n_models, d_model]`` in ``dtype``, on the activations' device."""
    dev = acts[0][layers[0]].device  # the first model's device (a pair may span two)
    return torch.stack(
        [torch.stack([a[k].to(dev, non_blocking=True) for a in acts], dim=2) for k in layers]
    ).to(dtype)


def kept_tokens(
    acts: list[dict[int, torch.Tensor]], batch: Batch, layers: list[int], cfg, dtype: torch.dtype
):
    """``(mask [batch, seq], layer -> [n_kept, n_models, d_model])`` in the storage dtype, on CPU.

    The one-thread form of what the harvest pipeline does across threads (tests, tools).
    """
    mask = keep_mask(
        acts,
        batch,
        layers,
        drop_bos=cfg.drop_bos,
        drop_outliers=cfg.drop_outliers,
        outlier_factor=cfg.outlier_factor,
    ).cpu()
    both = stack_layers(acts, layers, acts[0][layers[0]].dtype).cpu()
    return mask, select_rows(both, mask, layers, dtype)


def select_rows(
    both: torch.Tensor, mask: torch.Tensor, layers: list[int], dtype: torch.dtype
) -> dict[int, torch.Tensor]:
    """Layer -> ``[n_kept, n_models, d_model]`` in ``dtype`` from host ``[n_layers, batch, seq, n_models, d]``."""
    return {k: both[i][mask].to(dtype) for i, k in enumerate(layers)}


class ShardBuffer:
    """Kept rows (and the full sequences they came from) accumulated until a shard is written."""

    def __init__(self, layers: list[int]):
        self.layers = layers
        self.next_seq = 0
        """Stream index just after the last sequence added (set by the harvest loop)."""
        self._reset()

    def _reset(self) -> None:
        self.acts: dict[int, list[torch.Tensor]] = {k: [] for k in self.layers}
        self.cols: dict[str, list[torch.Tensor]] = {
            k: [] for k in ("token_ids", "doc_ids", "positions", "roles")
        }
        self.seq_ids: list[int] = []
        self.seq_tokens: list[list[int]] = []
        self.seq_roles: list[list[int]] = []
        self.n_tokens = 0

    def add(self, seqs, batch: Batch, kept) -> None:
        """Append one traced batch: ``seqs`` its sequences, ``kept`` what :func:`kept_tokens` returned."""
        mask, rows = kept
        n_seq, seq_len = mask.shape
        ids = torch.tensor([s.seq_id for s in seqs], dtype=torch.int64)
        self.cols["token_ids"].append(batch.input_ids[mask])
        self.cols["doc_ids"].append(ids[:, None].expand(n_seq, seq_len)[mask])
        self.cols["positions"].append(torch.arange(seq_len)[None].expand(n_seq, seq_len)[mask])
        self.cols["roles"].append(batch.roles[mask])
        for layer in self.layers:
            self.acts[layer].append(rows[layer])
        for s in seqs:
            self.seq_ids.append(s.seq_id)
            self.seq_tokens.append(s.input_ids)
            self.seq_roles.append(s.roles)
        self.n_tokens += int(mask.sum())

    def flush(self, out: Path, *, rank: int, index: int) -> ShardInfo:
        """Write the buffer as shard ``index`` of ``rank`` and empty it."""
        lengths = torch.tensor([0] + [len(t) for t in self.seq_tokens], dtype=torch.int64)
        info = write_shard(
            out,
            rank=rank,
            index=index,
            acts={k: torch.cat(v) for k, v in self.acts.items()},
            token_ids=torch.cat(self.cols["token_ids"]),
            doc_ids=torch.cat(self.cols["doc_ids"]),
            positions=torch.cat(self.cols["positions"]),
            roles=torch.cat(self.cols["roles"]),
            seq_ids=torch.tensor(self.seq_ids, dtype=torch.int64),
            seq_starts=lengths.cumsum(0),
            seq_tokens=torch.tensor([t for ts in self.seq_tokens for t in ts], dtype=torch.int32),
            seq_roles=torch.tensor([r for rs in self.seq_roles for r in rs], dtype=torch.int8),
            first_seq=min(self.seq_ids),
            next_seq=self.next_seq,
        )
        self._reset()
        return info
