"""Checks on loaded checkpoints that shapes alone cannot catch: non-finite weights, adapters on the wrong base.

A NaN or infinite weight makes every downstream statistic meaningless while still
"running" (a NaN delta compares as no change), and a LoRA adapter trained for one base
fits any base of the same shapes. Both are checked when a pair is loaded, so the user
hears about them before hours of harvesting and training.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch

from diffing.errors import DiffingError
from diffing.hashing import weights_hash
from diffing.loading import looks_local

log = logging.getLogger(__name__)


def first_nonfinite(model: torch.nn.Module) -> str | None:
    """Name of the first parameter holding a NaN or infinity, or None.

    One ``torch.isfinite(p).all()`` per tensor, on the device the tensor lives on;
    parameters on the ``meta`` device (config-only or offloaded models) are skipped.
    """
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.device.type == "meta" or not p.is_floating_point():
                continue
            if not bool(torch.isfinite(p).all()):
                return name
    return None


def check_finite(model: torch.nn.Module, ref: str, *, allow_nonfinite: bool = False) -> None:
    """DiffingError naming ``ref`` and its first non-finite parameter (a warning with ``allow_nonfinite``)."""
    bad = first_nonfinite(model)
    if bad is None:
        return
    message = f"model {ref!r} has non-finite values (NaN or inf) in parameter {bad}"
    if allow_nonfinite:
        warnings.warn(message + "; continuing because allow_nonfinite=True", stacklevel=3)
        return
    raise DiffingError(
        f"{message}: the checkpoint is broken (a failed save or a diverged fine-tune); "
        "re-export it (from Python, load with allow_nonfinite=True to inspect it anyway)"
    )


def _hub_id(ref: str) -> str:
    """A reference as a comparable hub id: a Hugging Face cache snapshot folder gives its repo id."""
    for part in Path(ref).expanduser().parts:
        if part.startswith("models--"):  # <cache>/models--org--name/snapshots/<commit>
            return part.removeprefix("models--").replace("--", "/").lower()
    return str(ref).strip().rstrip("/").lower()


def _same_ref(a: str, b: str) -> bool:
    """Whether two model references name the same thing (same folder, or same hub id)."""
    if looks_local(a) and looks_local(b):
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    return _hub_id(a) == _hub_id(b)


def check_adapter_base(adapter: str, config: dict, base: str) -> str | None:
    """Compare the base an adapter records with the one it is applied to.

    Returns None when they agree, a warning text when they differ by name only (the
    weights cannot be compared here, e.g. a hub id against a folder), and raises
    DiffingError when both are local folders whose weights differ (an adapter applied
    to a base it was not trained on changes the model in ways nobody trained).
    """
    recorded = config.get("base_model_name_or_path")
    if not recorded or _same_ref(str(recorded), str(base)):
        return None
    both_local = all(
        looks_local(r) and Path(r).expanduser().is_dir() for r in (str(recorded), str(base))
    )
    if both_local:
        if weights_hash(recorded) != weights_hash(base):
            raise DiffingError(
                f"adapter {str(adapter)!r} was trained on {str(recorded)!r} (base_model_name_or_path "
                f"in its adapter_config.json), whose weights differ from the base given, {str(base)!r}; "
                "apply it to the base it was trained on"
            )
        return None  # the same weights in another folder
    return (
        f"adapter {str(adapter)!r} records base model {str(recorded)!r}, but it is applied to "
        f"{str(base)!r}; check that this is the base it was trained on"
    )
