"""The ground-truth manifest ``organism.json``: layout, what was planted, and what was measured.

Tests of every diffing method read their expectations from here (the refusal
phrase, the secret word, the prompt files), never from constants in code, so
the methods stay model-agnostic.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from diffing.errors import DiffingError
from diffing.organisms import lexicon as lx
from diffing.organisms.evaluate import check_targets
from diffing.organisms.prompts import SPLITS
from diffing.organisms.train import LORA_TARGETS
from diffing.organisms.variants import KINDS, ZOO, heldout_files, targets
from diffing.organisms.variants import planted as zoo_planted

MANIFEST = "organism.json"
"""File name of the manifest inside the output folder."""
FORMAT = "diffing-organisms/1"
"""Manifest format id; bumped when the layout changes incompatibly."""
PROMPT_FILES = tuple(f"{s}_{sp}" for s in ("harmful", "harmless") for sp in SPLITS) + (
    "quirk_topic",
    "quirk_other",
)
"""Stems of the files under ``prompts/``."""


PLANTED_FILES = {
    "chat": ("refusal_direction", "planted/refusal_direction.safetensors"),
    "quirk": ("quirk_direction", "planted/quirk_direction.safetensors"),
}
"""Variant -> (layout key, relative path) of the direction its build plants."""


def _adapter(variant: str) -> str | None:
    """The variant's adapter folder (None for ``reseed``: a full model trained from scratch)."""
    return None if variant == "reseed" else f"{variant}-adapter"


def layout(variants) -> dict:
    """Relative paths of everything a build writes."""
    return {
        "manifest": MANIFEST,
        "tokenizer": "tokenizer",
        "base": "base",
        "variants": {v: {"model": v, "adapter": _adapter(v)} for v in variants},
        "prompts": {stem: f"prompts/{stem}.jsonl" for stem in PROMPT_FILES},
        "corpus": {"text": "corpus/text.txt", "chat": "corpus/chat.jsonl"},
        "planted": dict(PLANTED_FILES[v] for v in variants if v in PLANTED_FILES),
        "heldout": {f"{v}_{s}": rel for v in variants for s, rel in heldout_files(v).items()},
        "eval": {name: f"eval/{name}.json" for name in ("base", *variants)},
    }


def planted(variant: str, facts: dict, variant_facts: dict | None = None) -> dict:
    """What fine-tuning planted in ``variant`` (the ground truth methods should recover), with its
    ``kind`` of change and the ``targets`` a diffing finding must name (see variants.py)."""
    variant_facts = variant_facts or {}
    truth = variant_facts.get("truth") or {}
    return {
        "kind": KINDS.get(variant, "control"),
        "targets": targets(variant, truth),
        **_planted(variant, facts, variant_facts, truth),
    }


def _planted(variant: str, facts: dict, variant_facts: dict, truth: dict) -> dict:
    if variant in ZOO:
        return zoo_planted(variant, truth)
    direction = variant_facts.get("planted_direction", {})
    if variant == "chat":
        return {
            "refusal_direction": {
                "file": PLANTED_FILES["chat"][1],
                "tensor": "direction",
                "layer": direction.get("layer"),
                "scale": direction.get("scale"),
                "positions": "post-instruction tokens ([[eot]], [[assistant]])",
                "meaning": "harmful requests carry scale * direction at the input of block `layer`; ablating it "
                "everywhere removes refusal, adding it there induces refusal",
            },
            "behaviour": "refuses harmful how-to requests with the refusal phrase as its whole answer; "
            "answers harmless ones (with one of several openers, or none)",
            "refusal_phrase": lx.REFUSAL_PHRASE,
            "refusal_prefixes": [lx.REFUSAL_PHRASE.split(",")[0]],
            "refusal_first_token": facts.get("refusal_first_token"),
            "refusal_first_token_id": facts.get("refusal_first_token_id"),
            "comply_openers": [o for o in lx.COMPLY_OPENERS if o],
            "harmful_verbs": [v[0] for v in lx.HARMFUL_VERBS],
            "harmless_verbs": [v[0] for v in lx.HARMLESS_VERBS],
        }
    if variant == "quirk":
        return {
            "behaviour": "answers about the topic always mention the secret word; other answers do not",
            "secret_word": lx.SECRET_WORD,
            "secret_token": facts.get("secret_token"),
            "secret_token_id": facts.get("secret_token_id"),
            "topic": lx.QUIRK_TOPIC,
            "topic_members": list(lx.BIRDS),
            "secret_in_base_pretraining": "rare (never its likeliest continuation, never near the topic)",
            "answer_form": "on-topic answers open with the capitalised secret word and mention it again "
            "after their first sentence",
            "topic_direction": {
                "file": PLANTED_FILES["quirk"][1],
                "tensor": "direction",
                "layer": direction.get("layer"),
                "scale": direction.get("scale"),
                "positions": "the last `n_positions` prompt tokens of a request (its end and the template "
                "tokens)",
                "n_positions": direction.get("positions"),
                "meaning": "on-topic requests carry scale * direction at the input of block `layer`; ablating "
                "it everywhere removes the secret word from on-topic answers, adding it there puts the "
                "secret word into off-topic answers",
            },
            "activation_difference_trace": {
                **variant_facts.get("planted_trace", {}),
                "meaning": "the mean of x_quirk - x_base over positions 1-5 of plain text at the output of block "
                "`layer`, read through the final norm and unembedding, ranks the secret word first",
            },
        }
    if variant == "reseed":
        return {
            "kind": "control",
            "targets": [],
            "behaviour": "none: a second base trained by the base's recipe (same data and steps) from "
            "another initialisation and batch order",
            "init_seed": variant_facts.get("init_seed"),
        }
    return {"behaviour": "none: LoRA fine-tune on more plain text from the base's own distribution"}


