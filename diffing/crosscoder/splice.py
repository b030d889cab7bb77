"""Spliced loss: the fine-tuned model's next-token loss with one layer replaced by its reconstruction.

The crosscoder reads both models' (normalised) activations at ``layer``; its
fine-tuned reconstruction, de-normalised, replaces the fine-tuned model's layer
output (nnsight in-place edit) and the rest of the fine-tuned model runs on it.
The gap to the clean loss says how much of what the model uses the crosscoder
keeps (Minder et al. 2025 report it for their Gemma-2 crosscoders). A leading
BOS token keeps its own activation: crosscoders are trained without it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F

from diffing.arch import get_module
from diffing.errors import DiffingError
from diffing.tracing import encode_batch, trace_model


class SplicedLoss(NamedTuple):
    """Mean next-token cross-entropy of the fine-tuned model, clean and spliced."""

    clean: float
    """Loss of the unmodified fine-tuned model (nats per token)."""
    spliced: float
    """Loss with the layer's output replaced by the crosscoder's reconstruction."""
    tokens: int
    """Number of predicted tokens averaged over."""


def _ce(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> tuple[float, int]:
    """Summed next-token cross-entropy over real tokens and their count."""
    logp = F.log_softmax(logits[:, :-1].float(), dim=-1)  # [b, s-1, vocab]
    nll = -logp.gather(-1, ids[:, 1:, None]).squeeze(-1)  # [b, s-1]
    valid = mask[:, 1:].bool() & mask[:, :-1].bool()
    return float(nll[valid].sum()), int(valid.sum())


@torch.no_grad()
def spliced_loss(
    cc,
    pair,
    layer: int,
    texts: Sequence,
    norm_scale,
    *,
    batch_size: int = 8,
    max_length: int = 128,
) -> SplicedLoss:
    """Fine-tuned next-token loss on ``texts``, clean and with ``layer`` spliced from ``cc``.

    ``norm_scale`` ([n_models] or a float) is the factor the store multiplied raw
    activations by (``ActivationStore.norm_scales(layer)``); the reconstruction is
    divided by it before it goes back into the model. Model 0 is the base, 1 the fine-tuned.
    """
    if cc.cfg.n_models != 2:
        raise DiffingError("spliced loss needs a two-model crosscoder (base, fine-tuned)")
    if layer is None:
        raise DiffingError("spliced loss needs the crosscoder's layer; set cfg.layer")
    if not texts:
        raise DiffingError("spliced loss needs at least one text")
    scale = torch.as_tensor(norm_scale, dtype=torch.float32).flatten()
    scale = scale.expand(2) if scale.numel() == 1 else scale
    layer = pair.check_layers([layer])[0]
    bos = getattr(pair.tokenizer, "bos_token_id", None)
    blocks = get_module(pair.finetuned, pair.arch.layers)
    lm_device = next(pair.finetuned._module.parameters()).device
    cc_device, cc_dtype = cc.W_enc.device, cc.W_enc.dtype
    clean_sum = spliced_sum = 0.0
    count = 0
    for i in range(0, len(texts), batch_size):
        batch = encode_batch(pair.tokenizer, list(texts[i : i + batch_size]), max_length=max_length)
        ids, mask = batch.input_ids, batch.attention_mask  # [b, s]
        base = trace_model(pair.base, pair.arch, ids, mask, [layer]).layers[layer]  # [b, s, d]
        keep = ~mask.bool()  # [b, s] padding keeps its activation
        if bos is not None:
            keep[:, 0] |= ids[:, 0] == bos
        inputs = {"input_ids": ids.to(lm_device), "attention_mask": mask.to(lm_device)}
        clean = trace_model(pair.finetuned, pair.arch, ids, mask, [layer], logits=True).logits
        with pair.finetuned.trace(inputs):
            out = blocks[layer].output
            hidden = out[0] if isinstance(out, tuple) else out  # [b, s, d]
            x = torch.stack([base.to(hidden.device), hidden], dim=2)  # [b, s, 2, d]
            x = (x * scale.to(hidden.device)[None, None, :, None]).reshape(-1, 2, hidden.shape[-1])
            x_hat, _ = cc(x.to(cc_device, cc_dtype))  # [b*s, 2, d]
            recon = (x_hat[:, 1] / scale[1]).reshape(hidden.shape).to(hidden.device, hidden.dtype)
            hidden[:] = torch.where(keep.to(hidden.device)[..., None], hidden, recon)
            logits = pair.finetuned.output.logits.save()
        logits = getattr(logits, "value", logits)
        c, n = _ce(clean.cpu(), ids, mask)
        s, _ = _ce(logits.detach().cpu(), ids, mask)
        clean_sum, spliced_sum, count = clean_sum + c, spliced_sum + s, count + n
    if count == 0:
        raise DiffingError("the texts are too short to predict any token; give longer texts")
    return SplicedLoss(clean_sum / count, spliced_sum / count, count)
