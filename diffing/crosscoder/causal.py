"""Causal check: do a set of latents carry what fine-tuning changed at the crosscoder's layer?

In the fine-tuned model, replace the residual stream at layer ``L`` (the
crosscoder's layer) by the base model's activation there, run the rest of the
fine-tuned model, and measure how far its next-token distribution moved:

    KL_full = KL(p_ft || p_patch(x_b))

Then patch instead with the base activation plus the decoded difference of a latent
set ``S`` (Minder et al. 2025, arXiv 2504.02922; docs/methods.md section 3), in raw units:

    x_S = x_b + Σ_{j∈S} f_j (d_j^f / s_f − d_j^b / s_b)
    KL_S = KL(p_ft || p_patch(x_S))
    fraction closed = 1 − KL_S / KL_full

A constant shift ``c`` (the decoder-bias difference ``b_dec^f / s_f − b_dec^b / s_b``,
which no latent carries) is measured the same way with ``x_b + c``.

with ``f`` the crosscoder's latents on the (normalised) paired activations and
``s_b, s_f`` the store's normalisation scalars. KLs are averaged over tokens (ratio
of means), overall and by token role. Position 0 of every sequence (BOS / the
attention sink, which the crosscoder never saw in training, docs/methods.md section 1)
keeps the fine-tuned activation in every patched run and is not counted.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import torch

from diffing.crosscoder.analysis import json_number
from diffing.crosscoder.analysis_config import CausalConfig  # noqa: F401 - re-exported
from diffing.errors import DiffingError
from diffing.remote import input_device, trace_options
from diffing.tokens import ROLES
from diffing.traced import topk_kl, trace_topk
from diffing.tracing import encode_batch, residual_output, trace_model


class CausalResult(NamedTuple):
    """How much of KL(fine-tuned || base-patched) each latent set closes."""

    kl_full: float
    """Mean per-token KL(p_ft || p_patch(x_b)) (nats)."""
    kl: dict[str, float]
    """Set name -> mean per-token KL(p_ft || p_patch(x_b + decoded set))."""
    fraction_closed: dict[str, float]
    """Set name -> 1 − KL_S / KL_full."""
    kl_full_by_role: dict[str, float]
    """Role -> mean KL_full over tokens of that role (roles that occurred)."""
    fraction_closed_by_role: dict[str, dict[str, float]]
    """Set name -> role -> fraction closed on tokens of that role."""
    set_sizes: dict[str, int]
    """Set name -> number of latents (0 for a constant shift such as ``decoder_bias``)."""
    n_tokens: int
    """Tokens the means are over."""


def load_transcripts(causal_texts) -> list:
    """Chat transcripts for the causal check: a list as given, or read from a ``.jsonl`` (None: none)."""
    if causal_texts is None:
        return []
    if isinstance(causal_texts, (str, Path)):
        path = Path(causal_texts).expanduser()
        if not path.is_file():
            raise DiffingError(
                f'causal-check transcripts {str(path)!r} not found; give a .jsonl of {{"messages": [...]}}'
            )
        out = []
        for line in path.read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                out.append(
                    rec.get("messages", rec.get("text", rec)) if isinstance(rec, dict) else rec
                )
        return out
    return list(causal_texts)


@torch.no_grad()
def patched_logits(lm, arch, layer: int, inputs: dict, new: torch.Tensor) -> torch.Tensor:
    """Logits ``[B, S, vocab]`` of ``lm`` with block ``layer``'s output replaced by ``new [B, S, d]``."""
    with lm.trace(inputs, **trace_options(lm)):
        hidden = residual_output(lm, arch, layer)  # [B, S, d]
        hidden[:] = new
        logits = lm.output.logits.save()
    return getattr(logits, "value", logits).detach()


def _kl_patched(
    lm, arch, layer: int, inputs: dict, logp: torch.Tensor, new: torch.Tensor
) -> torch.Tensor:
    """KL(p || p_patched) per position ``[B, S]`` (on CPU) with block ``layer`` output set to ``new``."""
    logq = torch.log_softmax(patched_logits(lm, arch, layer, inputs, new).float(), -1)
    return _kl(logp, logq).cpu()


