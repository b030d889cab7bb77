"""Diff mining: the tokens whose log-probability the fine-tune raises most, over a corpus.

At every real position after position 0 (BOS / attention sink, skipped as the ADL skips it) both
models predict the next token; ``delta = log p_ft - log p_base`` ``[vocab]`` is the fine-tune's
change to that prediction. Its top ``k`` tokens are recorded (those it raised: ``delta > 0``); aggregated over the corpus, a token
that the fine-tune pushes in many places appears often (``count``) with a large mean raise
(``mean_diff``). The top tokens of that ranking are the columns of a non-negative matrix
``positions x tokens`` of the clipped differences ``max(delta, 0)`` (zero where a token is not in
the position's top ``k``); NMF factorises it into clusters of tokens that rise together, each
described by its tokens and the positions where it is strongest.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch

from diffing.lens.config import MiningConfig
from diffing.lens.data import batches, encode_corpus, positions_mask
from diffing.lens.nmf import nmf
from diffing.tracing import trace_pair


class MiningResult(NamedTuple):
    """What diff mining found."""

    top_tokens: list[dict]
    """``{token, id, count, share, mean_diff, mean_diff_all, contexts}`` ranked by ``count`` (times in a
    position's top ``k``), then ``mean_diff`` (mean raise in nats when there); ``share`` is ``count`` over
    positions; ``mean_diff_all`` the mean raise over every position."""
    clusters: list[dict]
    """NMF clusters: ``{tokens: [{token, id, weight}], positions, contexts}`` (``positions``: rows whose
    largest weight is this cluster), largest first."""
    nmf_error: float | None
    """``||A - W H||_F / ||A||_F`` of the factorisation (None when there was none)."""
    positions: int
    """Positions mined (position 0 and padding excluded)."""
    tokens: int
    """Tokens read."""
    documents: int
    """Documents read."""
    config: MiningConfig
    """The settings used."""


def _log_diff(pair, batch) -> torch.Tensor:
    """``[batch, seq, vocab]`` ``log p_ft - log p_base`` of the next token (float32)."""
    acts = trace_pair(pair, batch, [0], logits=True)
    lf = torch.log_softmax(acts.finetuned_logits.float(), -1)
    return lf - torch.log_softmax(acts.base_logits.float().to(lf.device), -1)


@torch.no_grad()
def diff_mining(
    pair,
    *,
    texts: Sequence[str] | None = None,
    chats: Sequence | None = None,
    config: MiningConfig | None = None,
    progress: Callable[[str], None] | None = None,
) -> MiningResult:
    """Mine the tokens the fine-tune raises most over ``texts`` and/or ``chats``, and cluster them."""
    cfg = config or MiningConfig()
    docs = encode_corpus(pair.tokenizer, texts, chats, cfg.tokens, cfg.max_length)
    vocab = int(pair.config.vocab_size)  # the logits' width where it differs (padded embeddings)
    count, raised, total = (torch.zeros(vocab, dtype=torch.float64) for _ in range(3))
    rows_ids, rows_vals, where = [], [], []  # per kept position: top-k ids / values, (doc, pos)
    n_pos = 0
    for i, batch in enumerate(
        batches(docs, cfg.batch_size, pair.tokenizer, progress, "lens mine: batch")
    ):
        keep = positions_mask(batch)  # [batch, seq]
        delta = _log_diff(pair, batch)  # [batch, seq, vocab]
        sel = delta[keep.to(delta.device)]  # [n, vocab]
        k = min(cfg.k, sel.shape[-1])
        vals, ids = sel.topk(k, dim=-1)  # [n, k]
        vals, ids = vals.double().cpu(), ids.cpu()
        vals = vals.clamp_min(0)  # a token whose probability fell was not raised: it counts nowhere
        up = vals > 0  # [n, k]
        if i == 0:
            vocab = sel.shape[-1]
            count = torch.zeros(vocab, dtype=torch.float64)  # [vocab] times in a top-k
            raised = torch.zeros(vocab, dtype=torch.float64)  # [vocab] sum of delta when in a top-k
            total = torch.zeros(vocab, dtype=torch.float64)  # [vocab] sum of delta, all positions
        count += torch.bincount(ids[up], minlength=vocab).double()
        raised.index_add_(0, ids[up], vals[up])
        total += sel.double().sum(0).cpu()
        n_pos += int(sel.shape[0])
        room = cfg.nmf_positions - sum(len(r) for r in rows_ids)
        if room > 0:
            doc_row, pos = keep.nonzero(as_tuple=True)  # [n] each, row-major like sel
            rows_ids.append(ids[:room])
            rows_vals.append(vals[:room].float())
            where += [
                (i * cfg.batch_size + int(r), int(p)) for r, p in zip(doc_row[:room], pos[:room])
            ]
    ranked = _rank(count, raised, cfg.min_count)[: cfg.top_tokens]
    ids_all = torch.cat(rows_ids) if rows_ids else torch.zeros(0, cfg.k, dtype=torch.long)
    vals_all = torch.cat(rows_vals) if rows_vals else torch.zeros(0, cfg.k)
    top = _token_rows(pair.tokenizer, ranked, count, raised, total, n_pos)
    ctx = _Contexts(pair.tokenizer, docs, where, cfg.context_window)
    for row in top:  # where each top token rose most, among the positions kept for the NMF
        hit = (ids_all == row["id"]) * vals_all  # [n, k]
        row["contexts"] = ctx.rows(hit.amax(-1), cfg.n_contexts)
    clusters, err = [], None
    if cfg.n_clusters > 0 and ranked:
        clusters, err = _clusters(pair.tokenizer, ranked, ids_all, vals_all, ctx, cfg)
    n_tok = sum(len(e.input_ids) for e in docs)
    return MiningResult(top, clusters, err, n_pos, n_tok, len(docs), cfg)


def _rank(count: torch.Tensor, raised: torch.Tensor, min_count: int) -> list[int]:
    """Token ids with ``count >= min_count``, by count, then mean raise (both descending)."""
    ids = (count >= min_count).nonzero().reshape(-1).tolist()
    mean = raised / count.clamp_min(1)
    return sorted(ids, key=lambda t: (-float(count[t]), -float(mean[t]), t))


def _token_rows(tok, ranked, count, raised, total, n_pos: int) -> list[dict]:
    return [
        {
            "token": tok.decode([t]),
            "id": t,
            "count": int(count[t]),
            "share": float(count[t]) / max(n_pos, 1),
            "mean_diff": float(raised[t] / count[t].clamp_min(1)),
            "mean_diff_all": float(total[t]) / max(n_pos, 1),
        }
        for t in ranked
    ]


class _Contexts:
    """Windows of the corpus around mined positions: the text up to the predicting token, then the actual next token."""

    def __init__(self, tokenizer, docs, where: list[tuple[int, int]], window: int):
        self.tok, self.docs, self.where, self.window = tokenizer, docs, where, window

    def rows(self, scores: torch.Tensor, n: int) -> list[dict]:
        """The ``n`` positions with the highest ``scores`` ``[positions]`` above zero."""
        if scores.numel() == 0 or n == 0:
            return []
        vals, idx = scores.float().topk(min(n, scores.numel()))
        out = []
        for v, i in zip(vals.tolist(), idx.tolist()):
            if v <= 0:
                break
            d, p = self.where[i]
            ids = self.docs[d].input_ids
            out.append(
                {
                    "score": float(v),
                    "before": self.tok.decode(ids[max(0, p - self.window) : p + 1]),
                    "next": self.tok.decode(ids[p + 1 : p + 2]),
                    "after": self.tok.decode(ids[p + 2 : p + 1 + self.window]),
                }
            )
        return out


def _clusters(tok, ranked, ids_all, vals_all, ctx: _Contexts, cfg: MiningConfig):
    """NMF of the clipped ``positions x top tokens`` matrix; clusters described by tokens and contexts."""
    size = max(int(ids_all.max()) + 1 if ids_all.numel() else 0, max(ranked) + 1)
    col = torch.full((size,), -1, dtype=torch.long)  # [vocab] column of a top token, else -1
    col[torch.tensor(ranked)] = torch.arange(len(ranked))
    cols = ranked
    c = col[ids_all]  # [n, k] column of each top-k entry, -1 when not a top token
    hit = c >= 0
    a = torch.zeros(ids_all.shape[0], len(cols))  # [positions, top tokens]
    a[hit.nonzero()[:, 0], c[hit]] = vals_all[hit].clamp_min(0)
    used = (a.sum(1) > 0).nonzero().reshape(-1)  # rows with any top token
    if used.numel() == 0:
        return [], None
    rank = min(cfg.n_clusters, used.numel(), len(cols))
    fac = nmf(a[used], rank, iterations=cfg.nmf_iterations, seed=cfg.seed)
    owner = fac.w.argmax(1)  # [used]
    clusters = []
    for r in range(rank):
        h = fac.h[r]  # [tokens]
        order = h.argsort(descending=True)[: min(10, len(cols))]
        scores = torch.zeros(ids_all.shape[0])
        scores[used] = fac.w[:, r].float()
        clusters.append(
            {
                "tokens": [
                    {"token": tok.decode([cols[j]]), "id": cols[j], "weight": float(h[j])}
                    for j in order.tolist()
                    if h[j] > 0
                ],
                "positions": int((owner == r).sum()),
                "contexts": ctx.rows(scores, cfg.n_contexts),
            }
        )
    clusters.sort(key=lambda cl: -cl["positions"])
    return clusters, fac.relative_error
