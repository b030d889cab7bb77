"""Which modules fine-tuning changed, measured on the weights.

Per module: relative Frobenius change ``||W_f - W_b||_F / ||W_b||_F``. For a pair
whose fine-tuned side came from a LoRA adapter, the delta of each adapted module is
the adapter's exact ``scaling * B @ A`` (docs/methods.md section 5). Parameters are
compared one tensor at a time, so no third copy of the model is made.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import torch


class ModuleChange(NamedTuple):
    """How much one parameter tensor changed."""

    name: str
    """Parameter name, e.g. ``model.layers.3.mlp.down_proj.weight``."""
    relative_change: float
    """``||W_f - W_b||_F / ||W_b||_F`` (``inf`` when the base tensor is zero and the fine-tuned is not)."""
    delta_norm: float
    """``||W_f - W_b||_F``."""
    numel: int
    """Number of entries."""


def _relative(delta_norm: float, base_norm: float) -> float:
    if base_norm > 0:
        return delta_norm / base_norm
    return 0.0 if delta_norm == 0 else float("inf")


@torch.no_grad()
def iter_deltas(pair) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
    """``(name, W_b, W_f - W_b)`` for every parameter both models share, one tensor at a time.

    The delta is float32; for modules a LoRA adapter touched it is the adapter's exact
    ``scaling * B @ A`` rather than a subtraction of two rounded merged weights.
    """
    base = dict(pair.hf("base").named_parameters())
    for name, w_f in pair.hf("finetuned").named_parameters():
        w_b = base.get(name)
        if w_b is None or w_b.shape != w_f.shape:
            continue
        module = name.rsplit(".", 1)[0]
        if pair.adapter is not None and module in pair.adapter.factors and name.endswith(".weight"):
            delta = pair.adapter.delta(module).to(w_b.device)
        else:
            delta = w_f.float() - w_b.float()
        yield name, w_b, delta


@torch.no_grad()
def weight_changes(pair, *, include_unchanged: bool = False) -> list[ModuleChange]:
    """Every parameter's change between the pair's models, ranked largest first."""
    out = []
    for name, w_b, delta in iter_deltas(pair):
        dn = float(delta.norm())
        if dn == 0 and not include_unchanged:
            continue
        out.append(ModuleChange(name, _relative(dn, float(w_b.float().norm())), dn, w_b.numel()))
    return sorted(out, key=lambda c: -c.relative_change)
