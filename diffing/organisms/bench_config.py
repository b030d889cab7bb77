"""Settings of the identification benchmark (``diffing organism bench``, ``python -m benchmarks.identify``).

Torch-free, so the CLI can build its flags from it without loading the methods.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from diffing.configs import limits, validate
from diffing.organisms.config import FamilyName


@dataclass
class BenchConfig:
    """Which organism builds the benchmark scores `diffing analyze` on (always with its default settings)."""

    root: str | None = None
    """An existing organism build to score (its every variant); None: build or reuse the cached
    builds of every family and seed below."""
    families: list[FamilyName] = field(default_factory=lambda: ["llama"])
    """Model families of the organism builds (llama, olmo2)."""
    seeds: list[int] = field(default_factory=lambda: [0], metadata=limits(ge=0))
    """Organism seeds: one build per family and seed."""
    full: bool = False
    """Score the full organism builds (minutes each) instead of the fast ones the tests use."""
    variants: list[str] = field(default_factory=lambda: ["all"])
    """Variants to build and score (all: every variant the installation knows)."""

    def __post_init__(self) -> None:
        validate(self)
