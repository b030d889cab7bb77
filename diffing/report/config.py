"""The run configuration of ``diffing analyze`` and its TOML form (``run.toml``).

Every command-line option of ``analyze`` is generated from a field here
(``diffing.cli.options``), so a run can be saved next to its report and replayed
exactly: ``diffing analyze --config DIR/run.toml``. TOML is read with ``tomllib``
(Python 3.11+) or ``tomli`` and written with ``tomli_w``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from diffing.configs import limits, validate
from diffing.errors import DiffingError
from diffing.pair_options import PairOptions

Section = Literal[
    "stats", "refusal", "crosscoder", "amplify", "diff_sae", "refusal_link", "pca", "mining"
]
"""A section ``analyze`` can run."""
SECTIONS: tuple[str, ...] = get_args(Section)
"""Sections ``analyze`` can run, in the order they run."""
METHOD_KEYS: tuple[str, ...] = SECTIONS[SECTIONS.index("amplify") :]
"""The sections run by ``report.method_steps``: each writes one report key of its own name, shown by
``report.lens_sections``."""
CLI_POSITIONALS: tuple[str, ...] = ("base", "finetuned")
"""Fields given on the command line without a flag (optional: ``--config`` may hold them)."""
CLI_FLAGS: dict[str, tuple[str, ...]] = {
    "train_crosscoder": ("--train-crosscoder", "--no-crosscoder")
}
"""Fields whose flags are not the field's name."""


@dataclass
class AnalyzeConfig(PairOptions):
    """Everything ``diffing analyze`` needs to reproduce one report (the pair and how to load it:
    the fields of :class:`~diffing.pair_options.PairOptions`; then the run's own settings)."""

    remote: bool = False
    """Run every trace on NDIF (nnsight remote execution; hub ids it serves): weight statistics
    from random sketches, KLs over the top-k tokens (a lower bound; docs/scaling.md)."""
    sections: list[Section] = field(default_factory=lambda: list(SECTIONS))
    """Which sections to run (a subset of stats, refusal, crosscoder, amplify, diff_sae, refusal_link, pca,
    mining)."""
    data: list[str] = field(default_factory=list)
    """Corpus specs (.txt, .jsonl text or chat records, folders, hf:NAME, or a named dataset such as
    fineweb) for statistics and the crosscoder; empty: the pair's own corpus, else the built-in one."""
    harmful: str | None = None
    """Harmful prompts for refusal: a file, hf:NAME or a named set (advbench, harmbench, jailbreakbench);
    None: the pair's own set, else the built-in one."""
    harmless: str | None = None
    """Harmless prompts for refusal: a file, hf:NAME or a named set (alpaca); None as for ``harmful``."""
    tokens: int | None = field(default=None, metadata=limits(gt=0))
    """Token budget for the statistics (activations, KL) and the crosscoder's harvest; None: sized to
    the model and the device (diffing/report/budget.py)."""
    transcripts: int | None = field(default=None, metadata=limits(gt=0))
    """Chat transcripts the fine-tuned model writes itself when the data has none; None: by device."""
    transcript_tokens: int | None = field(default=None, metadata=limits(gt=0))
    """Longest self-generated answer, in tokens; None: by device."""
    layers: list[int] | None = None
    """Layers to compare (negative counts from the end); None lets each method choose."""
    adl_layer: int | None = None
    """Layer of the Activation Difference Lens; None picks the middle layer."""
    refusal_prompts: int = field(default=32, metadata=limits(gt=0))
    """At most this many prompts per split (train/val/test) for the refusal comparison."""
    crosscoder: str | None = None
    """Folder of a trained crosscoder to analyse (skips training)."""
    train_crosscoder: bool = True
    """Train a crosscoder when none is given (False, ``--no-crosscoder``: skip the crosscoder section)."""
    crosscoder_layer: int | None = None
    """Layer of the quick crosscoder; None picks the middle layer."""
    crosscoder_latents: int | None = field(default=None, metadata=limits(gt=0))
    """Latents of the trained crosscoder; None: sized to the token budget."""
    crosscoder_steps: int | None = field(default=None, metadata=limits(gt=0))
    """Training steps of the trained crosscoder; None: sized to the token budget."""
    causal_transcripts: int = field(default=64, metadata=limits(ge=0))
    """Chat transcripts of the data on which the crosscoder's causal check patches latents (0: skip it)."""
    amplify_prompts: int | None = field(default=None, metadata=limits(gt=0))
    """Prompts of the logit-difference amplification section; None: by device (6 on a CPU, 32 on a GPU)."""
    amplify_target: str | None = None
    """A string whose rate amplification counts per α (None: completions only, no rate)."""
    top_latents: int = field(default=8, metadata=limits(ge=0))
    """Latent cards shown in the report."""
    seed: int = 0
    """Random seed for sampling and training."""

    def __post_init__(self) -> None:
        unknown = [s for s in self.sections if s not in SECTIONS]
        if unknown:
            raise DiffingError(
                f"unknown section(s) {', '.join(unknown)}: choose from {', '.join(SECTIONS)}"
            )
        validate(self)

    def to_dict(self) -> dict:
        """Plain dict of the fields (None values kept)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> AnalyzeConfig:
        """Build from a dict, rejecting unknown keys with a message naming them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise DiffingError(
                f"unknown key(s) in the run config: {', '.join(unknown)}; valid keys: {', '.join(sorted(names))}"
            )
        return cls(**d)

    def save(self, path: str | Path) -> Path:
        """Write the config as TOML (None values are left out: absent means default)."""
        import tomli_w

        path = Path(path)
        path.write_text(
            "# diffing analyze run config: `diffing analyze --config THIS_FILE` reproduces the report\n"
            + tomli_w.dumps({k: v for k, v in self.to_dict().items() if v is not None})
        )
        return path

    @classmethod
    def load(cls, path: str | Path) -> AnalyzeConfig:
        """Read a TOML run config written by :meth:`save` (or by hand)."""
        return cls.from_dict(load_toml(path))


def load_toml(path: str | Path) -> dict:
    """Parse a TOML file, raising :class:`DiffingError` on a missing or malformed file."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    path = Path(path)
    if not path.is_file():
        raise DiffingError(
            f"config file {str(path)!r} does not exist; pass the run.toml an earlier analyze wrote"
        )
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise DiffingError(f"config file {str(path)!r} is not valid TOML: {err}") from err
