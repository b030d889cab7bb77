"""Top-scoring token positions over a stream of batches, with a window of text around each."""

from __future__ import annotations

import torch


class TopContexts:
    """Keeps the ``n`` highest scores seen (one per token position) and the tokens around each."""

    def __init__(self, n: int, window: int):
        self.n = n
        self.window = window
        self.kept: list[tuple[float, list[int], int]] = []
        """``(score, window ids, index of the scored token in the window)``, highest score first."""

    @torch.no_grad()
    def update(
        self,
        scores: torch.Tensor,
        input_ids: torch.Tensor,
        keep: torch.Tensor,
        attention_mask: torch.Tensor,
    ) -> None:
        """Offer ``scores`` ``[batch, seq]`` at the positions where ``keep`` ``[batch, seq]`` is true;
        windows stop at padding (``attention_mask`` ``[batch, seq]``)."""
        k = min(self.n, int(keep.sum()))
        if k == 0:
            return
        flat = scores.double().cpu().masked_fill(~keep.cpu().bool(), float("-inf")).reshape(-1)
        vals, idx = flat.topk(k)
        if self.kept and len(self.kept) >= self.n and float(vals[0]) <= self.kept[-1][0]:
            return  # nothing here beats what is kept
        seq = scores.shape[1]
        ids, real = input_ids.cpu(), attention_mask.cpu().bool()
        for v, i in zip(vals.tolist(), idx.tolist()):
            row, pos = divmod(i, seq)
            lo, hi = max(0, pos - self.window), min(seq, pos + self.window + 1)
            window = ids[row, lo:hi][real[row, lo:hi]].tolist()
            self.kept.append((v, window, pos - lo))
        self.kept = sorted(self.kept, key=lambda e: -e[0])[: self.n]

    def rows(self, tokenizer, *, sign: float = 1.0) -> list[dict]:
        """``{score, token, before, after}`` per kept position, highest score first (``sign`` -1
        gives back the original scores when the tracker was fed negated ones)."""
        return [
            {
                "score": sign * float(score),
                "token": tokenizer.decode([window[at]]),
                "before": tokenizer.decode(window[:at]),
                "after": tokenizer.decode(window[at + 1 :]),
            }
            for score, window, at in self.kept
        ]
