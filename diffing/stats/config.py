"""Settings of the feature-change statistics (no torch here: the command line reads them)."""

from __future__ import annotations

from dataclasses import dataclass, field

from diffing.configs import limits, validate

TOP_K = 256
"""Remote models: fine-tuned tokens per position whose probabilities both traces return."""
SKETCH_SIZE = 64
"""Remote models: side of the random sketch each weight matrix comes back as."""


@dataclass
class StatsInputs:
    """What ``diffing stats`` reads and where it measures (the arguments of :func:`compute_stats`
    besides the pair and :class:`StatsConfig`)."""

    data: list[str]
    """Data: .txt (one document a line), .jsonl/.json with strings, text records ({"text": ...}) or
    chats ({"messages": [...]}), folders, hf:NAME[:split]."""
    text_field: str | None = None
    """Field holding the text in JSON records (None: text)."""
    tokens: int = field(default=100_000, metadata=limits(gt=0))
    """Token budget over all data."""
    layers: list[int] | None = None
    """Layers to measure (None: all)."""
    adl_layer: int | None = None
    """Layer of the Activation Difference Lens (None: the middle one)."""

    def __post_init__(self) -> None:
        validate(self)


@dataclass
class StatsConfig:
    """Settings of :func:`compute_stats` beyond the data and the layers."""

    batch_size: int = field(default=8, metadata=limits(gt=0))
    """Documents per forward pass."""
    max_length: int = field(default=128, metadata=limits(ge=2))
    """Documents are truncated to this many tokens."""
    adl_positions: int = field(default=5, metadata=limits(gt=0))
    """ADL averages positions 1..adl_positions (position 0, BOS / attention sink, is skipped)."""
    adl_top_k: int = field(default=20, metadata=limits(gt=0))
    """Promoted and suppressed tokens listed for the ADL."""
    n_contexts: int = field(default=20, metadata=limits(ge=0))
    """Top-KL contexts kept."""
    context_tokens: int = field(default=24, metadata=limits(ge=0))
    """Tokens of text shown before each top-KL token."""
    max_offset: int = field(default=32, metadata=limits(ge=0))
    """KL by offset from the assistant turn's first token covers offsets -max_offset..max_offset."""
    steer_prompts: int = field(default=3, metadata=limits(ge=0))
    """Prompts generated from with and without ADL steering (0 turns steering off)."""
    steer_scale: float = field(default=1.0, metadata=limits(ge=0))
    """Norm of the added steering vector, as a multiple of the fine-tuned model's mean activation norm there."""
    steer_tokens: int = field(default=24, metadata=limits(gt=0))
    """Greedy tokens generated per steering example."""
    patchscope_scales: tuple[float, ...] = (0.5, 1.0, 2.0)
    """Patchscope readout norms, as multiples of the mean activation norm (empty: no Patchscope)."""
    energy: float = field(default=0.9, metadata=limits(gt=0, le=1))
    """Energy fraction defining a weight delta's effective rank."""
    weights: bool = True
    """Compute the weight statistics."""
    weights_from_files: bool = False
    """Stream the weights from both checkpoints' safetensors files instead of the loaded models."""
    remote_top_k: int = field(default=TOP_K, metadata=limits(gt=0))
    """Remote models only: fine-tuned tokens per position whose probabilities come back for the KL."""
    weight_sketch: int = field(default=SKETCH_SIZE, metadata=limits(gt=0))
    """Remote models only: each weight matrix comes back as a ``[k, k]`` random sketch (weight_sketch.py)."""

    def __post_init__(self) -> None:
        validate(self)
