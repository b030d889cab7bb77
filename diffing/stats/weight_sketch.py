"""Weight statistics of a pair whose weights stay on a server (NDIF): random sketches.

A remote trace returns only what it saves, and a 70B model's weights (140 GB in bfloat16)
cannot come back. So each weight matrix ``W [out, in]`` is compressed where it lives into

``S = Lᵀ W R``  ``[k, k]``,

with ``L [out, k]`` and ``R [in, k]`` random ±1 matrices that every machine rebuilds from
the same seed (an integer hash of the row and column indices, so the signs depend neither on
torch's random generators nor on the device), computed in float64 on the server. The sketch
is linear, so the two models' sketches give the delta's exactly: ``S_f − S_b = Lᵀ (W_f − W_b) R``;
and for independent random signs ``E ||Lᵀ Δ R||_F² = k² ||Δ||_F²`` (random projections preserve
squared norms in expectation: Johnson-Lindenstrauss; Achlioptas 2003 for ±1 entries), so

``||Δ||_F ≈ ||S_f − S_b||_F / k``.

The base norm ``||W_b||_F`` is computed exactly on the server, and vectors (norm gains,
biases) are small enough to come back whole, so their statistics are exact. The error of a
sketched delta norm shrinks with ``k`` and with the delta's stable rank: about
``1/sqrt(k)`` relative for a rank-1 delta, much less for the spread-out deltas of full
fine-tuning; each estimate carries its own standard error, estimated from the spread of the
sketch's rows and columns. The effective rank is read from the singular values of the
sketched delta (a rank-r delta has a rank-r sketch when r ≤ k, so a LoRA's low rank shows;
the energy split is an estimate; above ``k / 4`` the sketch cannot tell a rank from a
full-rank delta, and the rank is reported as unknown).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from diffing.errors import DiffingError
from diffing.remote import input_device, trace_options
from diffing.stats.config import SKETCH_SIZE  # noqa: F401 - re-exported
from diffing.stats.weights import WeightStat, WeightStatsConfig, effective_rank, layer_of

SEED = 0x5EED
"""Seed of the sign matrices; both models must use the same one."""
_MASK = 0xFFFFFFFF
_CHUNK = 1 << 24
"""Entries of ``W`` converted to float64 at a time on the server (128 MiB)."""
RANK_RESOLVED = 4
"""An effective rank is reported only up to ``k / RANK_RESOLVED``: a flat, full-rank delta's
``[k, k]`` sketch itself holds 90% of its energy in about ``k / 2`` directions, so a larger
sketched rank says only "spread over many directions" (reported as None)."""
_SAME = 1e-12
"""A sketched relative change below this is float64 rounding (e.g. two GPUs summing in another
order), not a change: one bfloat16 step in one entry of a 10^8-entry matrix is ~1e-8."""


def _mul32(x: torch.Tensor, a: int) -> torch.Tensor:
    """``x * a mod 2**32`` for ``x`` in ``[0, 2**32)`` without int64 overflow (two 16-bit halves)."""
    lo = x * (a & 0xFFFF)
    hi = ((x * (a >> 16)) & 0xFFFF) << 16
    return (lo + hi) & _MASK


def _fmix32(x: torch.Tensor) -> torch.Tensor:
    """MurmurHash3's 32-bit finaliser: a bijection of ``[0, 2**32)`` that mixes every bit."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x85EBCA6B)
    x = x ^ (x >> 13)
    x = _mul32(x, 0xC2B2AE35)
    return x ^ (x >> 16)


def signs(rows: torch.Tensor, k: int, salt: int) -> torch.Tensor:
    """``[len(rows), k]`` float64 ±1 entries, a fixed function of (row index, column, ``salt``).

    Integer arithmetic only, so the same on every device and torch version: the server
    rebuilds the sign matrices the client's tests check.
    """
    i = rows.to(torch.int64)[:, None] & _MASK  # [n, 1]
    j = torch.arange(k, dtype=torch.int64, device=rows.device)[None, :]  # [1, k]
    h = _fmix32(_fmix32(i ^ (salt & _MASK)) ^ _mul32(j + 1, 0x9E3779B9))  # [n, k]
    return 1.0 - 2.0 * ((h >> 15) & 1).to(torch.float64)


