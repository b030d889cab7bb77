"""Output statistics when both models run on NDIF: only top-k log-probabilities leave the server.

A remote trace returns only what it saves, and full next-token distributions are too big to
ship (a 128k vocabulary at 2,048 tokens is 1 GB per model and batch). So the fine-tuned
model's trace saves its ``k`` likeliest tokens' log-probabilities, the base model's trace
saves its own log-probabilities *of those tokens* (and its few top predictions), and the KL
is computed here over the partition {each of those ``k`` tokens, everything else}:

``KL_k = sum_{v in top_k(p_f)} p_f(v) (log p_f(v) - log p_b(v)) + r_f log(r_f / r_b)``

with ``r_f``, ``r_b`` the mass each model leaves outside those tokens. Merging outcomes never
increases a KL (the log-sum inequality), so ``KL_k <= KL`` always, with equality when the
fine-tuned model puts all its mass on ``k`` tokens; the result records the mean mass covered.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from diffing.remote import input_device
from diffing.stats.config import TOP_K  # noqa: F401 - re-exported
from diffing.traced import topk_kl, trace_topk, traced_logit_lens  # noqa: F401 - re-exported

TOP_PREDICTIONS = 5
"""Top predictions per position returned for the top-KL contexts."""


class RemoteOutputs(NamedTuple):
    """One batch through both models, as far as a remote run returns it."""

    base: dict[int, torch.Tensor]
    """Layer -> base residual stream ``[batch, seq, d_model]``."""
    finetuned: dict[int, torch.Tensor]
    """Layer -> fine-tuned residual stream ``[batch, seq, d_model]``."""
    kl: torch.Tensor
    """``[batch, seq]`` KL_k(p_f || p_b) (a lower bound of the KL; see the module docstring)."""
    coverage: torch.Tensor
    """``[batch, seq]`` fine-tuned probability mass on its top ``k`` tokens."""
    base_top: tuple[torch.Tensor, torch.Tensor]
    """``([batch, seq, n] log-probabilities, [batch, seq, n] ids)`` of the base's top predictions."""
    finetuned_top: tuple[torch.Tensor, torch.Tensor]
    """The same for the fine-tuned model."""


@torch.no_grad()
def trace_pair_remote(
    pair,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    layers: Sequence[int],
    *,
    k: int = TOP_K,
) -> RemoteOutputs:
    """Both models' residual streams at ``layers`` and their top-``k`` KL on one right-padded batch.

    Two traces per batch (the fine-tuned model, then the base with the fine-tuned top-k ids),
    each returning only small tensors: it works the same on NDIF, locally, and through
    nnsight's ``remote="local"``.
    """
    layers = sorted(layers)
    k = min(k, int(pair.config.vocab_size))
    device = input_device(pair.finetuned)
    ids, mask = input_ids.to(device), attention_mask.to(device)
    acts_f, lp_f, ids_f, _ = trace_topk(
        pair.finetuned, pair.arch, ids, mask, layers, k=k, gather=None
    )
    acts_b, lp_bt, ids_bt, lp_b = trace_topk(
        pair.base, pair.arch, ids, mask, layers, k=TOP_PREDICTIONS, gather=ids_f
    )
    kl, coverage = topk_kl(lp_f, lp_b)
    n = TOP_PREDICTIONS
    return RemoteOutputs(
        acts_b, acts_f, kl, coverage, (lp_bt, ids_bt), (lp_f[..., :n], ids_f[..., :n])
    )
