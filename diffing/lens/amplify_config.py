"""What a logit-difference amplification run can be told (no torch import: the CLI builds its flags here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from diffing.configs import limits, validate
from diffing.errors import DiffingError


@dataclass
class AmplifyConfig:
    """Amplification strengths, decoding, and the behaviour to count (docs/amplify.md)."""

    alphas: tuple[float, ...] = field(default=(0.0, 0.5, 1.0, 2.0, 4.0), metadata=limits())
    """Strengths α of ``logits_ft + α (logits_ft - logits_base)``; α = 0 is the fine-tuned model alone."""
    form: Literal["logits", "weights"] = "logits"
    """``logits``: both models step together on amplified logits; ``weights``: one model with ``W_base + (1+α)ΔW``."""
    max_new_tokens: int = field(default=48, metadata=limits(gt=0))
    """Tokens generated per completion at most (decoding stops earlier at end of turn)."""
    temperature: float = field(default=0.0, metadata=limits(ge=0))
    """0: greedy decoding; above 0: sample from ``softmax(logits / temperature)``."""
    samples: int = field(default=1, metadata=limits(ge=1))
    """Completions per prompt and α (more than 1 needs a temperature above 0)."""
    seed: int = 0
    """Seed of the sampling generator (the same config gives the same samples)."""
    batch_size: int = field(default=16, metadata=limits(gt=0))
    """Prompts decoded together; the logit form runs them at every α > 0 at once, in one batch."""
    max_prompts: int | None = field(default=None, metadata=limits(gt=0))
    """Use at most this many prompts (the first ones); None: all."""
    target: str | None = None
    """Behaviour to count: a string (or a regular expression with ``target_regex``) searched in each completion."""
    target_regex: bool = False
    """Read ``target`` as a Python regular expression rather than a literal string."""
    case_sensitive: bool = False
    """Match ``target`` with case (off: ``Marmalade`` counts for ``marmalade``)."""
    chat: bool = True
    """Format prompts as single user turns with the chat template; off: plain text continued as is."""
    include_base: bool = True
    """Also generate from the base model alone, for the base-vs-fine-tuned-vs-amplified comparison."""

    def __post_init__(self) -> None:
        self.alphas = tuple(float(a) for a in self.alphas)
        validate(self)
        self.validate()

    def validate(self) -> None:
        """Raise a :class:`DiffingError` on settings that cannot work together."""
        if not self.alphas:
            raise DiffingError(
                "AmplifyConfig.alphas is empty; give at least one strength, e.g. 0 1 2"
            )
        if len(set(self.alphas)) != len(self.alphas):
            raise DiffingError(
                f"AmplifyConfig.alphas repeats a value ({self.alphas}); list each once"
            )
        if self.form not in ("logits", "weights"):
            raise DiffingError(
                f"AmplifyConfig.form must be 'logits' or 'weights', got {self.form!r}"
            )
        if self.samples > 1 and self.temperature == 0:
            raise DiffingError(
                f"samples={self.samples} with greedy decoding repeats one completion; "
                "set a temperature above 0 or samples to 1"
            )
        if self.target_regex and self.target is not None:
            import re

            try:
                re.compile(self.target)
            except re.error as err:
                raise DiffingError(
                    f"AmplifyConfig.target {self.target!r} is not a valid regular expression ({err})"
                ) from err
        if self.target is not None and not self.target:
            raise DiffingError("AmplifyConfig.target is empty; give the text to look for, or none")