@torch.no_grad()
def _patched_gather(lm, arch, layer: int, inputs: dict, new: torch.Tensor, ids: torch.Tensor):
    """Log-probabilities ``[B, S, k]`` of the given token ids under the patched forward (remote-sized)."""
    with lm.trace(inputs, **trace_options(lm)):
        hidden = residual_output(lm, arch, layer)  # [B, S, d]
        hidden[:] = new.to(device=hidden.device, dtype=hidden.dtype)
        lp = torch.log_softmax(lm.output.logits.float(), -1)  # [B, S, V], stays where it is
        picked = lp.gather(-1, ids.to(lp.device)).save()
    return getattr(picked, "value", picked).detach().cpu()


def _kl(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per position ``[B, S]`` from log-probabilities ``[B, S, V]``."""
    return (logp.exp() * (logp - logq)).sum(-1)


@torch.no_grad()
def causal_check(
    cc,
    pair,
    texts: Sequence,
    latent_sets: dict[str, Sequence[int]],
    *,
    layer: int,
    norm_scales: Sequence[float],
    shifts: dict[str, torch.Tensor] | None = None,
    config: CausalConfig | None = None,
) -> CausalResult:
    """Fraction of KL(fine-tuned || base-patched at ``layer``) that each latent set closes.

    ``texts``: chat transcripts (message lists or ``{"messages": ...}``) or strings.
    ``norm_scales``: the store's ``[s_b, s_f]`` (raw × s = normalised).
    ``shifts``: named constant vectors ``[d]`` (raw units) added to the base's activations at
    every patched position, measured like the latent sets (size 0), e.g. the decoder-bias difference.
    """
    cfg = config or CausalConfig()
    texts = list(texts)[: cfg.max_texts]
    if not texts:
        raise DiffingError(
            'the causal check needs chat transcripts; pass causal_texts (a .jsonl of {"messages": ...})'
        )
    s_b, s_f = (float(s) for s in norm_scales)
    W = cc.W_dec.detach().float()  # [2, n, d]
    cc_device = W.device
    diff = W[1] / s_f - W[0] / s_b  # [n, d] raw-unit decoder difference
    sets = {name: torch.as_tensor(list(idx), dtype=torch.long) for name, idx in latent_sets.items()}
    shifts = {name: torch.as_tensor(v).detach().float() for name, v in (shifts or {}).items()}
    for name, v in shifts.items():
        if tuple(v.shape) != (W.shape[-1],):
            raise DiffingError(
                f"causal check: shift {name!r} has shape {tuple(v.shape)}; it must be one vector of "
                f"the crosscoder's d_model ({W.shape[-1]}), in the model's raw units"
            )
    if set(sets) & set(shifts):
        raise DiffingError(
            f"causal check: {sorted(set(sets) & set(shifts))} named both a latent set and a shift"
        )
    names = [*sets, *shifts]
    kl_sum = {name: 0.0 for name in names}
    kl_role = {name: torch.zeros(len(ROLES), dtype=torch.float64) for name in names}
    full_sum, full_role = 0.0, torch.zeros(len(ROLES), dtype=torch.float64)
    role_count = torch.zeros(len(ROLES), dtype=torch.float64)
    n_tokens = 0
    ft = pair.finetuned
    device = input_device(ft)
    for start in range(0, len(texts), cfg.batch_size):
        batch = encode_batch(
            pair.tokenizer, texts[start : start + cfg.batch_size], max_length=cfg.max_length
        )
        ids, mask = batch.input_ids, batch.attention_mask
        inputs = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
        x_b = trace_model(pair.base, pair.arch, ids, mask, [layer]).layers[layer]  # [B, S, d]
        if pair.remote:  # only small tensors leave the server: top-k KLs (a lower bound)
            acts, lp_top, ids_top, _ = trace_topk(ft, pair.arch, inputs["input_ids"],
                                                  inputs["attention_mask"], [layer], k=cfg.remote_top_k)  # fmt: skip
            x_f = acts[layer]  # [B, S, d]

            def kl_of(new, lp_top=lp_top, ids_top=ids_top, inputs=inputs):
                picked = _patched_gather(ft, pair.arch, layer, inputs, new, ids_top)
                return topk_kl(lp_top, picked)[0]
        else:
            clean = trace_model(ft, pair.arch, ids, mask, [layer], logits=True)
            x_f, logits_ft = clean.layers[layer], clean.logits  # [B, S, d], [B, S, V]
            logp = torch.log_softmax(logits_ft.float(), -1)  # [B, S, V]

            def kl_of(new, logp=logp, inputs=inputs):
                return _kl_patched(ft, pair.arch, layer, inputs, logp, new)

        x_b, x_f = x_b.to(device), x_f.to(device)
        B, S, d = x_b.shape
        keep = mask.bool().clone()
        keep[:, 0] = False  # position 0 is never patched nor counted
        x = torch.stack([x_b.float() * s_b, x_f.float() * s_f], dim=2).reshape(
            B * S, 2, d
        )  # [B*S, 2, d]
        f = cc.encode(x.to(cc_device)).float()  # [B*S, n]
        patch_at = keep.to(x_b.device)[..., None]  # [B, S, 1]

        roles = batch.roles.long().clamp(0, len(ROLES) - 1)[keep]  # [T]
        full = kl_of(torch.where(patch_at, x_b, x_f))[keep].double()  # [T]
        full_sum += float(full.sum())
        full_role += torch.zeros_like(full_role).index_add_(0, roles, full)
        role_count += torch.bincount(roles, minlength=len(ROLES)).double()
        n_tokens += int(keep.sum())
        for name in names:
            if name in shifts:
                add = shifts[name]  # [d], the same at every position
            else:
                idx = sets[name]
                add = (f[:, idx] @ diff[idx]).reshape(B, S, d) if len(idx) else 0.0  # [B, S, d]
            new = torch.where(patch_at, x_b + torch.as_tensor(add).to(x_b), x_f)  # [B, S, d]
            kl_s = kl_of(new)[keep].double()  # [T]
            kl_sum[name] += float(kl_s.sum())
            kl_role[name] += torch.zeros_like(full_role).index_add_(0, roles, kl_s)
    if n_tokens == 0:
        raise DiffingError(
            "the causal-check transcripts have no tokens after position 0; use longer transcripts"
        )
    kl_full = full_sum / n_tokens
    seen = [r for r in range(len(ROLES)) if role_count[r] > 0]
    full_by_role = {ROLES[r]: float(full_role[r] / role_count[r]) for r in seen}
    kl = {name: kl_sum[name] / n_tokens for name in names}
    closed = {name: _closed(kl[name], kl_full) for name in names}
    closed_role = {
        name: {
            ROLES[r]: _closed(float(kl_role[name][r] / role_count[r]), full_by_role[ROLES[r]])
            for r in seen
        }
        for name in names
    }
    return CausalResult(
        kl_full,
        kl,
        closed,
        full_by_role,
        closed_role,
        {**{n: len(i) for n, i in sets.items()}, **{n: 0 for n in shifts}},
        n_tokens,
    )


def _closed(kl_s: float, kl_full: float) -> float:
    """1 − KL_S / KL_full, or NaN when patching with the base changes nothing (KL_full ≈ 0)."""
    return 1.0 - kl_s / kl_full if kl_full > 1e-12 else float("nan")


def causal_json(c: CausalResult) -> dict:
    """The causal result as JSON-ready numbers."""
    return {
        "kl_full": json_number(c.kl_full, 7),
        "kl": {k: json_number(v, 7) for k, v in c.kl.items()},
        "fraction_closed": {k: json_number(v) for k, v in c.fraction_closed.items()},
        "kl_full_by_role": {k: json_number(v, 7) for k, v in c.kl_full_by_role.items()},
        "fraction_closed_by_role": {
            k: {r: json_number(v) for r, v in d.items()}
            for k, d in c.fraction_closed_by_role.items()
        },
        "set_sizes": c.set_sizes,
        "n_tokens": c.n_tokens,
    }
