"""Scoring every candidate and picking the refusal direction (Arditi et al. 2024, section 2.3 and appendix C).

For each candidate, on held-out prompts and from first-token distributions only
(one forward per prompt batch, no generation):

- bypass: mean refusal score on harmful prompts with the direction ablated everywhere (lower is better);
- induce: mean refusal score on harmless prompts with ``r`` added at the candidate's layer;
- KL: mean ``KL(p_baseline ‖ p_ablated)`` of the first-token distribution on harmless prompts.

Filters (configurable, the paper's defaults): induce < 0, KL > 0.1, or a layer in
the last 20% of the model discard a candidate; the lowest bypass score wins.
The ablation forward runs harmful and harmless prompts in one batch, so each
candidate costs two forwards over the validation prompts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch

from diffing.arch import ArchSpec, d_model, num_layers
from diffing.errors import DiffingError
from diffing.refusal.candidates import Candidates, batches, encode_prompts
from diffing.refusal.config import RefusalConfig
from diffing.refusal.interventions import ablate, add, forward_last
from diffing.refusal.io import Direction
from diffing.refusal.scores import kl_divergence, refusal_scores
from diffing.tokens import Batch, pad_batch, pad_id_of


class CandidateScores(NamedTuple):
    """Selection scores of every candidate (NaN where a candidate was skipped as zero)."""

    bypass: torch.Tensor
    """``[n_layers, n_positions]`` mean harmful refusal score under ablation."""
    induce: torch.Tensor
    """``[n_layers, n_positions]`` mean harmless refusal score under addition."""
    kl: torch.Tensor
    """``[n_layers, n_positions]`` mean first-token KL on harmless prompts, baseline ‖ ablated."""
    valid: torch.Tensor
    """``[n_layers, n_positions]`` bool: the candidate passes every filter."""
    baseline_harmful: float
    """Mean refusal score on the harmful validation prompts without intervention."""
    baseline_harmless: float
    """Mean refusal score on the harmless validation prompts without intervention."""


def _prepare(tokenizer, prompts: Sequence[str], cfg: RefusalConfig) -> list[Batch]:
    """Validation prompts as padded batches: one batch when a copy per candidate fits ``score_rows``."""
    enc = encode_prompts(tokenizer, prompts, template=cfg.template)
    size = len(enc) if len(enc) <= cfg.score_rows else cfg.batch_size
    return [pad_batch(chunk, pad_id_of(tokenizer)) for chunk in batches(enc, size)]


def _repeat(batch: Batch, times: int) -> Batch:
    return Batch(
        batch.input_ids.repeat(times, 1),
        batch.attention_mask.repeat(times, 1),
        batch.roles.repeat(times, 1),
    )


def _group_logprobs(
    lm, arch: ArchSpec, prepared: list[Batch], vectors: torch.Tensor, layers: list[int] | None
) -> torch.Tensor:
    """First-token log-probs ``[n_candidates, n_prompts, vocab]`` with each candidate's intervention.

    ``layers`` None ablates each candidate's direction; otherwise its vector is added at its layer.
    All candidates run in one forward per prompt batch (rows = candidates x prompts).
    """
    g = vectors.shape[0]
    out = []
    for b in prepared:
        n = b.input_ids.shape[0]
        rows = vectors.repeat_interleave(n, dim=0)  # [g * n, d_model]
        if layers is None:
            interventions = [ablate(rows)]
        else:
            owner = torch.tensor(layers).repeat_interleave(
                n
            )  # [g * n] layer of each row's candidate
            interventions = [
                add(rows * (owner == layer)[:, None], layer) for layer in sorted(set(layers))
            ]
        big = _repeat(b, g)
        lp = forward_last(lm, arch, big.input_ids, big.attention_mask, interventions)[0].cpu()
        out.append(lp.view(g, n, -1))
    return torch.cat(out, dim=1)


@torch.no_grad()
def score_candidates(
    lm,
    tokenizer,
    arch: ArchSpec,
    candidates: Candidates,
    harmful_val: Sequence[str],
    harmless_val: Sequence[str],
    *,
    config: RefusalConfig | None = None,
) -> CandidateScores:
    """Bypass, induce and KL scores for every non-zero candidate, and which pass the filters.

    Candidates are scored in groups that share one forward (each row carries its own
    candidate's direction): ``score_rows`` rows per forward.
    """
    cfg = config or RefusalConfig()
    if not harmful_val or not harmless_val:
        raise DiffingError("selection needs validation prompts in both sets; one set is empty")
    tokens = candidates.refusal_tokens
    n_h = len(harmful_val)
    both = _prepare(
        tokenizer, list(harmful_val) + list(harmless_val), cfg
    )  # ablation: both sets, one pass
    safe = _prepare(tokenizer, harmless_val, cfg)  # addition: harmless only
    base = torch.cat([forward_last(lm, arch, b.input_ids, b.attention_mask)[0].cpu() for b in both])
    base_h, base_s = base[:n_h], base[n_h:]
    n_layers, n_pos, _ = candidates.vectors.shape
    shape = (n_layers, n_pos)
    bypass, induce, kl = (torch.full(shape, math.nan) for _ in range(3))
    todo = [
        (layer, p)
        for layer in range(n_layers)
        for p in range(n_pos)
        if not candidates.zero[layer, p]
    ]
    group = max(1, cfg.score_rows // max(b.input_ids.shape[0] for b in both))
    for start in range(0, len(todo), group):
        chunk = todo[start : start + group]
        vecs = torch.stack([candidates.vectors[layer, p] for layer, p in chunk])  # [g, d_model]
        abl = _group_logprobs(lm, arch, both, vecs, None)  # [g, n_h + n_s, vocab]
        added = _group_logprobs(
            lm, arch, safe, vecs, [layer for layer, _ in chunk]
        )  # [g, n_s, vocab]
        for j, (layer, p) in enumerate(chunk):
            bypass[layer, p] = refusal_scores(abl[j, :n_h], tokens).mean()
            kl[layer, p] = kl_divergence(base_s, abl[j, n_h:]).mean()
            induce[layer, p] = refusal_scores(added[j], tokens).mean()
    layer_ok = torch.arange(n_layers)[:, None] < cfg.max_layer_fraction * n_layers  # [n_layers, 1]
    valid = (
        ~candidates.zero & (induce >= cfg.induce_threshold) & (kl <= cfg.kl_threshold) & layer_ok
    )
    return CandidateScores(
        bypass,
        induce,
        kl,
        valid,
        float(refusal_scores(base_h, tokens).mean()),
        float(refusal_scores(base_s, tokens).mean()),
    )


def select_direction(
    lm,
    tokenizer,
    arch: ArchSpec,
    candidates: Candidates,
    harmful_val: Sequence[str],
    harmless_val: Sequence[str],
    *,
    config: RefusalConfig | None = None,
    scores: CandidateScores | None = None,
    refusal_phrases: Sequence[str] = (),
) -> Direction:
    """The candidate with the lowest bypass score among those passing the filters, as a :class:`Direction`.

    ``scores`` from :func:`score_candidates` are reused when given (else computed here).
    """
    cfg = config or RefusalConfig()
    if scores is None:
        scores = score_candidates(
            lm, tokenizer, arch, candidates, harmful_val, harmless_val, config=cfg
        )
    if not bool(scores.valid.any()):
        raise DiffingError(
            "no candidate passes the selection filters (induce >= "
            f"{cfg.induce_threshold}, KL <= {cfg.kl_threshold}, layer < {cfg.max_layer_fraction:.0%} of the depth); "
            "see candidates.json, and loosen them with `kl_threshold` / `induce_threshold` / `max_layer_fraction`",
            fields=("kl_threshold", "induce_threshold", "max_layer_fraction"),
        )
    masked = torch.where(scores.valid, scores.bypass, torch.full_like(scores.bypass, math.inf))
    flat = int(torch.argmin(masked))
    layer, p = divmod(flat, masked.shape[1])
    r = candidates.vectors[layer, p]
    config_ = lm._module.config
    return Direction(
        direction=r / r.norm(),
        layer=layer,
        position=candidates.positions[p],
        norm=float(r.norm()),
        family=candidates.family,
        d_model=d_model(config_),
        n_layers=num_layers(config_),
        model_ref=candidates.model_ref,
        refusal_tokens=list(candidates.refusal_tokens),
        refusal_phrases=list(refusal_phrases),
        scores={
            "bypass": float(scores.bypass[layer, p]),
            "induce": float(scores.induce[layer, p]),
            "kl": float(scores.kl[layer, p]),
            "baseline_harmful": scores.baseline_harmful,
            "baseline_harmless": scores.baseline_harmless,
        },
    )


def candidates_table(candidates: Candidates, scores: CandidateScores) -> list[dict]:
    """One JSON-ready row per candidate: layer, position, norm, scores, skipped/valid flags."""

    def val(t: torch.Tensor, layer: int, p: int) -> float | None:
        v = float(t[layer, p])
        return None if math.isnan(v) else v

    rows = []
    for layer in range(candidates.vectors.shape[0]):
        for p, pos in enumerate(candidates.positions):
            zero = bool(candidates.zero[layer, p])
            rows.append(
                {
                    "layer": layer,
                    "position": pos,
                    "norm": float(candidates.vectors[layer, p].norm()),
                    "bypass": val(scores.bypass, layer, p),
                    "induce": val(scores.induce, layer, p),
                    "kl": val(scores.kl, layer, p),
                    "zero": zero,
                    "valid": bool(scores.valid[layer, p]),
                }
            )
    return rows
