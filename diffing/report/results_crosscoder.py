"""Typed results of the dictionary sections: ``crosscoder`` (BatchTopK crosscoder analysis) and
``diff_sae`` (a sparse autoencoder on the activation difference).

Field meanings follow docs/crosscoder-analysis.md and docs/diff-sae.md.
"""

from __future__ import annotations

from pydantic import Field

from diffing.report.results_common import Context, JsonDict, LogitLens, Num, Result, TokenScore

# ---- crosscoder ----


class DecoderBias(Result):
    """The crosscoder's decoder-bias difference: a shift carried by no latent."""

    constant_fraction: Num = None
    """Share of the activation difference's energy that is one constant vector."""
    norm: Num = None
    """Norm of the decoder-bias difference ``b_f - b_b``."""
    bias_cosine: Num = None
    """Its cosine with the mean activation difference."""
    mean_difference_norm: Num = None
    """``||E_t[x_f - x_b]||`` over the analysed tokens."""
    rms_difference: Num = None
    """``sqrt(E_t ||x_f - x_b||^2)``."""
    n_tokens: int | None = None
    """Tokens analysed."""
    logit_lens: LogitLens | None = None
    """The bias difference through the logit lens."""


class Histogram(Result):
    """Binned counts."""

    edges: list[Num]
    """Bin edges (one more than ``counts``)."""
    counts: list[int]
    """Latents per bin."""


class CrosscoderSize(Result):
    """How the crosscoder was sized and trained for this report."""

    layer: int
    """Store layer it reads."""
    latents: int | None = None
    """Dictionary size."""
    steps: int | None = None
    """Training steps (None for a given crosscoder)."""
    harvested_tokens: int | None = None
    """Tokens in the activation store."""
    trained_here: bool | None = None
    """Whether the report trained it."""


class CrosscoderSummary(Result):
    """The crosscoder's ``summary.json``: class counts, Δ histogram, FVU, L0, dead fraction."""

    classes: dict[str, int] | None = None
    """Latents per class (chat_only, base_only, shared, other)."""
    counts: dict[str, int] | None = None
    """Latents per class, as older analyses recorded them."""
    latent_scaling: dict[str, dict[str, int]] | None = None
    """Per class, latents per Latent Scaling flag (genuine, complete_shrinkage, latent_decoupling, ...)."""
    decoder_bias: DecoderBias | None = None
    """The decoder-bias difference."""
    delta_histogram: Histogram | None = None
    """Histogram of the relative decoder norms Δ over [0, 1]."""
    fvu: dict[str, Num] | None = None
    """Fraction of variance unexplained per model."""
    dead_latents: int | None = None
    """Latents that never fire on the analysed tokens."""
    layer: int | None = None
    """Store layer analysed."""
    n_latents: int | None = None
    """Dictionary size."""
    n_tokens: int | None = None
    """Tokens analysed."""
    shared_cosine_mean: Num = None
    """Mean cosine between the two decoder vectors of shared latents."""
    tokens_by_role: dict[str, int] | None = None
    """Tokens analysed per role."""
    causal: JsonDict | None = None
    """The causal check: KL closed by replacing each latent set's contribution (fraction_closed, kl, set_sizes)."""
    size: CrosscoderSize | None = None
    """How the crosscoder was sized and trained for this report."""
    training: JsonDict | None = None
    """Training metrics (fvu, l0, dead_frac, steps, tokens)."""
    config: JsonDict | None = None
    """The analysis config."""
    notes: list[str] | None = None
    """Caveats the analysis recorded."""


class CrosscoderLatent(Result):
    """One of the top latents, in the report's compact form."""

    index: int
    """Latent index."""
    class_: str | None = Field(None, alias="class")
    """Class by Δ: chat_only, base_only, shared or other."""
    delta: Num = None
    """Relative decoder norm Δ (0 base-only, 1 chat-only)."""
    cosine: Num = None
    """Cosine between its base and fine-tuned decoder vectors."""
    frequency: Num = None
    """Fraction of tokens it fires on."""
    max_activation: Num = None
    """Its largest activation."""
    nu_error: Num = None
    """Latent Scaling ratio ν_ε (NaN by definition for a dead latent)."""
    nu_reconstruction: Num = None
    """Latent Scaling ratio ν_r."""
    flag: str | None = None
    """Latent Scaling flag: genuine, complete_shrinkage, latent_decoupling, ..."""
    beta_reliable: bool | None = None
    """Whether the Latent Scaling fits are reliable."""
    logit_lens: list[TokenScore] = []
    """Its fine-tuned decoder vector through the fine-tuned logit lens (``score`` is the logit)."""
    top_contexts: list[Context] = []
    """Its top activating contexts (at most 5)."""


class ScalingPoint(Result):
    """A latent with Latent Scaling ratios (the ν scatter)."""

    index: int
    """Latent index."""
    class_: str | None = Field(None, alias="class")
    """Its class."""
    nu_error: Num = None
    """ν_ε."""
    nu_reconstruction: Num = None
    """ν_r."""


class Crosscoder(Result):
    """A crosscoder on both models' activations: which latents are chat-only, base-only or shared."""

    summary: CrosscoderSummary
    """The analysis summary."""
    latents: list[CrosscoderLatent]
    """The top latents: genuine chat-only first, then other chat-only by Δ, then base-only."""
    latent_scaling: list[ScalingPoint] | None = None
    """Every latent with Latent Scaling ratios."""


# ---- diff-SAE ----


class SAEComparison(Result):
    """How the diff-SAE's latents match the crosscoder's chat-only latents."""

    chat_only_latents: int
    """Chat-only latents of the crosscoder."""
    matched: int
    """Diff-SAE latents with a chat-only latent at |cos| >= ``match_cosine``."""
    match_cosine: Num
    """The matching threshold."""


class SAELatent(Result):
    """One of the diff-SAE's top latents."""

    latent: int
    """Latent index."""
    share: Num
    """Its share of the activation difference."""
    frequency: Num
    """Fraction of tokens it fires on."""
    frequency_by_role: dict[str, Num] | None = None
    """The same per token role."""
    logit_lens: LogitLens | None = None
    """Its decoder vector through the logit lens."""
    max_chat_only_cosine: Num = None
    """Its largest |cos| with a crosscoder chat-only latent (None without a crosscoder)."""
    contexts: list[Context] = []
    """Its top activating contexts (at most 3)."""


class DiffSAE(Result):
    """A BatchTopK SAE trained on ``x_ft - x_base``."""

    layer: int
    """Store layer it reads."""
    n_latents: int
    """Dictionary size."""
    fvu: Num
    """Fraction of the difference's variance unexplained."""
    l0: Num
    """Mean active latents per token."""
    dead_fraction: Num
    """Fraction of latents that never fire."""
    latents_for_half_the_difference: int
    """How many latents carry half of the difference."""
    comparison: SAEComparison | None
    """Match with the crosscoder's chat-only latents (None when no crosscoder ran)."""
    top_latents: list[SAELatent]
    """The latents with the largest share of the difference, largest first."""
    steps: int | None = None
    """Training steps."""
    compared_with_crosscoder: bool | None = None
    """Whether a crosscoder was there to compare with."""
