"""Difference-in-means candidates at every layer and post-instruction position (Arditi et al. 2024, section 2.1).

For layer ``l`` (the residual stream at the input of block ``l``) and post-instruction
position ``i`` (a template token after the user's message and before the response,
counted from the end of the prompt), ``r_i^l = mean_harmful(x_i^l) − mean_harmless(x_i^l)``.
All layers and positions come from one batched forward pass per prompt set, which
also yields the first-token distributions that refusal scores (and the inferred
refusal tokens) are made of.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from diffing.arch import ArchSpec, d_model, num_layers
from diffing.errors import DiffingError
from diffing.refusal.config import RefusalConfig
from diffing.refusal.interventions import Intervention, forward_last
from diffing.refusal.scores import infer_refusal_tokens, parse_refusal_tokens, refusal_scores
from diffing.tokens import ROLE_IDS, Encoded, encode_chat, pad_batch, pad_id_of


class Candidates(NamedTuple):
    """Every candidate direction of one model on one pair of prompt sets."""

    vectors: torch.Tensor
    """``[n_layers, n_positions, d_model]`` difference in means ``r_i^l`` (harmful minus harmless)."""
    positions: list[int]
    """Post-instruction positions, counted from the end (``[-n, ..., -1]``), one per column of ``vectors``."""
    harmful_mean: torch.Tensor
    """``[n_layers, n_positions, d_model]`` mean activation over the kept harmful train prompts."""
    harmless_mean: torch.Tensor
    """``[n_layers, n_positions, d_model]`` mean activation over the kept harmless train prompts."""
    zero: torch.Tensor
    """``[n_layers, n_positions]`` bool: the difference is zero (identical inputs), so no direction exists."""
    refusal_tokens: list[int]
    """Token ids ``R`` whose first-token probability defines the refusal score."""
    n_harmful: int
    """Harmful train prompts kept (the model refused them)."""
    n_harmless: int
    """Harmless train prompts kept (the model did not refuse them)."""
    family: str
    """``config.model_type`` of the model."""
    model_ref: str
    """How the model was named."""


def encode_prompts(
    tokenizer, prompts: Sequence[str], *, template: str | None = None
) -> list[Encoded]:
    """Each prompt as a single user turn followed by the generation prompt, with token roles."""
    return [
        encode_chat(
            tokenizer,
            [{"role": "user", "content": p}],
            add_generation_prompt=True,
            template=template,
        )
        for p in prompts
    ]


def post_instruction_count(encoded: Sequence[Encoded]) -> int:
    """How many trailing template tokens follow the user's message in every prompt (read from token roles)."""
    counts = []
    for enc in encoded:
        user = [i for i, r in enumerate(enc.roles) if r == ROLE_IDS["user"]]
        if not user:
            raise DiffingError(
                "could not find the user's message among the tokens of a formatted prompt; "
                "the chat template may drop or rewrite it (pass a template with `template`)",
                fields=("template",),
            )
        counts.append(len(enc.roles) - user[-1] - 1)
    n = min(counts)
    if n == 0:
        raise DiffingError(
            "the chat template adds no tokens after the user's message, so there are no post-instruction "
            "positions; use a template with a generation prompt (`template`)",
            fields=("template",),
        )
    return n


def batches(encoded: Sequence[Encoded], size: int):
    """Consecutive slices of at most ``size`` prompts."""
    for i in range(0, len(encoded), size):
        yield encoded[i : i + size]


