"""Typed results of the statistics sections: ``weights``, ``activations``, ``kl`` and ``adl``.

Field meanings follow docs/stats.md (``diffing.stats`` writes the same keys into
``stats.json``); the report keeps them under its own top-level keys.
"""

from __future__ import annotations

from diffing.report.results_common import Num, Result, TokenScore

# ---- weights ----


class WeightModule(Result):
    """One changed parameter tensor."""

    name: str
    """Parameter name, e.g. ``model.layers.3.mlp.down_proj.weight``."""
    relative_change: Num
    """``||W_f - W_b||_F / ||W_b||_F`` (infinite, not broken, when the base tensor is zero)."""
    delta_norm: Num = None
    """``||W_f - W_b||_F``."""
    base_norm: Num = None
    """``||W_b||_F``."""
    numel: int | None = None
    """Number of elements of the tensor."""
    layer: int | None = None
    """Decoder block index; None for embeddings, final norm and unembedding."""
    shape: list[int] | None = None
    """Tensor shape."""
    effective_rank: int | None = None
    """Singular values of ``W_f - W_b`` holding ``energy`` of its squared norm (None for vectors)."""
    rank_exact: bool | None = None
    """False when the effective rank is a randomized estimate."""
    relative_error: Num = None
    """Standard error of ``relative_change`` relative to it (sketched matrices only; None when exact)."""


class WeightLayer(Result):
    """The change of one decoder block's tensors together."""

    layer: int
    """Decoder block index."""
    relative_change: Num = None
    """``sqrt(sum ||ΔW||^2) / sqrt(sum ||W_b||^2)`` over the block's changed tensors."""
    delta_norm: Num = None
    """``sqrt(sum ||ΔW||^2)`` over the block's changed tensors."""


class Weights(Result):
    """Per-tensor relative weight change, largest first."""

    modules: list[WeightModule]
    """Every changed parameter tensor, ranked by ``relative_change`` (largest first)."""
    source: str | None = None
    """How the deltas were computed: weights, memory, adapter, files, or sketch (remote models)."""
    layers: list[WeightLayer] | None = None
    """Per decoder block, the change of its tensors together."""
    energy: Num = None
    """The energy fraction defining the effective rank."""
    sketch_size: int | None = None
    """Side ``k`` of each random sketch (remote models only)."""


# ---- activations ----


class ActivationStats(Result):
    """How the residual stream at one layer changed, over some tokens."""

    cosine: Num = None
    """``mean_t cos(x^b_t, x^f_t)`` (1 = directions unchanged)."""
    mean_diff_norm: Num = None
    """``|| mean_t (x^f_t - x^b_t) ||``: the norm of the consistent shift."""
    relative_norm_change: Num = None
    """``mean_t ||x^f_t - x^b_t|| / ||x^b_t||`` (0 = unchanged; counts changes that cancel in the mean)."""
    mean_norm_base: Num = None
    """``mean_t ||x^b_t||``."""
    mean_norm_finetuned: Num = None
    """``mean_t ||x^f_t||``."""
    tokens: int | None = None
    """Tokens averaged (position 0 of each document excluded)."""


class ActivationLayer(ActivationStats):
    """One measured layer (layer k = output of block k)."""

    layer: int
    """The layer index."""
    by_role: dict[str, ActivationStats] = {}
    """The same statistics per token role (text, system, user, assistant, template)."""


class TokenCounts(Result):
    """Tokens the statistics read."""

    total: int | None = None
    """Tokens read (all real positions)."""
    text: int | None = None
    """Of which from plain texts."""
    chat: int | None = None
    """Of which from chats."""
    documents: dict[str, int] | None = None
    """Document counts ``{text, chat}``."""


class Activations(Result):
    """Base vs fine-tuned residual streams per layer."""

    layers: list[ActivationLayer]
    """One entry per measured layer."""
    tokens: TokenCounts | None = None
    """Tokens the statistics read."""


# ---- KL ----


