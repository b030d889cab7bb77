"""The saved refusal direction, prompt sets and their train/validation split.

``direction.safetensors`` holds the unit direction and the provenance needed to
refuse a mismatched model (family, d_model, depth, model reference) in its
string metadata; everything else (scores, refusal tokens and phrases) rides along
as JSON in the same metadata, so one file is the whole result.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch

from diffing.errors import DiffingError
from diffing.io import atomic_path, dumps
from diffing.io import write_json as write_json_strict

DIRECTION_FILE = "direction.safetensors"
"""File name of a saved direction inside an output folder."""


@dataclass
class Direction:
    """A selected refusal direction and where it came from."""

    direction: torch.Tensor
    """``[d_model]`` unit vector ``r̂``."""
    layer: int
    """Candidate layer: the residual stream at the input of this block."""
    position: int
    """Post-instruction position, counted from the end of the prompt (-1 is the last template token)."""
    norm: float
    """Norm of the difference in means; ``direction * norm`` is the vector activation addition adds."""
    family: str
    """``config.model_type`` of the model it was extracted from."""
    d_model: int
    """Residual-stream width of that model."""
    n_layers: int
    """Number of blocks of that model."""
    model_ref: str = ""
    """How that model was named (hub id or folder)."""
    refusal_tokens: list[int] = field(default_factory=list)
    """Token ids ``R`` used for refusal scores."""
    refusal_phrases: list[str] = field(default_factory=list)
    """Substrings used to call a completion a refusal."""
    scores: dict = field(default_factory=dict)
    """The selected candidate's ``bypass``, ``induce`` and ``kl`` scores."""

    @property
    def vector(self) -> torch.Tensor:
        """``[d_model]`` the un-normalised difference in means ``r``."""
        return self.direction * self.norm

    def save(self, path: str | Path) -> Path:
        """Write ``direction.safetensors`` (``path`` is the file or its folder); returns the file."""
        from safetensors.torch import save_file

        path = Path(path)
        file = path / DIRECTION_FILE if path.suffix != ".safetensors" else path
        file.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "layer": str(self.layer),
            "position": str(self.position),
            "norm": repr(float(self.norm)),
            "family": self.family,
            "d_model": str(self.d_model),
            "n_layers": str(self.n_layers),
            "model_ref": self.model_ref,
            "refusal_tokens": json.dumps(self.refusal_tokens),
            "refusal_phrases": json.dumps(self.refusal_phrases),
            "scores": dumps(self.scores, indent=None, non_finite="null"),
            "format": "diffing.refusal.direction/1",
        }
        with atomic_path(file) as tmp:
            save_file(
                {"direction": self.direction.detach().float().cpu().contiguous()},
                str(tmp),
                metadata=meta,
            )
        return file

    @classmethod
    def load(cls, path: str | Path) -> Direction:
        """Read a direction saved by :meth:`save` (the file or the folder holding it)."""
        from safetensors import safe_open

        path = Path(path).expanduser()
        file = path / DIRECTION_FILE if path.is_dir() else path
        if not file.is_file():
            raise DiffingError(
                f"no refusal direction at {str(path)!r}; extract one first (extract_direction, CLI `diffing refusal extract`) and pass its output folder"
            )
        try:
            with safe_open(str(file), framework="pt") as f:
                meta = f.metadata() or {}
                tensor = f.get_tensor("direction")
            return cls(
                direction=tensor.float(),
                layer=int(meta["layer"]),
                position=int(meta["position"]),
                norm=float(meta["norm"]),
                family=meta["family"],
                d_model=int(meta["d_model"]),
                n_layers=int(meta["n_layers"]),
                model_ref=meta.get("model_ref", ""),
                refusal_tokens=json.loads(meta.get("refusal_tokens", "[]")),
                refusal_phrases=json.loads(meta.get("refusal_phrases", "[]")),
                scores=json.loads(meta.get("scores", "{}")),
            )
        except DiffingError:
            raise
        except Exception as err:
            raise DiffingError(
                f"{str(file)!r} is not a refusal direction file ({type(err).__name__}: {err})"
            ) from err

    def check_model(self, config, what: str = "the model") -> None:
        """Raise a clear error when this direction was extracted from a different kind of model."""
        from diffing.arch import d_model, num_layers

        family, width, depth = (
            getattr(config, "model_type", "?"),
            d_model(config),
            num_layers(config),
        )
        if width != self.d_model or self.direction.numel() != width:
            raise DiffingError(
                f"the direction has d_model {self.d_model} but {what} has {width}; it comes from another model "
                f"({self.model_ref or self.family}): extract a direction from this model with `diffing refusal extract`"
            )
        if family != self.family or depth != self.n_layers:
            raise DiffingError(
                f"the direction comes from a {self.family} model with {self.n_layers} layers ({self.model_ref}) but "
                f"{what} is a {family} model with {depth} layers; extract a direction from this model"
            )