def run_prompts(
    lm,
    arch: ArchSpec,
    tokenizer,
    encoded: Sequence[Encoded],
    interventions: Sequence[Intervention] = (),
    *,
    n_post: int | None = None,
    batch_size: int = 32,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """First-token log-probs ``[n, vocab]`` and, if ``n_post``, block inputs ``[n_layers, n, n_post, d_model]``."""
    logprobs, acts = [], []
    for chunk in batches(encoded, batch_size):
        batch = pad_batch(
            chunk, pad_id_of(tokenizer)
        )  # right padding: real tokens keep positions 0..len-1
        positions = None
        if n_post:
            lengths = batch.attention_mask.sum(1)  # [b]
            positions = lengths[:, None] - n_post + torch.arange(n_post)[None]  # [b, n_post]
        lp, a = forward_last(
            lm, arch, batch.input_ids, batch.attention_mask, interventions, positions=positions
        )
        logprobs.append(lp.cpu())
        if a is not None:
            acts.append(a.cpu())
    return torch.cat(logprobs), (torch.cat(acts, dim=1) if acts else None)


def mean_difference(
    acts_harmful: torch.Tensor, acts_harmless: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(r, mean_harmful, mean_harmless, zero)`` from per-prompt activations ``[n_layers, n, P, d_model]``.

    ``zero`` ``[n_layers, P]`` marks differences that vanish relative to the activations
    (e.g. template tokens at layer 0, whose embedding is the same in both sets): those
    candidates have no direction and must be skipped, not normalised.
    """
    mean_h = acts_harmful.mean(1)  # [n_layers, P, d_model]
    mean_s = acts_harmless.mean(1)  # [n_layers, P, d_model]
    vectors = mean_h - mean_s  # [n_layers, P, d_model]
    scale = 0.5 * (mean_h.norm(dim=-1) + mean_s.norm(dim=-1))  # [n_layers, P]
    zero = vectors.norm(dim=-1) <= 1e-5 * scale.clamp_min(1e-12)
    return vectors, mean_h, mean_s, zero


def extract_candidates(
    lm,
    tokenizer,
    arch: ArchSpec,
    harmful: Sequence[str],
    harmless: Sequence[str],
    *,
    config: RefusalConfig | None = None,
    model_ref: str = "",
) -> Candidates:
    """Difference-in-means candidates for every layer and post-instruction position.

    ``lm`` is an nnsight ``LanguageModel`` (e.g. ``pair.finetuned``). One forward pass
    per batch of each set saves every block's input at the post-instruction positions
    and the first-token distribution. The refusal tokens are ``config.refusal_tokens``
    or inferred from those distributions; with ``config.filter_train`` the harmful
    prompts the model does not refuse (score < 0) and harmless ones it does (> 0) are
    dropped before the means, as in the paper.
    """
    cfg = config or RefusalConfig()
    enc_h = encode_prompts(tokenizer, harmful, template=cfg.template)
    enc_s = encode_prompts(tokenizer, harmless, template=cfg.template)
    n_post = post_instruction_count(enc_h + enc_s)
    lp_h, acts_h = run_prompts(lm, arch, tokenizer, enc_h, n_post=n_post, batch_size=cfg.batch_size)
    lp_s, acts_s = run_prompts(lm, arch, tokenizer, enc_s, n_post=n_post, batch_size=cfg.batch_size)
    tokens = (
        parse_refusal_tokens(tokenizer, cfg.refusal_tokens)
        if cfg.refusal_tokens
        else infer_refusal_tokens(
            lp_h,
            lp_s,
            ratio=cfg.token_ratio,
            min_mass=cfg.token_min_mass,
            max_tokens=cfg.max_refusal_tokens,
        )
    )
    keep_h = torch.ones(len(enc_h), dtype=torch.bool)
    keep_s = torch.ones(len(enc_s), dtype=torch.bool)
    if cfg.filter_train:
        keep_h, keep_s = refusal_scores(lp_h, tokens) > 0, refusal_scores(lp_s, tokens) < 0
        for name, keep, what in (("harmful", keep_h, "refuses"), ("harmless", keep_s, "answers")):
            if int(keep.sum()) < cfg.min_train:
                raise DiffingError(
                    f"only {int(keep.sum())} of {len(keep)} {name} train prompts are ones the model {what} "
                    f"(need {cfg.min_train}); check the prompt sets and refusal tokens, or turn filtering off "
                    "(`filter_train=False`)",
                    fields=("filter_train",),
                )
    vectors, mean_h, mean_s, zero = mean_difference(acts_h[:, keep_h], acts_s[:, keep_s])
    config_ = lm._module.config
    assert vectors.shape[0] == num_layers(config_) and vectors.shape[-1] == d_model(config_)
    return Candidates(
        vectors=vectors,
        positions=list(range(-n_post, 0)),
        harmful_mean=mean_h,
        harmless_mean=mean_s,
        zero=zero,
        refusal_tokens=tokens,
        n_harmful=int(keep_h.sum()),
        n_harmless=int(keep_s.sum()),
        family=str(getattr(config_, "model_type", "")),
        model_ref=model_ref,
    )
