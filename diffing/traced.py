"""Traced forwards that return only small tensors, so they run the same here and on NDIF.

A remote trace returns only what it saves, and a full next-token distribution is
too big to ship, so these forwards keep the top-k log-probabilities (and the
log-probabilities of given token ids), and read a vector's logit lens by feeding
it to the final norm inside a trace. Statistics and the crosscoder's causal check
both build on them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from diffing.arch import get_module
from diffing.remote import input_device, trace_options
from diffing.tracing import residual_output


def topk_kl(lp_f: torch.Tensor, lp_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(KL_k, coverage)`` ``[...]`` from both models' log-probabilities ``[..., k]`` of the same k tokens."""
    lp_f, lp_b = lp_f.double(), lp_b.double()
    p_f = lp_f.exp()
    head = (p_f * (lp_f - lp_b)).sum(-1)
    r_f = (1 - p_f.sum(-1)).clamp_min(0)
    r_b = (1 - lp_b.exp().sum(-1)).clamp_min(1e-30)
    tail = torch.where(r_f > 0, r_f * (r_f.clamp_min(1e-30).log() - r_b.log()), 0.0)
    return (head + tail).clamp_min(0).float(), p_f.sum(-1).float()


def trace_topk(
    lm, arch, ids, mask, layers: Sequence[int], *, k: int, gather: torch.Tensor | None = None
):
    """One forward (remote or not) returning only small tensors: ``(layers, top-k log-probabilities,
    their ids, the log-probabilities of the given ``gather`` ids or None)``, each ``[batch, seq, k]``."""
    picked = None
    with lm.trace({"input_ids": ids, "attention_mask": mask}, **trace_options(lm)):
        outs = [residual_output(lm, arch, layer) for layer in layers]
        stacked = torch.stack(outs).save()  # [n_layers, batch, seq, d_model]
        lp = torch.log_softmax(lm.output.logits.float(), dim=-1)  # [batch, seq, vocab], stays there
        top_vals, top_ids = lp.topk(k, dim=-1)
        top_vals, top_ids = top_vals.save(), top_ids.save()  # [batch, seq, k]
        if gather is not None:
            picked = lp.gather(-1, gather.to(lp.device)).save()  # [batch, seq, k]
    value = lambda x: getattr(x, "value", x).detach().cpu()  # noqa: E731
    stacked = value(stacked)
    acts = {layer: stacked[i] for i, layer in enumerate(layers)}
    return acts, value(top_vals), value(top_ids), (value(picked) if picked is not None else None)


@torch.no_grad()
def traced_logit_lens(lm, arch, vector: torch.Tensor) -> torch.Tensor:
    """``[vocab]`` logit lens of ``vector`` through ``lm``'s final norm and unembedding, as a traced forward
    (the weights may be on NDIF): the final norm's input is replaced by the vector."""
    norm, unembed = get_module(lm, arch.final_norm), get_module(lm, arch.unembed)
    ids = torch.zeros(1, 1, dtype=torch.long, device=input_device(lm))  # any token: replaced below
    with lm.trace({"input_ids": ids, "attention_mask": torch.ones_like(ids)}, **trace_options(lm)):
        x = norm.input  # [1, 1, d_model]
        norm.input = vector.reshape(1, 1, -1).to(device=x.device, dtype=x.dtype)
        logits = unembed.output.save()  # [1, 1, vocab]
    return getattr(logits, "value", logits).detach().reshape(-1).float().cpu()
