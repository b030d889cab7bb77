"""Typed results of the refusal sections: ``refusal`` (direction, base vs fine-tuned, evaluation) and
``refusal_link`` (crosscoder latents against the refusal direction).

Field meanings follow docs/refusal.md and docs/refusal-link.md.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from diffing.report.results_common import Context, JsonDict, LogitLens, Num, Result

# ---- refusal ----


class Selected(Result):
    """Where the selected refusal direction lives."""

    layer: int
    """Layer (block input) of the selected direction."""
    position: int | str
    """Token position it was taken at (negative: from the end of the prompt)."""


class Conditions(Result):
    """A measure on one prompt set with the model as is, the direction ablated, and the direction added."""

    baseline: Num
    """The model as it is."""
    ablation: Num
    """With the direction projected out of every layer."""
    addition: Num = None
    """With the direction added at its layer."""


class RateTable(Result):
    """A measure on the held-out harmful and harmless prompts, under each intervention."""

    harmful: Conditions
    """On the held-out harmful prompts."""
    harmless: Conditions
    """On the held-out harmless prompts."""


class KLHarmless(Result):
    """The cost of the interventions on harmless prompts."""

    ablation: Num = None
    """Mean next-token KL (nats) of the ablated model from the model as is."""
    addition: Num = None
    """The same with the direction added."""


class RefusalExample(Result):
    """Greedy completions of one held-out prompt under each intervention."""

    prompt: str
    """The prompt."""
    set: str | None = None
    """Which set it is from: harmful or harmless."""
    baseline: str | None = None
    """The model as it is."""
    ablation: str | None = None
    """With the direction ablated."""
    addition: str | None = None
    """With the direction added."""


class LayerDirection(Result):
    """The best candidate direction at one layer (the per-layer view of the selection)."""

    layer: int
    """Layer (block input)."""
    position: int | str | None = None
    """Token position of the candidate."""
    norm: Num = None
    """Norm of the difference in means."""
    bypass: Num = None
    """Mean refusal score on harmful validation prompts with the candidate ablated (lower is better)."""
    induce: Num = None
    """Mean refusal score on harmless validation prompts with the candidate added."""
    kl: Num = None
    """KL on harmless validation prompts caused by the ablation."""
    valid: bool | None = None
    """Whether the candidate passes the selection filters."""
    zero: bool | None = None
    """Whether the harmful and harmless means were equal (no direction)."""


class Refusal(Result):
    """Refusal directions of the fine-tuned model vs the base, and the evaluation of the selected one."""

    selected: Selected | None
    """Where the selected direction of the fine-tuned model lives (None: no direction was found)."""
    verdict: Literal["refuses", "does-not-refuse", "no-direction"] | None = None
    """Whether the fine-tuned model refuses (its harmful-prompt rate against ``Thresholds.refusal_present``);
    ``no-direction`` when it refuses but no direction was found."""
    note: str | None = None
    """One line for the page saying why there is no direction (set when none was found)."""
    reason: str | None = None
    """What the direction search reported when it found no candidate."""
    rejected_phrases: list[str] | None = None
    """Inferred refusal openings dropped because harmless answers or the base's answers contain them too."""
    refusal_rate: RateTable
    """Fraction of held-out prompts refused, per set and intervention."""
    refusal_score: RateTable | None = None
    """Mean log-odds of the refusal tokens, same shape as ``refusal_rate``."""
    kl_harmless: KLHarmless | None = None
    """KL on harmless prompts caused by each intervention (nats)."""
    examples: list[RefusalExample] | None = None
    """Completions of a few held-out prompts under each intervention."""
    directions_by_layer: list[LayerDirection] | None = None
    """Per layer, the best candidate direction."""
    cosine_by_layer: list[Num] | None = None
    """Per layer, the cosine between the base and fine-tuned difference-in-means directions."""
    cosine_selected: Num = None
    """That cosine at the selected layer and position."""
    probe_accuracy_base: Num = None
    """Test accuracy of the fine-tuned direction as a harmful/harmless probe on the base model."""
    probe: JsonDict | None = None
    """The probe on each model: ``{base, finetuned: {train, test, threshold, sign}}``."""
    base_direction_ablates_finetuned: JsonDict | None = None
    """Whether ablating the base model's direction stops the fine-tuned model refusing."""
    base_direction: JsonDict | None = None
    """The base model's direction at the selected layer and position (norm, zero)."""
    finetuned_direction: JsonDict | None = None
    """The fine-tuned model's selected direction (norm, selection scores)."""
    refusal_phrases: list[str] | None = None
    """The phrases that count as a refusal in a completion."""
    refusal_tokens: list[int] | None = None
    """Token ids whose log-odds make the refusal score."""
    n_prompts: JsonDict | None = None
    """Prompt counts per split and set."""
    base: str | None = None
    """The base model as named."""
    finetuned: str | None = None
    """The fine-tuned model as named."""


# ---- refusal_link ----


class LinkLatent(Result):
    """A crosscoder latent's alignment with the refusal direction."""

    latent: int
    """Latent index."""
    cos_difference: Num
    """Cosine of its decoder difference ``d_f - d_b`` with the direction."""
    cos_finetuned: Num
    """Cosine of its fine-tuned decoder vector with the direction."""
    delta: Num
    """Its relative decoder norm Δ (0 base-only, 1 chat-only)."""


class LinkLatentRecord(LinkLatent):
    """A refusal latent with what else is known about it."""

    class_: str | None = Field(None, alias="class")
    """Its crosscoder class (chat_only, base_only, shared, other)."""
    latent_scaling: str | None = None
    """Its Latent Scaling flag (genuine, complete_shrinkage, ...) when known."""
    contexts: list[Context] = []
    """Its top activating contexts (at most 3)."""
    logit_lens: LogitLens | None = None
    """Its fine-tuned decoder vector through the logit lens."""


class AblationRate(Result):
    """Refusal on the held-out harmful prompts under one edit."""

    rate: Num
    """Fraction refused."""
    mean_score: Num = None
    """Mean log-odds of the refusal tokens."""


class LinkAblation(Result):
    """Refusal with the named latents removed, against the direction and random latents."""

    clean: AblationRate
    """No edit."""
    direction: AblationRate
    """The refusal direction projected out."""
    random: AblationRate
    """As many random latents removed."""
    latents: AblationRate | None = None
    """The refusal latents removed (absent when none was named)."""
    n_prompts: int
    """Held-out harmful prompts measured."""
    random_latents: list[int] | None = None
    """The random latents removed."""


class LinkDirection(Result):
    """The refusal direction the latents were compared with."""

    block: int
    """Block whose input it lives at (store layer + 1)."""
    position: int | str
    """Token position (the refusal step's selection)."""
    norm: Num = None
    """Norm of the difference in means."""
    source: str | None = None
    """How it was computed."""


class RefusalLink(Result):
    """Which crosscoder latents carry the refusal direction, and whether removing them stops refusal."""

    layer: int
    """Store layer of the crosscoder (the residual stream leaving that block)."""
    threshold: float
    """|cos| at or above which a latent is a refusal latent."""
    refusal_latents: list[int]
    """The refusal latents, largest |cos| first."""
    best: LinkLatent
    """The latent with the largest |cos| overall."""
    latents: list[LinkLatentRecord]
    """The refusal latents' records."""
    ablation: LinkAblation | None
    """The ablation comparison (None when it did not run)."""
    direction: LinkDirection
    """The refusal direction compared with."""
    select_by: str | None = None
    """Which cosine selects a refusal latent: difference, finetuned or either."""
    refusal_tokens: list[str] | None = None
    """The refusal tokens, decoded."""