def sketch_matrix(w: torch.Tensor, k: int, seed: int = SEED) -> torch.Tensor:
    """``[k, k]`` float64 ``Lᵀ W R`` of a matrix, on its device; a tensor of more dimensions (stacked
    experts ``[n, out, in]``) is sketched as ``[n * out, in]``, which keeps ``R`` small.

    ``L`` and ``R`` are :func:`signs` with salts derived from ``seed`` (one for each side),
    rebuilt chunk by chunk so at most ``_CHUNK`` entries of ``W`` are in float64 at once.
    """
    w = w.detach().reshape(-1, w.shape[-1])  # [out, in]
    out_dim, in_dim = w.shape
    dev = w.device
    right = signs(torch.arange(in_dim, device=dev), k, seed * 2 + 1)  # [in, k]
    acc = torch.zeros(k, k, dtype=torch.float64, device=dev)
    step = max(1, _CHUNK // max(in_dim, 1))
    for start in range(0, out_dim, step):
        rows = torch.arange(start, min(start + step, out_dim), device=dev)
        left = signs(rows, k, seed * 2)  # [chunk, k]
        acc += left.T @ (w[start : start + len(rows)].double() @ right)  # [k, k]
    return acc


def sketch_parameters(params: Sequence[torch.Tensor], k: int, seed: int = SEED):
    """What the server returns for ``params``: ``(sketches [n_matrices, k, k], squared norms [n_params],
    vectors [total entries of the 1-D params])``, all float64 on the CPU, in ``params``' order."""
    sketches, norms, vectors = [], [], []
    for p in params:
        norms.append(p.detach().double().pow(2).sum().cpu())
        if p.dim() >= 2:
            sketches.append(sketch_matrix(p, k, seed).cpu())
        else:
            vectors.append(p.detach().double().reshape(-1).cpu())
    empty = torch.zeros(0, k, k, dtype=torch.float64)
    return (
        torch.stack(sketches) if sketches else empty,
        torch.stack(norms),
        torch.cat(vectors) if vectors else torch.zeros(0, dtype=torch.float64),
    )


def _resolve(lm, name: str):
    """The parameter ``name`` of an nnsight model (inside a trace: the server's real tensor)."""
    obj = lm
    for part in name.split("."):
        obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
    return obj


@torch.no_grad()
def sketch_model(lm, names: Sequence[str], k: int = SKETCH_SIZE, seed: int = SEED):
    """:func:`sketch_parameters` of ``lm``'s parameters ``names``, computed where the weights are.

    One traced job per model (a one-token input; the forward is stopped before it runs a
    layer): on NDIF only the sketches, norms and vectors leave the server.
    """
    ids = torch.zeros(1, 1, dtype=torch.long, device=input_device(lm))
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    with lm.trace(inputs, **trace_options(lm)) as tracer:
        sk, sq, vec = sketch_parameters([_resolve(lm, n) for n in names], k, seed)
        sk, sq, vec = sk.save(), sq.save(), vec.save()
        tracer.stop()  # the weights are all it needs: no forward pass
    value = lambda x: getattr(x, "value", x).detach().cpu()  # noqa: E731
    return value(sk), value(sq), value(vec)


def relative_error(sketch: torch.Tensor) -> float:
    """Approximate relative standard error of ``||sketch||_F / k`` as an estimate of ``||Δ||_F``.

    The rows of ``Lᵀ Δ R`` are independent given ``R`` (and the columns given ``L``), so the
    spread of their squared norms estimates each side's variance of the squared norm; the
    delta method halves the relative error for the square root.
    """
    k = sketch.shape[0]
    sq = sketch.pow(2)
    total = float(sq.sum())
    if total == 0.0 or k < 2:
        return 0.0
    var = sum(float(sq.sum(d).var()) for d in (0, 1)) * k  # variance of the total, both sides
    return 0.5 * (var**0.5) / total


def sketched_weight_stats(
    pair, config: WeightStatsConfig | None = None, *, k: int = SKETCH_SIZE, seed: int = SEED
) -> list[WeightStat]:
    """Ranked weight statistics of a pair whose weights may be on NDIF, from sketches (module docstring).

    Matrices: relative change and effective rank estimated (``rank_exact`` False, ``relative_error``
    the estimate's standard error); vectors and every base norm: exact.
    """
    if int(k) < 1:
        raise DiffingError(f"the weight sketch size must be a positive integer, got {k}")
    cfg = config or WeightStatsConfig()
    shapes_b = {n: tuple(p.shape) for n, p in pair.hf("base").named_parameters()}
    shapes_f = {n: tuple(p.shape) for n, p in pair.hf("finetuned").named_parameters()}
    names = [n for n, s in shapes_f.items() if shapes_b.get(n) == s]
    sk_b, sq_b, vec_b = sketch_model(pair.base, names, k, seed)
    sk_f, sq_f, vec_f = sketch_model(pair.finetuned, names, k, seed)
    out, m, v = [], 0, 0
    for i, name in enumerate(names):
        shape = shapes_b[name]
        base_norm = float(sq_b[i]) ** 0.5
        if len(shape) >= 2:
            delta = sk_f[m] - sk_b[m]  # [k, k] = Lᵀ (W_f - W_b) R
            m += 1
            dn = float(delta.norm()) / k
            if dn <= _SAME * base_norm:  # float64 rounding of two servers' sums, not a change
                dn = 0.0
            rank, _ = effective_rank(delta, cfg.energy) if dn > 0 else (None, True)
            if rank is not None and (rank > k // RANK_RESOLVED or len(shape) > 2):
                rank = None  # a full-rank delta's sketch also reads ~k/2: the sketch cannot tell
            se, exact = relative_error(delta), False
        else:
            n = math.prod(shape)
            delta = vec_f[v : v + n] - vec_b[v : v + n]
            v += n
            dn, rank, se, exact = float(delta.norm()), None, None, True
        if dn == 0 and not cfg.include_unchanged:
            continue
        rel = dn / base_norm if base_norm > 0 else (0.0 if dn == 0 else float("inf"))
        out.append(WeightStat(name, layer_of(name), rel, rank, exact, dn, base_norm, shape, se))
    return sorted(out, key=lambda s: (-s.relative_change, s.name))
