"""Output statistics: per-token KL(fine-tuned || base) of the next-token distributions.

``KL(p_f || p_b) = sum_v p_f(v) (log p_f(v) - log p_b(v))`` at every real position
(docs/methods.md section 5): the position reads token ``t`` and both models predict token
``t + 1``; the KL is attributed to token ``t``'s role. Collected: the distribution by
role and by data kind (plain text vs chat), the mean by offset from the start of the
assistant turn in chats (how the change is laid out along the template), and the
contexts with the largest KL with both models' top predictions.
"""

from __future__ import annotations

import heapq

import torch

from diffing.tokens import ROLE_IDS, ROLES


@torch.no_grad()
def token_kl(logits_f: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
    """``[batch, seq]`` KL(p_f || p_b) from ``[batch, seq, vocab]`` logits (float32, row by row to save memory)."""
    out = torch.empty(logits_f.shape[:-1], dtype=torch.float32, device=logits_f.device)
    for i in range(logits_f.shape[0]):
        lf = torch.log_softmax(logits_f[i].float(), -1)  # [seq, vocab]
        lb = torch.log_softmax(logits_b[i].float(), -1)  # [seq, vocab]
        out[i] = (lf.exp() * (lf - lb)).sum(-1).clamp_min(0)
    return out


def _quantiles(values: torch.Tensor) -> dict:
    v = values.double()
    return {
        "mean": float(v.mean()),
        "median": float(v.median()),
        "p90": float(torch.quantile(v, 0.9)) if len(v) < 16_000_000 else None,
        "max": float(v.max()),
        "tokens": len(v),
    }


class KLAccumulator:
    """Per-token KL values with their roles and data kind, plus the top contexts."""

    def __init__(
        self,
        tokenizer,
        *,
        n_contexts: int = 20,
        context_tokens: int = 24,
        top_predictions: int = 5,
        max_offset: int = 32,
    ):
        self.tokenizer = tokenizer
        self.n_contexts = n_contexts
        self.context_tokens = context_tokens
        self.top_predictions = top_predictions
        self.max_offset = max_offset
        self.values: dict[str, list[torch.Tensor]] = {
            "text": [],
            "chat": [],
        }  # kind -> [n] KL chunks
        self.roles: dict[str, list[torch.Tensor]] = {
            "text": [],
            "chat": [],
        }  # kind -> [n] role chunks
        self.offset_sum = torch.zeros(2 * max_offset + 1, dtype=torch.float64)  # [offsets]
        self.offset_count = torch.zeros(2 * max_offset + 1, dtype=torch.float64)  # [offsets]
        self._heap: list[tuple[float, int, dict]] = []
        self._seen = 0

    @torch.no_grad()
    def update(
        self,
        kind: str,
        kl: torch.Tensor,
        keep: torch.Tensor,
        roles: torch.Tensor,
        input_ids: torch.Tensor,
        logits_b: torch.Tensor,
        logits_f: torch.Tensor,
    ) -> None:
        """Add one batch of ``kind`` (``text``/``chat``): ``kl``, ``keep``, ``roles``, ``input_ids`` are ``[batch, seq]``;
        ``logits_b`` / ``logits_f`` are ``[batch, seq, vocab]`` or, from a remote run, ``(log-probabilities, ids)``
        of each model's top predictions ``[batch, seq, n]``."""
        kl, keep, roles = kl.cpu(), keep.cpu(), roles.cpu()
        self.values[kind].append(kl[keep])
        self.roles[kind].append(roles[keep].long())
        if kind == "chat":
            self._update_offsets(kl, keep, roles)
        self._update_contexts(kind, kl, keep, roles, input_ids.cpu(), logits_b, logits_f)

    def _update_offsets(self, kl, keep, roles) -> None:
        is_asst = roles == ROLE_IDS["assistant"]  # [batch, seq]
        for i in range(kl.shape[0]):
            where = torch.nonzero(is_asst[i]).flatten()
            if len(where) == 0:
                continue
            pos = torch.arange(kl.shape[1]) - int(
                where[0]
            )  # [seq] offset from the first assistant token
            sel = keep[i] & (pos.abs() <= self.max_offset)
            idx = pos[sel] + self.max_offset
            self.offset_sum.index_add_(0, idx, kl[i][sel].double())
            self.offset_count.index_add_(0, idx, torch.ones(len(idx), dtype=torch.float64))

    def _update_contexts(self, kind, kl, keep, roles, ids, logits_b, logits_f) -> None:
        flat = torch.where(keep, kl, torch.full_like(kl, -1.0)).flatten()
        k = min(self.n_contexts, int(keep.sum()))
        if k == 0:
            return
        vals, idx = flat.topk(k)
        floor = self._heap[0][0] if len(self._heap) >= self.n_contexts else -1.0
        for val, j in zip(vals.tolist(), idx.tolist()):
            if val <= floor:
                break
            b, t = divmod(j, kl.shape[1])
            self._seen += 1
            item = self._context(kind, float(val), b, t, ids, roles, logits_b, logits_f)
            if len(self._heap) < self.n_contexts:
                heapq.heappush(self._heap, (val, self._seen, item))
            else:
                heapq.heappushpop(self._heap, (val, self._seen, item))
            floor = self._heap[0][0] if len(self._heap) >= self.n_contexts else -1.0

    def _predictions(self, preds, b: int, t: int) -> list[dict]:
        """Top predictions at ``[b, t]`` from ``[batch, seq, vocab]`` logits, or from
        ``(log-probabilities, ids)`` ``[batch, seq, n]`` already sorted (a remote run's top-k)."""
        if isinstance(preds, tuple):
            p, ids = (
                preds[0][b, t, : self.top_predictions].exp(),
                preds[1][b, t, : self.top_predictions],
            )
        else:
            p, ids = torch.softmax(preds[b, t].float(), -1).topk(self.top_predictions)  # of [vocab]
        return [
            {"token": self.tokenizer.decode([i]), "id": i, "prob": float(q)}
            for q, i in zip(p.tolist(), ids.tolist())
        ]

    def _context(self, kind, val, b, t, ids, roles, logits_b, logits_f) -> dict:
        row = ids[b]
        start = max(0, t - self.context_tokens)
        nxt = int(row[t + 1]) if t + 1 < len(row) else None
        return {
            "kl": val,
            "kind": kind,
            "role": ROLES[int(roles[b, t])],
            "context": self.tokenizer.decode(row[start:t].tolist()),
            "token": self.tokenizer.decode([int(row[t])]),
            "next_token": self.tokenizer.decode([nxt]) if nxt is not None else None,
            "finetuned_top": self._predictions(logits_f, b, t),
            "base_top": self._predictions(logits_b, b, t),
        }

    def result(self) -> dict:
        """The ``kl`` section of ``stats.json``."""
        out: dict = {}
        all_v = [v for kind in ("text", "chat") for v in self.values[kind]]
        all_r = [r for kind in ("text", "chat") for r in self.roles[kind]]
        if not all_v or sum(len(v) for v in all_v) == 0:
            return {"tokens": 0}
        values, roles = torch.cat(all_v), torch.cat(all_r)
        out.update(_quantiles(values))
        out["by_role"] = {
            ROLES[r]: _quantiles(values[roles == r])
            for r in range(len(ROLES))
            if (roles == r).any()
        }
        for kind in ("text", "chat"):
            if self.values[kind] and sum(len(v) for v in self.values[kind]):
                kv, kr = torch.cat(self.values[kind]), torch.cat(self.roles[kind])
                out[kind] = {
                    **_quantiles(kv),
                    "by_role": {
                        ROLES[r]: _quantiles(kv[kr == r])
                        for r in range(len(ROLES))
                        if (kr == r).any()
                    },
                }
        out["by_assistant_offset"] = [
            {
                "offset": o - self.max_offset,
                "mean": float(self.offset_sum[o] / self.offset_count[o]),
                "tokens": int(self.offset_count[o]),
            }
            for o in range(len(self.offset_sum))
            if self.offset_count[o] > 0
        ]
        out["top_contexts"] = [item for _, _, item in sorted(self._heap, key=lambda h: -h[0])]
        return out
