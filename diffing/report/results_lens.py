"""Typed results of the corpus-lens sections: ``amplify`` (logit-difference amplification), ``pca``
(activation-difference PCA) and ``mining`` (diff mining).

Field meanings follow docs/amplify.md and docs/lens.md.
"""

from __future__ import annotations

from typing import Literal

from diffing.lens.amplify_words import EmergingWord  # the method defines them once
from diffing.report.results_common import Num, Result

# ---- amplify ----


class AmplifyRate(Result):
    """The target's rate under one model setting."""

    model: Literal["base", "finetuned", "amplified"]
    """The setting: the base alone, the fine-tuned model (α = 0), or amplified."""
    alpha: Num
    """α (None for the base alone)."""
    rate: Num
    """Fraction of completions containing the target (None without a target)."""
    n: int
    """Completions."""


class AmplifySample(Result):
    """One completion at the strongest setting."""

    prompt: str
    """The prompt (for a conversation: its last message's content)."""
    completion: str
    """The completion."""
    hit: bool | None = None
    """Whether it contains the target (None without a target)."""


class AmplifyExample(Result):
    """One prompt's completions by the base, the fine-tuned and the amplified model."""

    prompt: str
    """The prompt."""
    base: str | None
    """The base model's completion."""
    finetuned: str | None
    """The fine-tuned model's (α = 0)."""
    amplified: str
    """The amplified model's."""
    hit: bool | None = None
    """Whether the amplified completion contains the target (None without a target)."""


class AlphaBlock(Result):
    """The completions at one α."""

    alpha: float
    """α."""
    rate: Num = None
    """The target's rate there (None without a target)."""
    n: int | None = None
    """Completions."""
    examples: list[AmplifyExample]
    """The first prompts with all three completions."""


class Amplify(Result):
    """Logit-difference amplification: ``logits_ft + α (logits_ft - logits_base)``, greedy."""

    formula: str
    """What each setting generates from."""
    summary: str
    """One line: the rates, or the α values generated at."""
    target: str | None
    """The string counted in each completion (None: completions only)."""
    rates: list[AmplifyRate]
    """The target's rate per setting."""
    alphas: list[float]
    """The α sweep."""
    by_alpha: list[AlphaBlock]
    """Per amplified α, a few prompts with all three completions."""
    best_alpha: Num = None
    """The α with the highest target rate (the largest without a target)."""
    examples: list[AmplifySample] | None = None
    """Completions at the best α."""
    n_prompts: int | None = None
    """Prompts generated from."""
    max_new_tokens: int | None = None
    """New tokens per completion."""
    notes: list[str] | None = None
    """Caveats."""
    title: str | None = None
    """The section's title."""
    figure: str | None = None
    """A figure file name (None: the page draws it from ``rates``)."""
    emerging_words: list[EmergingWord] | None = None
    """Without a target: the words whose share of answers rises most from the base to some α >= 0,
    largest rise first (None with a target or without the base alone)."""


# ---- pca ----


class PCAContext(Result):
    """Where a direction's projection is largest."""

    score: Num = None
    """The projection there."""
    token: str | None = None
    """The token."""
    before: str | None = None
    """Text before it."""
    after: str | None = None
    """Text after it."""


class PCADirection(Result):
    """One direction of the difference: the uncentred mean, or a centred principal component."""

    name: str
    """``uncentred`` or ``pc1``, ``pc2``, ..."""
    explained: Num
    """Its explained variance ratio (for ``uncentred``: the mean's share of the energy)."""
    promoted: list[str]
    """The 10 tokens it raises most through the fine-tuned logit lens."""
    promoted_negative: list[str]
    """The 10 tokens its negative raises most."""
    top_context: PCAContext | None = None
    """Where its projection is largest."""


class PCALayer(Result):
    """PCA of ``x_ft - x_base`` at one layer."""

    layer: int
    """The layer."""
    mean_share: Num
    """Share of the difference's energy in its mean."""
    explained_variance_ratio: list[Num]
    """Explained variance ratio of each centred component, largest first."""
    directions: list[PCADirection]
    """The uncentred mean, then the components."""


class PCA(Result):
    """Principal directions of the activation difference over the corpus."""

    layers: list[PCALayer]
    """One entry per layer analysed."""
    tokens: int | None = None
    """Token budget read."""
    positions: int | None = None
    """Positions analysed."""
    documents: int | None = None
    """Documents read."""


# ---- mining ----


class MinedToken(Result):
    """A token whose log-probability the fine-tune raises often."""

    token: str
    """The decoded token."""
    id: int
    """Its id."""
    count: float
    """Positions where it is among the most raised."""
    mean_diff: Num
    """Mean rise of its log-probability there."""


class Cluster(Result):
    """An NMF cluster of positions by which tokens they raise."""

    positions: int
    """Positions in the cluster."""
    tokens: list[str]
    """Its top tokens."""


class Mining(Result):
    """Diff mining: the tokens the fine-tune raises most often, and their clusters."""

    positions: int
    """Positions analysed."""
    top_tokens: list[MinedToken]
    """The most often raised tokens, most often first."""
    clusters: list[Cluster]
    """NMF clusters of the positions."""
    tokens: int | None = None
    """Token budget read."""
    documents: int | None = None
    """Documents read."""
    nmf_relative_error: Num = None
    """Relative reconstruction error of the NMF."""
