"""Named Hugging Face datasets: short names for ``--data``, ``--harmful`` and ``--harmless``.

``diffing analyze BASE FT --harmful advbench`` reads the AdvBench prompts from the
hub instead of the built-in set. Each name maps to one ``hf:`` spec (dataset id and
split), an optional dataset configuration and the field holding the text; the table
is :data:`NAMED` and is documented in ``docs/data.md``. Without network (or with
``HF_HUB_OFFLINE=1``) a named dataset fails with one line naming the built-in
alternative.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from diffing.errors import DiffingError

HUB_HOST = "huggingface.co"
"""Host probed to tell whether the hub can be reached."""


@dataclass(frozen=True)
class NamedDataset:
    """One named dataset."""

    kind: str
    """Which option takes it: ``data`` (a corpus), ``harmful`` or ``harmless`` (prompt sets)."""
    spec: str
    """The ``hf:NAME[:split]`` spec it stands for."""
    config: str | None
    """The dataset configuration (None: the dataset's only or default one)."""
    field: str | None
    """Field holding the prompt (prompt sets; None: the loader's default fields)."""
    about: str
    """One line saying what it is."""


NAMED: dict[str, NamedDataset] = {
    "fineweb": NamedDataset(
        "data", "hf:HuggingFaceFW/fineweb:train", None, None, "web text (FineWeb), streamed"
    ),
    "fineweb-edu": NamedDataset(
        "data",
        "hf:HuggingFaceFW/fineweb-edu:train",
        None,
        None,
        "educational web text (FineWeb-Edu), streamed",
    ),
    "lmsys-chat": NamedDataset(
        "data",
        "hf:lmsys/lmsys-chat-1m:train",
        None,
        None,
        "real user conversations with chat models (gated: accept the licence on the hub first)",
    ),
    "ultrachat": NamedDataset(
        "data",
        "hf:HuggingFaceH4/ultrachat_200k:train_sft",
        None,
        None,
        "synthetic multi-turn conversations (UltraChat 200k)",
    ),
    "advbench": NamedDataset(
        "harmful", "hf:walledai/AdvBench:train", None, "prompt", "520 harmful behaviours (AdvBench)"
    ),
    "harmbench": NamedDataset(
        "harmful",
        "hf:walledai/HarmBench:train",
        "standard",
        "prompt",
        "HarmBench standard behaviours",
    ),
    "jailbreakbench": NamedDataset(
        "harmful",
        "hf:JailbreakBench/JBB-Behaviors:harmful",
        "behaviors",
        "Goal",
        "100 harmful behaviours (JailbreakBench)",
    ),
    "alpaca": NamedDataset(
        "harmless",
        "hf:tatsu-lab/alpaca:train",
        None,
        "instruction",
        "52k harmless instructions (Alpaca)",
    ),
}
"""Every named dataset, by name."""


def is_named(value: str, kind: str) -> bool:
    """Whether ``value`` is the name of a dataset of ``kind`` (``data``, ``harmful``, ``harmless``)."""
    entry = NAMED.get(str(value).strip().lower())
    return entry is not None and entry.kind == kind


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub can be reached (False when offline mode is set)."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0") or os.environ.get(
        "HF_DATASETS_OFFLINE", "0"
    ) not in ("", "0"):
        return False
    try:
        with socket.create_connection((HUB_HOST, 443), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_named(value: str, kind: str) -> NamedDataset:
    """The table entry for ``value``; DiffingError when offline (naming the built-in alternative)."""
    name = str(value).strip().lower()
    entry = NAMED.get(name)
    if entry is None or entry.kind != kind:
        known = ", ".join(n for n, e in NAMED.items() if e.kind == kind)
        raise DiffingError(
            f"`{kind}` {value}: not a named dataset; named ones: {known}", fields=(kind,)
        )
    if not hub_reachable():
        why = (
            "offline mode is set (HF_HUB_OFFLINE)"
            if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0")
            else f"{HUB_HOST} cannot be reached"
        )
        raise DiffingError(
            f"`{kind}` {name} reads {entry.spec} from the Hugging Face hub, but {why}; "
            f"omit `{kind}` to use the built-in {'corpus' if kind == 'data' else 'set'}",
            fields=(kind,),
        )
    return entry


def load_named_prompts(value: str, kind: str, limit: int | None = None) -> list[str]:
    """The prompts of a named ``harmful``/``harmless`` dataset (at most ``limit``), read from the hub."""
    from diffing.data.loaders import HF_PREFIX, _pick

    entry = resolve_named(value, kind)
    name, _, split = entry.spec[len(HF_PREFIX) :].partition(":")
    try:
        import datasets
    except ImportError as err:
        raise DiffingError(
            f"`{kind}` {value} needs the optional 'datasets' package: pip install 'model-diffing[data]'",
            fields=(kind,),
        ) from err
    try:
        ds = datasets.load_dataset(name, entry.config, split=split or "train")
    except Exception as err:  # noqa: BLE001 - network, auth, renamed dataset: all user-facing
        raise DiffingError(
            f"`{kind}` {value}: could not load {name!r} from the hub ({err}); "
            f"omit `{kind}` to use the built-in set",
            fields=(kind,),
        ) from err
    rows = ds if limit is None else ds.select(range(min(limit, len(ds))))
    return [_pick(dict(r), entry.field, f"{entry.spec}: row {i}") for i, r in enumerate(rows)]