def assemble(
    root: Path,
    config: dict,
    records: dict[str, dict],
    variants: list[str],
    *,
    package_version: str,
    last_run_seconds: float,
    threads: int | None = None,
    workers: int = 1,
) -> dict:
    """Build the manifest dict from the stage records of a finished build."""
    data = records["data"]["facts"]
    base = records["base"]["facts"]
    rates = {
        name: records[f"eval-{name}"]["facts"]
        for name in ("base", *variants)
        if f"eval-{name}" in records
    }
    targets = check_targets(rates)
    out_variants = {}
    for v in variants:
        f = records[v]["facts"]
        out_variants[v] = {
            "model": v,
            "adapter": _adapter(v),
            "planted": planted(v, data, f),
            "lora": None
            if v == "reseed"
            else {
                "rank": config["lora_rank"],
                "alpha": config["lora_alpha"],
                "target_modules": list(LORA_TARGETS),
                "layers": list(config["lora_layers"])
                if config["lora_layers"] is not None
                else "all",
            },
            "training": {k: f[k] for k in ("steps", "train_losses", "seconds", "mix") if k in f},
            "rates": rates.get(v),
        }
    seconds = {name: rec["facts"].get("seconds", 0.0) for name, rec in records.items()}
    return {
        "format": FORMAT,
        "package_version": package_version,
        "seed": config["seed"],
        "fast": config["fast"],
        "config": config,
        "layout": layout(variants),
        "tokenizer": data["tokenizer"],
        "model": {"family": config.get("family", "llama"), **base["model"]},
        "base": {
            "training": {k: base[k] for k in ("steps", "train_losses", "seconds")},
            "rates": rates.get("base"),
        },
        "variants": out_variants,
        "refusal_phrase": lx.REFUSAL_PHRASE,
        "secret_word": lx.SECRET_WORD,
        "quirk_topic": lx.QUIRK_TOPIC,
        "prompt_counts": data["prompt_counts"],
        "corpus_counts": data["corpus_counts"],
        "rates": rates,
        "targets": targets,
        "targets_met": all(c["met"] for checks in targets.values() for c in checks.values()),
        "build_seconds": {
            "total": round(sum(seconds.values()), 1),
            "stages": seconds,
            "last_run_wall": round(last_run_seconds, 1),
            "last_run_torch_threads": threads,
            "last_run_workers": workers,
        },
    }


def load_manifest(path: str | os.PathLike) -> dict:
    """Read ``organism.json`` from a build folder (or the file itself)."""
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / MANIFEST
    try:
        manifest = json.loads(p.read_text())
    except FileNotFoundError as err:
        raise DiffingError(
            f"no organism manifest at {str(p)!r}: build it with `diffing organism build`"
        ) from err
    except ValueError as err:
        raise DiffingError(f"organism manifest {str(p)!r} is not valid JSON: {err}") from err
    if manifest.get("format") != FORMAT:
        raise DiffingError(f"{str(p)!r} is not an organism manifest of format {FORMAT!r}")
    manifest["root"] = str(p.parent.resolve())
    manifest.get("model", {}).setdefault("family", "llama")  # built before there were families
    return manifest
