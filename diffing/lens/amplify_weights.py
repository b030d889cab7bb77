"""The weight form of amplification: the fine-tuned model with its weight change scaled by ``1 + alpha``.

``W_amp = W_base + (1 + alpha) * ΔW`` for every parameter fine-tuning changed. For a
pair whose fine-tuned side is a LoRA adapter, ``ΔW`` is the adapter's exact
``scaling * B @ A`` (:func:`diffing.weights.iter_deltas`), so this is the adapter
with its scaling multiplied by ``1 + alpha``, merged; for two full checkpoints it
is ``W_ft + alpha * (W_ft - W_base)`` (weight extrapolation). Unlike the logit form,
one model generates alone, at the cost of one model per step; but the two forms
differ for ``alpha != 0`` (the logit form extrapolates outputs, this one weights,
and a network is not linear in its weights).

The fine-tuned model's parameters are swapped for amplified copies inside a context
and the originals put back afterwards, so nothing is rounded twice and no second
full model object is built; the copies cost the memory of the changed tensors.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from diffing.errors import DiffingError


@torch.no_grad()
def amplified_tensors(pair, alpha: float) -> Iterator[tuple[str, torch.Tensor]]:
    """``(parameter name, W_base + (1 + alpha) * ΔW)`` in the fine-tuned model's dtype and device.

    Only parameters whose ``ΔW`` is not all zero are yielded; the sum is formed in
    float32 and rounded once.
    """
    from diffing.weights import iter_deltas

    params = dict(pair.hf("finetuned").named_parameters())
    for name, w_b, delta in iter_deltas(pair):
        if not bool(delta.any()):
            continue
        target = params[name]
        new = w_b.float().to(target.device) + (1.0 + alpha) * delta.to(target.device)
        yield name, new.to(target.dtype)


@contextmanager
def amplified_weights(pair, alpha: float):
    """Inside the block, ``pair.hf("finetuned")`` has weights ``W_base + (1 + alpha) * ΔW``; restored after.

    Tied parameters (an embedding shared with the unembedding) are one parameter
    object, so both uses see the amplified tensor. Yields the fine-tuned torch module.
    """
    if pair.remote is True:
        raise DiffingError(
            "the weight form of amplification edits weights, which a remote (NDIF) pair does not "
            "hold here; run locally"
        )
    module = pair.hf("finetuned")
    params = dict(module.named_parameters())
    originals: dict[str, torch.Tensor] = {}
    try:
        with torch.no_grad():
            for name, new in amplified_tensors(pair, alpha):
                originals[name] = params[name].data
                params[name].data = new
        yield module
    finally:
        for name, old in originals.items():
            params[name].data = old
