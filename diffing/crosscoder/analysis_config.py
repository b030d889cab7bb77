"""What a crosscoder analysis can be told: class bands, Latent Scaling thresholds, causal check, passes.

These configs hold no tensors and import nothing heavy, so the command line can
build its flags from them without loading torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from diffing.configs import limits, validate
from diffing.errors import DiffingError


@dataclass
class ClassThresholds:
    """Where the relative decoder norm Δ splits latents into classes (defaults: Minder et al. 2025)."""

    base_only_below: float = 0.1
    """Δ strictly below this: base-only (the fine-tuned decoder is at most ~1/4 of the base's norm)."""
    chat_only_above: float = 0.9
    """Δ strictly above this: chat-only (the base decoder is at most ~1/4 of the fine-tuned one's norm)."""
    shared_low: float = 0.4
    """Lower edge (inclusive) of the shared band."""
    shared_high: float = 0.6
    """Upper edge (inclusive) of the shared band; latents between the bands are ``other``."""

    def validate(self) -> None:
        """Raise a :class:`DiffingError` when the bands overlap or leave [0, 1]."""
        ok = (
            0.0
            <= self.base_only_below
            <= self.shared_low
            <= self.shared_high
            <= self.chat_only_above
            <= 1.0
        )
        if not ok:
            raise DiffingError(
                f"class thresholds must satisfy 0 <= base_only_below ({self.base_only_below}) <= shared_low "
                f"({self.shared_low}) <= shared_high ({self.shared_high}) <= chat_only_above "
                f"({self.chat_only_above}) <= 1; fix the values passed"
            )


@dataclass
class ScalingThresholds:
    """When a Latent Scaling ratio counts as high, and when a β estimate is trusted."""

    shrinkage_above: float = 0.5
    """ν_ε at or above this flags complete shrinkage: the other model's residual error carries at least
    half as much of the latent's direction as its own model does (the paper ranks by ν; ½ is the midpoint
    between "absent" (0) and "equally present" (1))."""
    decoupling_above: float = 0.5
    """ν_r at or above this flags latent decoupling (other latents rebuild at least half of it); checked
    after shrinkage, so a latent high on both ratios is reported as complete shrinkage."""
    ratio_floor: float = 0.1
    """Floor of |β^own| in the ratios' denominators, so two near-zero βs do not give a huge ratio."""
    min_active: int = field(default=50, metadata=limits(ge=1))
    """Fewer active tokens than this: the estimate is marked ``beta_reliable: false`` and a warning issued."""

    def __post_init__(self) -> None:
        validate(self)


@dataclass
class CausalConfig:
    """How the causal check runs."""

    batch_size: int = field(default=8, metadata=limits(gt=0))
    """Transcripts per forward pass."""
    max_length: int = field(default=256, metadata=limits(gt=0))
    """Tokens kept per transcript."""
    max_texts: int = field(default=64, metadata=limits(ge=0))
    """Transcripts used at most (the first ones)."""
    remote_top_k: int = field(default=256, metadata=limits(gt=0))
    """Remote models only: the KLs are taken over the fine-tuned model's top this-many tokens plus
    one bin for the rest (a lower bound; see ``diffing.traced``), as full distributions
    cannot leave the server."""

    def __post_init__(self) -> None:
        validate(self)


@dataclass
class AnalysisConfig:
    """Everything ``analyze_crosscoder`` can be told beyond its inputs."""

    classes: ClassThresholds = field(default_factory=ClassThresholds)
    """Δ thresholds of the base-only / chat-only / shared classes."""
    scaling: ScalingThresholds = field(default_factory=ScalingThresholds)
    """Latent Scaling verdict thresholds and the minimum sample for a reliable β."""
    causal: CausalConfig = field(default_factory=CausalConfig)
    """Batch size and lengths of the causal check."""
    batch_size: int = field(default=4096, metadata=limits(gt=0))
    """Tokens per batch of the streaming pass."""
    max_tokens: int | None = field(default=None, metadata=limits(gt=0))
    """Read at most this many tokens of the store (None: all)."""
    context_window: int = field(default=16, metadata=limits(ge=0))
    """Tokens shown before and after each top activation."""
    context_latents: int = field(default=200, metadata=limits(ge=0))
    """Chat-only and base-only latents (most extreme Δ first) that get contexts and logit lenses."""
    lens_top: int = field(default=10, metadata=limits(gt=0))
    """Tokens listed per logit lens."""
    causal_top_n: int = field(default=20, metadata=limits(ge=0))
    """Size of the "top-N by Δ" latent set of the causal check."""
    seed: int = 0
    """Seed of the random control set."""
    figures: bool = True
    """Write the PNG figures."""

    def __post_init__(self) -> None:
        validate(self)
