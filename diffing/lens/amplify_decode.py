"""Token-by-token decoding of one model, or of a base/fine-tuned pair read through amplified logits.

Amplification needs both models' next-token logits at every step, on the same
tokens: ``logits_amp = logits_ft + alpha * (logits_ft - logits_base)``; the token
chosen from them is fed to both. ``generate`` (of transformers, or nnsight's
``lm.generate``, which wraps it) runs one model and picks each token from that
model's own logits, so it cannot choose tokens from a combination of two models
without a custom logits processor that would run the second model inside the
first one's loop. Plain forward calls of the two underlying torch modules, each
keeping its own KV cache (``cache``, ``past_key_values`` before transformers 5), do exactly this: one new token per
model per step, which is also what ``generate`` costs. Nothing here needs nnsight's
interventions, so the loop runs on the HF modules directly.

Prompts are left-padded (every row's last prompt token sits in the last column, so
each step appends one column for all rows); position ids count real tokens only,
as ``generate`` computes them, so a row's tokens do not depend on its batch mates.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import torch

from diffing.errors import DiffingError
from diffing.generation import cut_at_eos, eos_ids_of, left_pad, module_input_device

__all__ = ["amplified_logits", "cut_at_eos", "decode", "eos_ids_of", "left_pad"]


def amplified_logits(
    logits_ft: torch.Tensor, logits_base: torch.Tensor, alpha: torch.Tensor | float
) -> torch.Tensor:
    """``logits_ft + alpha * (logits_ft - logits_base)``, float32, ``[batch, vocab]``.

    ``alpha`` is a number or one value per row (``[batch]``). Where either model gives a
    non-finite logit (a masked token), the fine-tuned logit is kept, so ``-inf - -inf``
    never turns a row into NaN. Vocabularies padded to different widths are cut to the
    shorter one (the tokenizer, checked shared, never produces the extra ids).
    """
    width = min(logits_ft.shape[-1], logits_base.shape[-1])
    ft = logits_ft[..., :width].float()  # [batch, vocab]
    base = logits_base[..., :width].to(ft.device).float()  # [batch, vocab]
    a = torch.as_tensor(alpha, dtype=ft.dtype, device=ft.device)
    if a.dim() == 1:
        a = a[:, None]  # [batch, 1]
    out = ft + a * (ft - base)
    return torch.where(torch.isfinite(ft) & torch.isfinite(base), out, ft)


def _forward_options(module: torch.nn.Module) -> tuple[str, dict]:
    """The KV-cache argument's name and ``logits_to_keep=1`` when the model accepts it.

    transformers 5 renamed ``past_key_values`` to ``cache``; older releases and custom
    models keep the old name. ``logits_to_keep=1`` computes only the last position's logits.
    """
    params = inspect.signature(module.forward).parameters
    name = "cache" if "cache" in params else "past_key_values"
    return name, ({"logits_to_keep": 1} if "logits_to_keep" in params else {})


def _cache_of(out) -> object:
    """The KV cache a forward returned, under either name."""
    return out["cache"] if "cache" in out else out.get("past_key_values")


def _choose(
    logits: torch.Tensor, temperature: float, generator: torch.Generator | None
) -> torch.Tensor:
    """Next token per row ``[batch]``: argmax at temperature 0, else a sample of ``softmax(logits / T)``."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits / temperature, dim=-1)  # [batch, vocab]
    if generator is not None and generator.device != probs.device:
        probs = probs.to(generator.device)
    return torch.multinomial(probs, 1, generator=generator)[:, 0].to(logits.device)


@torch.no_grad()
def decode(
    models: Sequence[torch.nn.Module],
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    alphas: torch.Tensor | None = None,
    max_new_tokens: int = 48,
    eos_ids: Sequence[int] = (),
    pad_id: int = 0,
    temperature: float = 0.0,
    seed: int | None = None,
    on_step: Callable[[int, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """New tokens ``[batch, <= max_new_tokens]`` of a left-padded batch.

    ``models`` is one model (its own logits choose each token) or ``(base, finetuned)``
    with ``alphas`` ``[batch]``: each row's token comes from its amplified logits. Rows
    that produced an end-of-sequence id continue with ``pad_id`` (fed to the models as
    ``generate`` does, and dropped by :func:`cut_at_eos`); decoding stops early when
    every row has ended. Sampling (``temperature > 0``) draws from a generator seeded
    with ``seed``, so a call is reproducible. ``on_step(step, logits)`` sees the float32
    logits ``[batch, vocab]`` each token is chosen from (amplified ones for a pair).
    """
    if len(models) not in (1, 2) or (len(models) == 2) != (alphas is not None):
        raise DiffingError("decode takes one model, or (base, finetuned) with alphas")
    for m in models:
        m.eval()
    out_device = module_input_device(models[-1])
    mask = attention_mask.to(out_device)  # [batch, seq]
    ids = input_ids.to(out_device)  # [batch, seq]
    pos = (mask.cumsum(-1) - 1).clamp(min=0)  # [batch, seq]: real tokens count 0, 1, ...
    eos = torch.tensor(sorted(set(eos_ids)) or [-1], device=out_device)
    a = alphas.to(out_device).float() if alphas is not None else None  # [batch]
    generator = None
    if temperature > 0:
        generator = torch.Generator(device=out_device)
        generator.manual_seed(int(seed or 0))
    options = [_forward_options(m) for m in models]
    caches: list = [None] * len(models)
    done = torch.zeros(ids.shape[0], dtype=torch.bool, device=out_device)
    steps: list[torch.Tensor] = []
    for _ in range(max_new_tokens):
        logits = []
        for i, model in enumerate(models):
            dev = module_input_device(model)
            cache_name, keep = options[i]
            out = model(
                input_ids=ids.to(dev),
                attention_mask=mask.to(dev),
                position_ids=pos.to(dev),
                use_cache=True,
                **{cache_name: caches[i]},
                **keep,
            )
            caches[i] = _cache_of(out)
            logits.append(out.logits[:, -1].to(out_device))  # [batch, vocab]
        z = logits[0].float() if a is None else amplified_logits(logits[1], logits[0], a)
        if on_step is not None:
            on_step(len(steps), z)
        nxt = _choose(z, temperature, generator)  # [batch]
        nxt = torch.where(done, torch.full_like(nxt, pad_id), nxt)
        steps.append(nxt)
        done |= torch.isin(nxt, eos)
        if bool(done.all()):
            break
        ids = nxt[:, None]  # [batch, 1]
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)  # [batch, seq + 1]
        pos = pos[:, -1:] + 1  # [batch, 1]
    if not steps:
        return torch.zeros((ids.shape[0], 0), dtype=torch.long)
    return torch.stack(steps, dim=1).cpu()  # [batch, new]
