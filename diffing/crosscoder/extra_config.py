"""Configs of the diff-SAE and of the crosscoder-vs-refusal-direction link.

No tensors and nothing heavy is imported here, so the command line builds its
flags from these dataclasses without loading torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from diffing.configs import limits, validate


@dataclass
class DiffSAEConfig:
    """Shape, training and reading of a diff-SAE: a BatchTopK SAE on ``s * (x_ft - x_base)``."""

    layer: int | None = field(default=None, metadata=limits(ge=0))
    """Store layer to train on (None: the store's only layer)."""
    dict_size: int = field(default=0, metadata=limits(ge=0))
    """Number of latents; 0 = ``expansion * d_model``."""
    expansion: int = field(default=8, metadata=limits(gt=0))
    """Latents per residual dimension, used when ``dict_size`` is 0."""
    k: int = field(default=32, metadata=limits(gt=0))
    """Mean number of active latents per token (BatchTopK)."""
    steps: int | None = field(default=None, metadata=limits(gt=0))
    """Optimisation steps; None = from ``tokens``, or one pass over the store."""
    tokens: int | None = field(default=None, metadata=limits(gt=0))
    """Training tokens, used when ``steps`` is None."""
    batch_size: int = field(default=4096, metadata=limits(gt=0))
    """Tokens per optimisation step."""
    lr: float | None = field(default=None, metadata=limits(gt=0))
    """Adam learning rate; None = the crosscoder's ``2e-4 / sqrt(dict_size / 16384)``."""
    auxk_alpha: float = field(default=1.0, metadata=limits(ge=0))
    """Weight of the auxiliary loss that revives dead latents (docs/benchmarks/dead_latents.md)."""
    dead_tokens: int | None = field(default=None, metadata=limits(gt=0))
    """A latent is dead after this many tokens without firing; None = a tenth of the run's tokens."""
    seed: int = 0
    """Seed of initialisation and data order."""
    scale: Literal["difference", "finetuned", "none"] = "difference"
    """One scalar s for both models (``s * (x_ft - x_base)``): ``difference`` makes the mean squared norm
    of the difference d_model, ``finetuned`` uses the fine-tuned model's store scale, ``none`` s = 1."""
    scale_tokens: int = field(default=16384, metadata=limits(gt=0))
    """Tokens (a seeded shuffled sample) that estimate the ``difference`` scale."""
    checkpoint_every: int = field(default=1000, metadata=limits(ge=0))
    """Steps between resumable checkpoints (0 = only at the end)."""
    top: int = field(default=10, metadata=limits(ge=0))
    """Top-activating contexts kept per latent."""
    context_latents: int = field(default=32, metadata=limits(ge=0))
    """Latents (largest share of the difference first) that get contexts and a logit lens."""
    context_window: int = field(default=16, metadata=limits(ge=0))
    """Tokens shown on each side of an activating token."""
    lens_top: int = field(default=10, metadata=limits(gt=0))
    """Tokens listed per logit lens."""
    max_tokens: int | None = field(default=None, metadata=limits(gt=0))
    """Store tokens the analysis reads (None: all)."""
    read_batch: int = field(default=4096, metadata=limits(gt=0))
    """Tokens encoded at a time while reading the store."""
    chat_only_above: float = field(default=0.9, metadata=limits(ge=0, le=1))
    """A crosscoder latent with relative decoder norm Δ above this is chat-only (the comparison's set)."""
    match_cosine: float = field(default=0.7, metadata=limits(ge=0, le=1))
    """A diff-SAE latent whose max |cosine| with a chat-only decoder difference reaches this is matched."""
    figures: bool = True
    """Write the PNG figure."""

    def __post_init__(self) -> None:
        validate(self)


@dataclass
class RefusalLinkConfig:
    """Which crosscoder latents carry the refusal direction, and what ablating them does."""

    threshold: float = field(default=0.5, metadata=limits(ge=0, le=1))
    """|cosine| with the refusal direction at or above which a latent carries refusal (0.5: 60 degrees,
    far above the ~1/sqrt(d_model) of a random direction)."""
    select_by: Literal["either", "difference", "finetuned"] = "either"
    """Which cosine selects the refusal latents: of the decoder difference d_f - d_b, of d_f, or either."""
    max_latents: int = field(default=16, metadata=limits(gt=0))
    """At most this many refusal latents (largest |cosine| first) are named and ablated."""
    top: int = field(default=10, metadata=limits(ge=0))
    """Top-activating contexts kept per refusal latent (needs the store)."""
    context_window: int = field(default=16, metadata=limits(ge=0))
    """Tokens shown on each side of an activating token."""
    lens_top: int = field(default=10, metadata=limits(gt=0))
    """Tokens listed in each refusal latent's logit lens (through the fine-tuned model)."""
    max_tokens: int | None = field(default=None, metadata=limits(gt=0))
    """Store tokens read for the contexts (None: all)."""
    max_prompts: int = field(default=64, metadata=limits(gt=0))
    """Harmful prompts used in the ablation comparison."""
    batch_size: int = field(default=16, metadata=limits(gt=0))
    """Prompts per forward pass."""
    seed: int = 0
    """Seed of the random-latents control."""
    figures: bool = True
    """Write the PNG figure."""

    def __post_init__(self) -> None:
        validate(self)
