"""Weight statistics: which modules fine-tuning changed, by how much, and in how many directions.

Per parameter tensor (docs/methods.md section 5): the relative Frobenius change
``||W_f - W_b||_F / ||W_b||_F`` and the effective rank of the difference, the number
of singular values holding ``energy`` (default 90%) of ``||W_f - W_b||_F^2``. A LoRA
fine-tune has an effective rank of at most its LoRA rank; full fine-tuning usually
spreads the change over many directions. For adapter pairs the delta is the exact
``scaling * B @ A``.

Two entry points: :func:`weight_stats` on a loaded :class:`~diffing.models.ModelPair`,
and :func:`weight_stats_from_files`, which streams both checkpoints tensor by tensor
from their safetensors files (:mod:`diffing.stats.checkpoint`), so a 70B pair never
needs two full copies in memory.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

import torch

from diffing.weights import iter_deltas


@dataclass
class WeightStatsConfig:
    """How weight statistics are computed."""

    energy: float = 0.9
    """Fraction of the squared Frobenius norm of the delta that the effective rank must hold."""
    rank_max_side: int = 4096
    """Matrices whose smaller side exceeds this get a randomized (``svd_lowrank``) rank estimate."""
    include_unchanged: bool = False
    """Also list tensors whose delta is exactly zero."""


class WeightStat(NamedTuple):
    """How one parameter tensor changed."""

    name: str
    """Parameter name, e.g. ``model.layers.3.mlp.down_proj.weight``."""
    layer: int | None
    """Decoder block the tensor belongs to (None for embeddings, final norm, unembedding)."""
    relative_change: float
    """``||W_f - W_b||_F / ||W_b||_F`` (``inf`` when the base tensor is zero and the delta is not)."""
    effective_rank: int | None
    """Singular values of the delta holding ``energy`` of its squared norm (None for vectors and zero deltas)."""
    rank_exact: bool
    """False when the rank came from a randomized low-rank SVD (a lower bound if it hit the sketch size)."""
    delta_norm: float
    """``||W_f - W_b||_F``."""
    base_norm: float
    """``||W_b||_F``."""
    shape: tuple[int, ...]
    """Tensor shape."""
    relative_error: float | None = None
    """Estimated relative standard error of ``relative_change`` when it came from a sketch (remote
    weights, :mod:`diffing.stats.weight_sketch`); None when exact."""


_LAYER_RE = re.compile(r"\.(?:layers|h|blocks)\.(\d+)\.")


def layer_of(name: str) -> int | None:
    """The decoder-block index in a parameter name (``model.layers.3.mlp...`` -> 3), else None."""
    m = _LAYER_RE.search(name)
    return int(m.group(1)) if m else None


@torch.no_grad()
def effective_rank(
    delta: torch.Tensor, energy: float = 0.9, *, max_side: int = 4096
) -> tuple[int | None, bool]:
    """``(rank, exact)``: how many singular values of ``delta`` hold ``energy`` of ``||delta||_F^2``.

    Vectors and zero matrices have no rank (None). Matrices whose smaller side is
    above ``max_side`` use ``torch.svd_lowrank`` with ``max_side`` components; the
    total energy is still the exact squared Frobenius norm, so an estimate that
    reaches ``max_side`` without holding ``energy`` is a lower bound (exact=False).
    """
    if delta.dim() < 2:
        return None, True
    mat = delta.float().reshape(delta.shape[0], -1)  # [out, in]
    total = float(mat.pow(2).sum())
    if total == 0.0:
        return None, True
    if min(mat.shape) <= max_side:
        s = _singular_values(mat)  # [min(out, in)]
        exact = True
    else:
        _, s, _ = torch.svd_lowrank(mat, q=max_side, niter=2)
        s, exact = s.double(), False
    cum = torch.cumsum(s.pow(2), 0) / total  # fraction of energy held by the top-k
    # tolerance: float rounding must not push a planted rank-k delta to k + 1
    hit = torch.nonzero(cum >= energy - 1e-9)
    rank = int(hit[0]) + 1 if len(hit) else len(s)
    return rank, exact


def _singular_values(mat: torch.Tensor) -> torch.Tensor:
    """``[min(out, in)]`` singular values (float64, descending), from the eigenvalues of the smaller Gram matrix.

    ``eigvalsh`` of the ``[k, k]`` Gram matrix (``k`` the smaller side) costs a fraction of an SVD
    of the ``[out, in]`` matrix, and its eigenvalues are the squared singular values the
    effective rank sums anyway. The Gram product runs in float32 on the matrix's device;
    the eigenvalues are solved in float64 on a CPU and float32 on a GPU (where float64
    solvers are slow), which moves the energy fractions by ~1e-6 of the largest at most.
    """
    gram = mat @ mat.T if mat.shape[0] <= mat.shape[1] else mat.T @ mat  # [k, k]
    solve_dtype = torch.float32 if gram.device.type == "cuda" else torch.float64
    ev = torch.linalg.eigvalsh(gram.to(solve_dtype)).double().clamp_min(0)  # [k] ascending
    return ev.flip(0).sqrt()


@torch.no_grad()
def _stat(name: str, w_b: torch.Tensor, delta: torch.Tensor, cfg: WeightStatsConfig) -> WeightStat:
    delta, w_b = delta.detach(), w_b.detach()
    dn = float(delta.float().norm())
    bn = float(w_b.float().norm())
    rel = dn / bn if bn > 0 else (0.0 if dn == 0 else float("inf"))
    rank, exact = (
        effective_rank(delta, cfg.energy, max_side=cfg.rank_max_side) if dn > 0 else (None, True)
    )
    return WeightStat(name, layer_of(name), rel, rank, exact, dn, bn, tuple(delta.shape))


def rank_weight_stats(
    deltas: Iterable[tuple[str, torch.Tensor, torch.Tensor]],
    config: WeightStatsConfig | None = None,
) -> list[WeightStat]:
    """Statistics of ``(name, W_b, delta)`` triples, ranked by relative change (largest first)."""
    cfg = config or WeightStatsConfig()
    out = []
    for name, w_b, delta in deltas:
        st = _stat(name, w_b, delta, cfg)
        # a NaN/inf change is never "unchanged": dropping it would report a broken tensor as unmoved
        if st.delta_norm > 0 or not math.isfinite(st.delta_norm) or cfg.include_unchanged:
            out.append(st)
    return sorted(out, key=lambda s: (-s.relative_change, s.name))


def weight_stats(pair, config: WeightStatsConfig | None = None) -> list[WeightStat]:
    """Ranked weight statistics of a loaded pair (adapter deltas exact, one tensor at a time)."""
    return rank_weight_stats(iter_deltas(pair), config)


def weight_stats_from_files(
    base_ref: str, ft_ref: str, config: WeightStatsConfig | None = None
) -> list[WeightStat]:
    """Ranked weight statistics streamed from two checkpoints' safetensors files.

    ``base_ref`` and ``ft_ref`` are local folders or hub ids (a cached snapshot is
    used; offline mode is respected). ``ft_ref`` may be a PEFT adapter folder, in which
    case the deltas are the adapter's exact ``scaling * B @ A``. At most one tensor of
    each checkpoint is in memory at a time.
    """
    from diffing.stats.checkpoint import stream_deltas

    return rank_weight_stats(stream_deltas(base_ref, ft_ref), config)


def per_layer_change(stats: Iterable[WeightStat], n_layers: int | None = None) -> list[dict]:
    """Per decoder block: ``sqrt(sum ||delta||^2) / sqrt(sum ||W_b||^2)`` over its changed tensors.

    Unchanged tensors are not in ``stats`` by default, so the denominator covers only
    changed tensors of the block; ``n_layers`` pads blocks with no change as 0.
    """
    acc: dict[int, list[float]] = {}
    for s in stats:
        if s.layer is None:
            continue
        d, b = acc.setdefault(s.layer, [0.0, 0.0])
        acc[s.layer] = [d + s.delta_norm**2, b + s.base_norm**2]
    top = max([*acc, (n_layers or 0) - 1], default=-1)
    out = []
    for layer in range(top + 1):
        d, b = acc.get(layer, [0.0, 0.0])
        out.append(
            {
                "layer": layer,
                "relative_change": (d**0.5 / b**0.5) if b > 0 else 0.0,
                "delta_norm": d**0.5,
            }
        )
    return out


def stats_to_json(stats: list[WeightStat]) -> list[dict]:
    """JSON-ready rows (``inf`` becomes None)."""
    rows = []
    for s in stats:
        row = s._asdict()
        row["shape"] = list(s.shape)
        if row["relative_change"] == float("inf"):
            row["relative_change"] = None
        rows.append(row)
    return rows
