"""Activation-difference PCA: the principal directions of ``x_ft - x_base`` at a layer over a corpus.

The Activation Difference Lens reads only the *mean* difference; a fine-tune can change
several things, each a direction along which the difference varies from token to token.
Both models read the same tokens; at every real position after position 0 (BOS / attention
sink, skipped as the ADL skips it) the difference ``delta = x_ft - x_base`` at each layer is
added to float64 running sums (:mod:`diffing.lens.covariance`). Two decompositions follow:

- the **uncentred** first direction: the top eigenvector of ``E[delta delta^T]``; when the
  fine-tune shifts everything one way it is the ADL direction (``mean_share`` near 1);
- the **centred** principal components: eigenvectors of the covariance of ``delta``, ranked by
  explained variance ratio: what varies from token to token around the mean shift.

Each direction is read through the fine-tuned model's logit lens (both signs), its top and
bottom contexts (the positions with the largest and smallest projections) and its mean
projection per token role. Those need the directions, so they come from a second pass over the
differences, kept in memory up to ``cache_mb`` (above it, both models run again).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch

from diffing.lens.config import PCAConfig
from diffing.lens.contexts import TopContexts
from diffing.lens.covariance import Decomposition, SecondMoments
from diffing.lens.data import batches, encode_corpus, positions_mask
from diffing.tokens import ROLES
from diffing.tracing import trace_pair


class Direction(NamedTuple):
    """One direction of a layer and what it reads as."""

    name: str
    """``"uncentred"`` (top eigenvector of the second moment) or ``"pc1"``, ``"pc2"``, ...."""
    vector: torch.Tensor
    """``[d_model]`` unit vector."""
    explained: float
    """Explained variance ratio (centred), or the share of ``E[||delta||^2]`` along it (uncentred)."""
    promoted: list[dict]
    """Logit lens of ``+vector`` (scaled to the layer's mean fine-tuned norm): top tokens ``{token, id, score}``."""
    promoted_negative: list[dict]
    """Logit lens of ``-vector``: its top tokens."""
    top_contexts: list[dict]
    """Positions with the largest projection: ``{score, token, before, after}``."""
    bottom_contexts: list[dict]
    """Positions with the smallest (most negative) projection."""
    by_role: dict[str, dict]
    """Role -> ``{count, mean, abs_mean}`` of the projection (centred PCs project ``delta - mean``)."""


class LayerPCA(NamedTuple):
    """The decomposition of one layer's differences."""

    layer: int
    """Layer (output of that block)."""
    decomposition: Decomposition
    """Mean, uncentred first direction, centred components and their variances."""
    mean_norm_finetuned: float
    """Mean ``||x_ft||`` at the counted positions (scale of the logit-lens readout)."""
    directions: list[Direction]
    """The uncentred direction, then the centred components."""


class PCAResult(NamedTuple):
    """Activation-difference PCA of a pair over a corpus."""

    layers: list[LayerPCA]
    """One entry per requested layer."""
    tokens: int
    """Tokens read (position 0 of each document included)."""
    positions: int
    """Positions whose differences were decomposed (position 0 and padding excluded)."""
    documents: int
    """Documents read."""
    config: PCAConfig
    """The settings used."""


def _forward(pair, batch, layers: list[int]) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Layer -> ``(x_ft - x_base, x_ft)``, each ``[batch, seq, d]`` (both forwards stop at the deepest layer)."""
    acts = trace_pair(pair, batch, layers)
    b, f = acts.base, acts.finetuned
    return {k: (f[k].float() - b[k].float(), f[k]) for k in layers}


@torch.no_grad()
def diff_pca(
    pair,
    *,
    texts: Sequence[str] | None = None,
    chats: Sequence | None = None,
    config: PCAConfig | None = None,
    progress: Callable[[str], None] | None = None,
) -> PCAResult:
    """Principal components of ``x_ft - x_base`` per layer over ``texts`` and/or ``chats``."""
    cfg = config or PCAConfig()
    layers = pair.check_layers(cfg.layers if cfg.layers else [pair.n_layers // 2])
    docs = encode_corpus(pair.tokenizer, texts, chats, cfg.tokens, cfg.max_length)
    moments = {k: SecondMoments(pair.d_model) for k in layers}
    norm_f = dict.fromkeys(layers, 0.0)
    cache: list | None = []
    budget = cfg.cache_mb * 2**20
    used = 0
    for batch in batches(docs, cfg.batch_size, pair.tokenizer, progress, "lens pca: batch"):
        keep = positions_mask(batch)  # [batch, seq]
        diffs = {}
        for k, (diff, xf) in _forward(pair, batch, layers).items():
            rows = diff[keep.to(diff.device)]  # [n, d]
            moments[k].update(rows)
            norm_f[k] += float(xf[keep.to(xf.device)].float().norm(dim=-1).sum())
            diffs[k] = rows
        if cache is not None:
            used += sum(r.numel() * 4 for r in diffs.values())
            if used <= budget:
                cache.append((batch, {k: r.cpu() for k, r in diffs.items()}))
            else:  # too big to keep: the second pass traces again
                cache = None
    out = []
    for k in layers:
        dec = moments[k].decompose(cfg.n_components)
        out.append((k, dec, norm_f[k] / max(dec.count, 1)))
    readers = {k: _Projections(dec, cfg) for k, dec, _ in out}
    stream = cache if cache is not None else _retrace(pair, docs, cfg, layers, progress)
    for batch, diffs in stream:
        keep = positions_mask(batch)
        for k in layers:
            readers[k].update(diffs[k], batch, keep)
    result_layers = [
        LayerPCA(k, dec, scale, readers[k].directions(pair, scale)) for k, dec, scale in out
    ]
    n_pos = out[0][1].count if out else 0
    return PCAResult(result_layers, sum(len(e.input_ids) for e in docs), n_pos, len(docs), cfg)


def _retrace(pair, docs, cfg: PCAConfig, layers, progress):
    """The second pass when the differences did not fit in ``cache_mb``: both models run again."""
    label = "lens pca: projection batch"
    for batch in batches(docs, cfg.batch_size, pair.tokenizer, progress, label):
        keep = positions_mask(batch)
        diffs = {
            k: d[keep.to(d.device)].cpu() for k, (d, _) in _forward(pair, batch, layers).items()
        }
        yield batch, diffs


class _Projections:
    """Second pass at one layer: contexts and per-role statistics of every direction's projection."""

    def __init__(self, dec: Decomposition, cfg: PCAConfig):
        self.dec = dec
        self.cfg = cfg
        self.names = ["uncentred"] + [f"pc{i + 1}" for i in range(dec.components.shape[0])]
        self.matrix = torch.cat([dec.first[None], dec.components])  # [1 + k, d]
        # the uncentred direction projects delta, the centred components delta - mean
        self.offset = torch.cat([torch.zeros(1), dec.components @ dec.mean])  # [1 + k]
        m = len(self.names)
        self.top = [TopContexts(cfg.n_contexts, cfg.context_window) for _ in range(m)]
        self.bottom = [TopContexts(cfg.n_contexts, cfg.context_window) for _ in range(m)]
        self.role_count = torch.zeros(len(ROLES), dtype=torch.float64)  # [roles]
        self.role_sum = torch.zeros(m, len(ROLES), dtype=torch.float64)  # [directions, roles]
        self.role_abs = torch.zeros(m, len(ROLES), dtype=torch.float64)  # [directions, roles]

    def update(self, rows: torch.Tensor, batch, keep: torch.Tensor) -> None:
        """``rows`` ``[n, d]``: the differences at the ``keep`` ``[batch, seq]`` positions, in order."""
        proj = rows.float().cpu() @ self.matrix.T - self.offset  # [n, 1 + k]
        roles = batch.roles[keep].long()  # [n]
        self.role_count += torch.bincount(roles, minlength=len(ROLES)).double()
        for j in range(proj.shape[1]):
            p = proj[:, j].double()  # [n]
            self.role_sum[j] += torch.zeros(len(ROLES), dtype=torch.float64).index_add_(0, roles, p)
            self.role_abs[j] += torch.zeros(len(ROLES), dtype=torch.float64).index_add_(
                0, roles, p.abs()
            )
            grid = torch.zeros(keep.shape, dtype=torch.float64)  # [batch, seq]
            grid[keep] = p
            self.top[j].update(grid, batch.input_ids, keep, batch.attention_mask)
            self.bottom[j].update(-grid, batch.input_ids, keep, batch.attention_mask)

    def directions(self, pair, scale: float) -> list[Direction]:
        """Finish: each direction with its logit lens, contexts and role statistics."""
        from diffing.stats.adl import logit_lens_tokens

        tok = pair.tokenizer
        explained = [self.dec.first_ratio] + self.dec.variance_ratio.tolist()
        out = []
        for j, name in enumerate(self.names):
            v = self.matrix[j]
            top_k = self.cfg.top_k
            plus = logit_lens_tokens(pair, v * scale, top_k=top_k)[0]
            minus = logit_lens_tokens(pair, -v * scale, top_k=top_k)[0]
            by_role = {
                ROLES[r]: {
                    "count": int(self.role_count[r]),
                    "mean": float(self.role_sum[j, r] / self.role_count[r]),
                    "abs_mean": float(self.role_abs[j, r] / self.role_count[r]),
                }
                for r in range(len(ROLES))
                if self.role_count[r] > 0
            }
            out.append(Direction(name, v, float(explained[j]), plus, minus,
                                 self.top[j].rows(tok), self.bottom[j].rows(tok, sign=-1.0),
                                 by_role))  # fmt: skip
        return out
