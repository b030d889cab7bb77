"""Settings of activation-difference PCA and diff mining (no torch import: the CLI reads them for ``--help``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from diffing.configs import limits, validate


@dataclass
class LensDataConfig:
    """How much of the corpus is read and how it is batched (shared by both methods)."""

    tokens: int = field(default=100_000, metadata=limits(gt=0))
    """Token budget over all data (half plain text, half chat transcripts when both are given)."""
    max_length: int = field(default=128, metadata=limits(ge=2))
    """Documents are truncated to this many tokens."""
    batch_size: int = field(default=8, metadata=limits(gt=0))
    """Documents per forward pass."""
    n_contexts: int = field(default=10, metadata=limits(ge=0))
    """Example contexts kept per direction and sign (PCA), per top token and per cluster (mining)."""
    context_window: int = field(default=12, metadata=limits(ge=0))
    """Tokens shown on each side of a context's token."""

    def __post_init__(self) -> None:
        validate(self)


@dataclass
class PCAConfig(LensDataConfig):
    """Settings of :func:`diffing.lens.pca.diff_pca`."""

    layers: list[int] | None = None
    """Layers whose differences are decomposed (default: the middle layer)."""
    n_components: int = field(default=5, metadata=limits(gt=0))
    """Centred principal components reported per layer."""
    top_k: int = field(default=20, metadata=limits(gt=0))
    """Logit-lens tokens listed per component and sign."""
    cache_mb: float = field(default=512.0, metadata=limits(ge=0))
    """The differences are kept in memory for the second (projection) pass up to this size; above it both models run again."""


@dataclass
class MiningConfig(LensDataConfig):
    """Settings of :func:`diffing.lens.mining.diff_mining`."""

    k: int = field(default=10, metadata=limits(gt=0))
    """Tokens per position whose log-probability the fine-tune raises most."""
    top_tokens: int = field(default=30, metadata=limits(gt=0))
    """Tokens of the aggregate reported (and the columns of the NMF matrix)."""
    min_count: int = field(default=2, metadata=limits(gt=0))
    """A token must be in some position's top-k at least this often to be ranked."""
    n_clusters: int = field(default=5, metadata=limits(ge=0))
    """NMF topic clusters (0: no clustering)."""
    nmf_positions: int = field(default=20_000, metadata=limits(gt=0))
    """At most this many positions (the first ones) enter the NMF matrix."""
    nmf_iterations: int = field(default=300, metadata=limits(gt=0))
    """Multiplicative-update iterations of the NMF."""
    seed: int = 0
    """Seed of the NMF's initial factors."""