class KLDistribution(Result):
    """The distribution of per-token ``KL(p_f || p_b)`` (nats) over some tokens."""

    mean: Num = None
    """Mean KL, nats per token."""
    median: Num = None
    """Median KL."""
    p90: Num = None
    """90th percentile."""
    max: Num = None
    """Largest KL."""
    tokens: int | None = None
    """Tokens counted."""


class KLKind(KLDistribution):
    """The KL over one kind of data (or all of it), with its per-role breakdown."""

    by_role: dict[str, KLDistribution] = {}
    """The same per token role."""


class KLOffset(Result):
    """The mean KL at one position relative to the first assistant-content token."""

    offset: int
    """Position relative to the first assistant token (negative: the user turn and template before it)."""
    mean: Num = None
    """Mean KL there, nats per token."""
    tokens: int | None = None
    """Tokens counted."""


class TokenProb(Result):
    """A predicted token with its probability."""

    token: str
    """The decoded token."""
    id: int | None = None
    """Its token id."""
    prob: Num = None
    """The model's probability for it."""


class KLContext(Result):
    """One of the positions with the largest KL."""

    kl: Num = None
    """The KL there, nats."""
    kind: str | None = None
    """Data kind: text or chat."""
    role: str | None = None
    """Role of the token read."""
    context: str | None = None
    """Decoded tokens before it."""
    token: str | None = None
    """The token read."""
    next_token: str | None = None
    """The actual next token (None at the end)."""
    finetuned_top: list[TokenProb] | None = None
    """The fine-tuned model's top predictions."""
    base_top: list[TokenProb] | None = None
    """The base model's top predictions."""


class KL(KLKind):
    """Next-token ``KL(p_f || p_b)`` at every real position."""

    mean: Num
    """Mean KL over all tokens, nats per token."""
    text: KLKind | None = None
    """The same over plain texts."""
    chat: KLKind | None = None
    """The same over chats."""
    by_assistant_offset: list[KLOffset] | None = None
    """Chats only: the mean KL by position relative to the assistant's answer."""
    top_contexts: list[KLContext] | None = None
    """The largest KL values, largest first."""


# ---- ADL ----


class SteeringExample(Result):
    """Greedy continuations of the fine-tuned model without and with the ADL vector added."""

    prompt: str
    """The prompt (or the last user message of a chat prompt)."""
    unsteered: str | None = None
    """Without the vector."""
    steered: str | None = None
    """With the vector added."""


class Steering(Result):
    """Steering the fine-tuned model with the ADL vector."""

    scale: Num = None
    """Multiple of ``mean_norm_finetuned`` the vector is scaled to."""
    examples: list[SteeringExample] = []
    """Continuations without and with the vector."""


class Patchscope(Result):
    """The Patchscope readout of the difference at one norm."""

    norm: Num = None
    """The norm the unit difference was scaled to."""
    tokens: list[TokenProb] = []
    """The top next tokens of the identity prompt."""


class ADL(Result):
    """Activation Difference Lens: the mean activation difference on plain text, read through the logit lens."""

    layer: int
    """Layer read."""
    promoted_tokens: list[TokenScore]
    """Tokens the difference raises most through the fine-tuned logit lens, highest first."""
    suppressed_tokens: list[TokenScore]
    """Tokens it lowers most, lowest first."""
    positions: list[int] | None = None
    """Token positions averaged (position 0 is skipped)."""
    source: str | None = None
    """``text``, or ``chat`` when no plain text was given."""
    documents: int | None = None
    """Documents that contributed."""
    diff_norm: Num = None
    """Norm of the mean difference vector."""
    per_position_norm: list[Num] | None = None
    """Norm of the mean difference at each position separately."""
    mean_norm_finetuned: Num = None
    """Mean ``||x^f||`` at those positions (the steering scale)."""
    steering: Steering | None = None
    """Steering the fine-tuned model with the vector."""
    patchscope: list[Patchscope] | None = None
    """The Patchscope readout, one entry per norm."""
