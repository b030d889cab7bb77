"""Export a weight-orthogonalised model and check the written copy against the original.

The check reloads the saved folder from disk (so it tests what a user will load, not the
edited module in memory) and measures it with :mod:`diffing.refusal.measure` against the
original's behaviour, recorded before the weights were edited: refusal rates on held-out
harmful and harmless prompts and the first-token KL to the original on harmless ones.
The numbers go to ``export.json`` in the exported folder, next to the weights.
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import torch

from diffing.arch import ArchSpec
from diffing.refusal.config import RefusalConfig, check_strength
from diffing.refusal.io import Direction, write_json
from diffing.refusal.measure import behaviour, compare_behaviour
from diffing.refusal.orthogonalize import check_out_dir, export_orthogonalized

EXPORT_FILE = "export.json"
"""File in the exported model folder recording how it was made and what the check measured."""


class ExportResult(NamedTuple):
    """Result of :func:`export_checked`."""

    out: Path
    """The exported Hugging Face model folder."""
    report: dict
    """What ``export.json`` holds: source, direction, strength, layers, and ``check`` (a measure report)."""


def export_checked(
    lm,
    tokenizer,
    arch: ArchSpec,
    direction: Direction,
    out_dir: str | Path,
    harmful: Sequence[str],
    harmless: Sequence[str],
    *,
    config: RefusalConfig | None = None,
    strength: float = 1.0,
    layers: list[int] | None = None,
    source: str = "",
    text: Sequence[str] | None = None,
    load_kwargs: dict | None = None,
    release: bool = False,
) -> ExportResult:
    """Measure ``lm``, orthogonalise it in place and save it to ``out_dir``, reload that and measure it.

    ``lm`` is the nnsight model of the original; its weights are edited (pass a copy to
    keep them). ``load_kwargs`` go to ``load_model`` when the copy is reloaded (dtype, device).
    ``release`` moves ``lm``'s edited weights to the meta device once they are saved, so
    the reloaded copy is the only model in memory (the CLI does; ``lm`` is then unusable).
    """
    from diffing.models import load_model

    cfg = config or RefusalConfig()
    check_out_dir(out_dir, source)
    strength = check_strength(strength)
    direction.check_model(lm._module.config, what=source or "the model")
    original = behaviour(lm, tokenizer, arch, harmful, harmless, config=cfg, text=text)
    out = export_orthogonalized(
        lm._module, tokenizer, direction, out_dir, source=source, strength=strength, layers=layers
    )
    if release:  # the edited weights are on disk now; free them before loading the copy
        lm._module.to("meta")
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    fresh, ftok, farch = load_model(str(out), **(load_kwargs or {}))
    exported = behaviour(fresh, ftok, farch, harmful, harmless, config=cfg, text=text)
    del fresh
    gc.collect()
    check = compare_behaviour(
        exported,
        original,
        config=cfg,
        refusal_phrases=direction.refusal_phrases,
        refusal_tokens=direction.refusal_tokens,
        model_ref=str(out),
        reference_ref=source or direction.model_ref,
    )
    report = {
        "source": source or direction.model_ref,
        "direction": {
            "layer": direction.layer,
            "position": direction.position,
            "model_ref": direction.model_ref,
            "norm": direction.norm,
        },
        "strength": strength,
        "layers": None if layers is None else sorted(int(k) for k in layers),
        "check": check,
    }
    write_json(out / EXPORT_FILE, report)
    return ExportResult(out, report)