class Split(NamedTuple):
    """Prompts of one set, split for extraction, selection and held-out evaluation."""

    train: list[str]
    """Prompts whose activations give the difference in means."""
    val: list[str]
    """Held-out prompts on which candidates are scored."""
    test: list[str]
    """Held-out prompts on which the selected direction is evaluated (empty when none were asked for)."""

    def counts(self) -> str:
        """``"train/val/test"`` sizes, for the line the CLI prints."""
        return f"{len(self.train)}/{len(self.val)}/{len(self.test)}"


def read_prompts(path: str | Path, field: str | None = None) -> list[str]:
    """Prompts via ``diffing.data.load_prompts`` (txt/jsonl/json/csv, AdvBench ``goal``, Alpaca ``instruction``).

    Blank prompts are dropped; a file left with none is an error.
    """
    from diffing.data import load_prompts

    spec = str(path)
    if not spec.startswith("hf:") and not Path(spec).expanduser().is_file():
        raise DiffingError(
            f"prompt file {spec!r} does not exist; give a .txt/.jsonl/.json/.csv file of prompts"
        )
    prompts = [str(p) for p in load_prompts(path, field) if str(p).strip()]
    if not prompts:
        raise DiffingError(
            f"prompt file {spec!r} holds no prompts; give one prompt per line (or JSONL/CSV/JSON)"
        )
    return prompts


def check_sets(harmful: list[str], harmless: list[str]) -> None:
    """Refuse prompt sets that cannot give a direction: empty or identical."""
    if not harmful or not harmless:
        raise DiffingError(
            "both the harmful and the harmless prompt sets need prompts; one is empty"
        )
    if set(harmful) == set(harmless):
        raise DiffingError(
            "the harmful and harmless prompt sets are identical, so their difference in means is zero; "
            "give requests the model refuses as `harmful` and ordinary requests as `harmless`",
            fields=("harmful", "harmless"),
        )


def split_prompts(
    prompts: list[str],
    n_train: int,
    n_val: int,
    *,
    n_test: int = 0,
    min_train: int,
    seed: int,
    name: str,
) -> Split:
    """The one train/validation/test rule of the package: one seeded shuffle, held-out sets first.

    After ``random.Random(seed).shuffle``, the first ``n_test`` prompts are the test set, the
    next ``n_val`` the validation set, and at most ``n_train`` of the rest the train set. The
    held-out sets always get exactly their size, so a file with fewer than
    ``n_test + n_val + n_train`` prompts gives fewer train prompts (all that is left), and
    one with fewer than ``n_test + n_val + min_train`` is an error. The same file with the
    same sizes and seed gives the same sets in every command.
    """
    for what, n in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        if int(n) < 0:
            raise DiffingError(f"{what} is {n}; give a count >= 0")
    if len(prompts) < n_test + n_val + min_train:
        raise DiffingError(
            f"the {name} set has {len(prompts)} prompts, too few to hold out {n_test} for test and {n_val} for "
            f"validation and keep {min_train} for training; give more prompts, separate held-out files, or "
            "smaller `n_val` / `n_test`",
            fields=("n_val", "n_test"),
        )
    order = list(prompts)
    random.Random(seed).shuffle(order)
    held = n_test + n_val
    return Split(train=order[held : held + n_train], val=order[n_test:held], test=order[:n_test])


def split_set(
    prompts: list[str],
    config,
    name: str,
    *,
    val: list[str] | None = None,
    test: list[str] | None = None,
) -> Split:
    """One prompt set split by :func:`split_prompts` with ``config``'s sizes and seed.

    A held-out set given as its own file (``val``, ``test``) is used whole and nothing
    is split off for it; ``config`` is a :class:`~diffing.refusal.config.RefusalConfig`.
    """
    split = split_prompts(
        prompts,
        config.n_train,
        0 if val is not None else config.n_val,
        n_test=0 if test is not None else config.n_test,
        min_train=config.min_train,
        seed=config.seed,
        name=name,
    )
    return Split(
        split.train,
        list(val) if val is not None else split.val,
        list(test) if test is not None else split.test,
    )


def write_json(path: str | Path, obj) -> Path:
    """Write JSON atomically (temporary name, then rename)."""
    return write_json_strict(path, obj, non_finite="null")
