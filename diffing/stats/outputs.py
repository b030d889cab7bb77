"""Output statistics: per-token KL(fine-tuned || base) of the next-token distributions.

``KL(p_f || p_b) = sum_v p_f(v) (log p_f(v) - log p_b(v))`` at every real position
(docs/methods.md section 5): the position reads token ``t`` and both models predict token
``t + 1``; the KL is attributed to token ``t``'s role. Collected: the distribution by
role and by data kind (plain text vs chat), the mean by offset from the start of the
assistant turn in chats (how the change is laid out along the template), and the
contexts with the largest KL with both models' top predictions.
"""

from __future__ import annotations

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


_KINDS = ("text", "chat")


class KLAccumulator:
    """Per-token KL values with their roles and data kind, plus the top contexts.

    Everything stays on the device the KL comes from until :meth:`result`: per batch only
    device work is queued (no boolean indexing, no ``.tolist()``), so a GPU never waits for
    the host between batches. The top contexts are a running device buffer of the
    ``n_contexts`` largest values with the tokens around them and both models' top
    predictions; they are decoded once at the end.
    """

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
        self._chunks: dict[str, list[tuple[torch.Tensor, ...]]] = {k: [] for k in _KINDS}
        """Kind -> per batch ``(kl, keep, roles)``, each ``[batch * seq]``."""
        self.offset_sum = torch.zeros(2 * max_offset + 1, dtype=torch.float64)  # [offsets]
        self.offset_count = torch.zeros(2 * max_offset + 1, dtype=torch.float64)  # [offsets]
        self._top: dict[str, torch.Tensor] | None = None
        """Running top contexts: ``val`` [k], ``kind`` [k], ``role`` [k], ``window`` [k, C + 2],
        ``f_p``/``f_id``/``b_p``/``b_id`` [k, top_predictions]."""

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
        device = kl.device
        keep, roles, ids = (t.to(device, non_blocking=True) for t in (keep, roles, input_ids))
        self._chunks[kind].append((kl.flatten(), keep.flatten(), roles.flatten()))
        if kind == "chat":
            self._update_offsets(kl, keep, roles)
        self._update_contexts(kind, kl, keep, roles, ids, logits_b, logits_f)

    def _update_offsets(self, kl, keep, roles) -> None:
        if self.offset_sum.device != kl.device:
            self.offset_sum = self.offset_sum.to(kl.device)
            self.offset_count = self.offset_count.to(kl.device)
        is_asst = roles == ROLE_IDS["assistant"]  # [batch, seq]
        first = is_asst.int().argmax(dim=1)  # [batch] first assistant token (0 when none)
        pos = torch.arange(kl.shape[1], device=kl.device)[None] - first[:, None]  # [batch, seq]
        sel = keep & is_asst.any(dim=1, keepdim=True) & (pos.abs() <= self.max_offset)
        idx = (pos + self.max_offset).clamp(0, 2 * self.max_offset).flatten()  # [batch * seq]
        self.offset_sum.index_add_(0, idx, torch.where(sel, kl, 0).double().flatten())
        self.offset_count.index_add_(0, idx, sel.double().flatten())

    def _top_predictions(self, preds, b: torch.Tensor, t: torch.Tensor):
        """``(probs, ids)`` ``[k, top_predictions]`` at positions ``(b, t)`` from logits or a remote top-k."""
        n = self.top_predictions
        if isinstance(preds, tuple):
            logp, ids = (x.to(b.device) for x in preds)
            return logp[b, t, :n].exp().float(), ids[b, t, :n].long()
        p, ids = torch.softmax(preds[b, t].float(), -1).topk(n, dim=-1)  # [k, n]
        return p, ids

    def _update_contexts(self, kind, kl, keep, roles, ids, logits_b, logits_f) -> None:
        flat = torch.where(keep, kl, torch.full_like(kl, -1.0)).flatten()  # not kept: -1
        k = min(self.n_contexts, flat.numel())
        if k == 0:
            return
        vals, idx = flat.topk(k)  # [k]
        seq = kl.shape[1]
        b, t = idx // seq, idx % seq
        offsets = torch.arange(-self.context_tokens, 2, device=kl.device)  # [C + 2]
        where = t[:, None] + offsets[None]  # [k, C + 2]
        inside = (where >= 0) & (where < seq)
        window = torch.where(inside, ids[b[:, None], where.clamp(0, seq - 1)], -1)  # [k, C + 2]
        f_p, f_id = self._top_predictions(logits_f, b, t)
        b_p, b_id = self._top_predictions(logits_b, b, t)
        cand = {
            "val": vals.float(),
            "kind": torch.full_like(vals, _KINDS.index(kind), dtype=torch.long),
            "role": roles[b, t].long(),
            "window": window.long(),
            "f_p": f_p,
            "f_id": f_id.long(),
            "b_p": b_p,
            "b_id": b_id.long(),
        }
        if self._top is not None:  # earlier candidates first: on ties they stay ahead
            cand = {key: torch.cat([self._top[key], v]) for key, v in cand.items()}
        keep_idx = cand["val"].topk(min(self.n_contexts, len(cand["val"]))).indices
        self._top = {key: v[keep_idx] for key, v in cand.items()}

    def _contexts(self) -> list[dict]:
        """The top contexts, decoded (largest KL first)."""
        if self._top is None:
            return []
        top = {key: v.cpu() for key, v in self._top.items()}
        order = torch.argsort(-top["val"], stable=True).tolist()
        tok, c = self.tokenizer, self.context_tokens
        out = []
        for i in order:
            val = float(top["val"][i])
            if val < 0:  # a position that was not kept filled a slot: fewer kept tokens than slots
                continue
            window = top["window"][i].tolist()
            before = [x for x in window[:c] if x >= 0]
            nxt = window[c + 1]
            out.append(
                {
                    "kl": val,
                    "kind": _KINDS[int(top["kind"][i])],
                    "role": ROLES[int(top["role"][i])],
                    "context": tok.decode(before),
                    "token": tok.decode([window[c]]),
                    "next_token": tok.decode([nxt]) if nxt >= 0 else None,
                    "finetuned_top": self._decoded(top["f_p"][i], top["f_id"][i]),
                    "base_top": self._decoded(top["b_p"][i], top["b_id"][i]),
                }
            )
        return out

    def _decoded(self, probs: torch.Tensor, ids: torch.Tensor) -> list[dict]:
        return [
            {"token": self.tokenizer.decode([i]), "id": i, "prob": float(q)}
            for q, i in zip(probs.tolist(), ids.tolist())
        ]

    def _values(self, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(kl [n], roles [n])`` of the kept tokens of ``kind``, on the host."""
        if not self._chunks[kind]:
            return torch.zeros(0), torch.zeros(0, dtype=torch.long)
        kl, keep, roles = (torch.cat(x).cpu() for x in zip(*self._chunks[kind]))
        keep = keep.bool()
        return kl[keep], roles[keep].long()

    def result(self) -> dict:
        """The ``kl`` section of ``stats.json``."""
        out: dict = {}
        per_kind = {kind: self._values(kind) for kind in _KINDS}
        values = torch.cat([per_kind[k][0] for k in _KINDS])
        roles = torch.cat([per_kind[k][1] for k in _KINDS])
        if len(values) == 0:
            return {"tokens": 0}
        out.update(_quantiles(values))
        out["by_role"] = {
            ROLES[r]: _quantiles(values[roles == r])
            for r in range(len(ROLES))
            if (roles == r).any()
        }
        for kind in _KINDS:
            kv, kr = per_kind[kind]
            if len(kv):
                out[kind] = {
                    **_quantiles(kv),
                    "by_role": {
                        ROLES[r]: _quantiles(kv[kr == r])
                        for r in range(len(ROLES))
                        if (kr == r).any()
                    },
                }
        offset_sum, offset_count = self.offset_sum.cpu(), self.offset_count.cpu()
        out["by_assistant_offset"] = [
            {
                "offset": o - self.max_offset,
                "mean": float(offset_sum[o] / offset_count[o]),
                "tokens": int(offset_count[o]),
            }
            for o in range(len(offset_sum))
            if offset_count[o] > 0
        ]
        out["top_contexts"] = self._contexts()
        return out
