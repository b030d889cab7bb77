"""How a model pair is named and loaded: the options every pair command and ``analyze`` share.

Written once here (no torch: the command line builds its arguments from it) and used
by ``diffing.cli.common.add_pair_args``, by :class:`~diffing.report.config.AnalyzeConfig`
(which extends it, so ``run.toml`` records the same fields) and by :func:`load_pair`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PairOptions:
    """The two checkpoints and how to load them."""

    base: str | None = None
    """Base model: Hugging Face id or local folder."""
    finetuned: str | None = None
    """Fine-tuned model: Hugging Face id, local folder, or PEFT adapter folder."""
    adapter: str | None = None
    """PEFT adapter folder applied on top of the fine-tuned model."""
    dtype: str | None = None
    """Weights dtype: float32, bfloat16, float16 or auto; None: float32 on CPU, the checkpoint's own on GPU."""
    device: str | None = None
    """cpu, cuda, cuda:N, or auto (device_map="auto" across GPUs); None: the loader's default."""
    trust_remote_code: bool = False
    """Allow model code shipped with a checkpoint (off unless asked)."""
    allow_pickle: bool = False
    """Allow .bin/.pt weights (read with weights_only=True)."""


LOAD_FIELDS = ("adapter", "dtype", "device", "trust_remote_code", "allow_pickle")
"""The fields passed to ``ModelPair.load`` as keywords."""


def load_pair(options, *, remote: bool | str = False):
    """The :class:`~diffing.models.ModelPair` that ``options`` (a PairOptions, or any object with
    its fields, such as an argparse namespace or an AnalyzeConfig) names."""
    from diffing.models import ModelPair

    return ModelPair.load(
        options.base,
        options.finetuned,
        remote=remote,
        **{name: getattr(options, name) for name in LOAD_FIELDS},
    )
