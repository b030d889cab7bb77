"""Settings of refusal-direction extraction, selection and evaluation (Arditi et al. 2024, arXiv 2406.11717)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from diffing.configs import limits, validate
from diffing.errors import DiffingError

MAX_STRENGTH = 100.0
"""Largest ``|strength|`` accepted: beyond it an ablation or addition only overflows low-precision weights."""


def check_strength(strength: float, what: str = "strength") -> float:
    """``strength`` as a float, or a clear error when it is not a finite number of sane size.

    Checked in the Python API (interventions, evaluation, orthogonalisation), not only in the
    CLI, so a NaN or infinite strength can never reach a forward pass or the weights.
    """
    try:
        value = float(strength)
    except (TypeError, ValueError) as err:
        raise DiffingError(f"{what} {strength!r} is not a number; give e.g. 1.0") from err
    if not math.isfinite(value) or abs(value) > MAX_STRENGTH:
        raise DiffingError(
            f"{what} {strength!r} must be a finite number between -{MAX_STRENGTH:g} and {MAX_STRENGTH:g} "
            "(1 removes the direction fully; 0 does nothing)"
        )
    return value


@dataclass
class RefusalConfig:
    """Every knob of the refusal pipeline; defaults follow the paper where it gives one."""

    n_train: int = field(default=128, metadata=limits(gt=0))
    """Most train prompts per set for the difference in means (the paper: 128): at most this many of the
    prompts left after n_test and n_val are held out, so a shorter file gives all that is left, and one
    with fewer than n_test + n_val + min_train prompts is an error; the split is printed."""
    n_val: int = field(default=32, metadata=limits(ge=0))
    """Prompts per set held out for scoring candidates (the paper: 32); ignored when validation files are given."""
    n_test: int = field(default=32, metadata=limits(ge=0))
    """Prompts per set held out for evaluating the selected direction; ignored when test files are given."""
    min_train: int = field(default=4, metadata=limits(ge=1))
    """Fewest train prompts per set that must remain after splitting (and after filtering)."""
    seed: int = 0
    """Seed of the one shuffle that splits a prompt file into train, validation and test (``split_prompts``)."""
    batch_size: int = field(default=32, metadata=limits(gt=0))
    """Prompts per forward pass."""
    score_rows: int = field(default=512, metadata=limits(gt=0))
    """Most rows (validation prompts x candidates) in one scoring forward; candidates share a forward."""
    filter_train: bool = True
    """Drop harmful train prompts the model does not refuse and harmless ones it does, before the means."""
    max_layer_fraction: float = field(default=0.8, metadata=limits(gt=0, le=1))
    """Discard candidates whose layer index is >= this fraction of the depth (the paper: last 20% out)."""
    kl_threshold: float = field(default=0.1, metadata=limits(ge=0))
    """Discard candidates whose ablation moves harmless next-token distributions by more KL than this."""
    induce_threshold: float = 0.0
    """Discard candidates whose addition gives a mean harmless refusal score below this."""
    refusal_tokens: list[int | str] | None = None
    """Tokens R that start a refusal: ids, or strings whose first token is taken; inferred from the
    model's first-token distributions when None."""
    refusal_phrases: list[str] | None = None
    """Substrings that mark a completion as a refusal; inferred from greedy completions when None."""
    max_refusal_tokens: int = field(default=8, metadata=limits(gt=0))
    """Most tokens kept in an inferred R."""
    token_ratio: float = field(default=5.0, metadata=limits(gt=0))
    """An inferred refusal token is this many times likelier first on harmful than on harmless prompts."""
    token_min_mass: float = field(default=0.02, metadata=limits(ge=0, le=1))
    """An inferred refusal token has at least this mean first-token probability on harmful prompts."""
    phrase_min_share: float = field(default=0.5, metadata=limits(ge=0, le=1))
    """An inferred refusal phrase starts at least this share of harmful greedy completions."""
    phrase_max_share: float = field(default=0.1, metadata=limits(ge=0, le=1))
    """An inferred refusal phrase starts at most this share of harmless greedy completions."""
    phrase_tokens: int = field(default=24, metadata=limits(gt=0))
    """Greedy tokens generated per prompt when inferring refusal phrases."""
    max_new_tokens: int = field(default=24, metadata=limits(gt=0))
    """Greedy tokens generated per prompt in evaluation."""
    template: str | None = None
    """A Jinja chat template to use instead of the tokenizer's (needed when it has none; on the command
    line, the file holding it)."""

    def __post_init__(self) -> None:
        validate(self)

    def to_dict(self) -> dict:
        """JSON-ready copy."""
        return asdict(self)
