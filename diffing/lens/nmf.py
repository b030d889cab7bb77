"""Non-negative matrix factorisation by multiplicative updates (Lee and Seung 2001), in torch.

``A ~ W H`` with ``A`` ``[n, m]``, ``W`` ``[n, r]``, ``H`` ``[r, m]``, all non-negative, minimising
``||A - W H||_F^2``. The updates keep every entry non-negative and never increase the error; a
fixed seed makes the factors reproducible. Small and dependency-free (no scikit-learn).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from diffing.errors import DiffingError

EPS = 1e-12
"""Added to denominators so zero rows or columns do not divide by zero."""


class NMFResult(NamedTuple):
    """The factors of ``A ~ W H``."""

    w: torch.Tensor
    """``[n, r]`` weight of each cluster in each row."""
    h: torch.Tensor
    """``[r, m]`` each cluster's profile over the columns, rows scaled to unit L2 norm (``w`` compensates)."""
    relative_error: float
    """``||A - W H||_F / ||A||_F`` after the last iteration."""


@torch.no_grad()
def nmf(a: torch.Tensor, rank: int, *, iterations: int = 300, seed: int = 0) -> NMFResult:
    """Factorise the non-negative ``a`` ``[n, m]`` into ``rank`` parts (float64, on ``a``'s device)."""
    if a.ndim != 2 or rank < 1:
        raise DiffingError(
            f"NMF needs a 2-D matrix and a rank >= 1 (got shape {tuple(a.shape)}, rank {rank})"
        )
    if bool((a < 0).any()) or not bool(torch.isfinite(a).all()):
        raise DiffingError("NMF needs a finite, non-negative matrix; clip the values first")
    a = a.double()
    n, m = a.shape
    gen = torch.Generator().manual_seed(int(seed))
    scale = (a.mean() / rank).clamp_min(EPS).sqrt()
    w = (torch.rand(n, rank, generator=gen, dtype=torch.float64) * scale).to(a.device)  # [n, r]
    h = (torch.rand(rank, m, generator=gen, dtype=torch.float64) * scale).to(a.device)  # [r, m]
    for _ in range(iterations):
        h *= (w.T @ a) / (w.T @ w @ h + EPS)  # [r, m]
        w *= (a @ h.T) / (w @ (h @ h.T) + EPS)  # [n, r]
    norms = h.norm(dim=1, keepdim=True).clamp_min(EPS)  # [r, 1]
    h, w = h / norms, w * norms.T
    denom = float(a.norm())
    err = float((a - w @ h).norm()) / denom if denom > 0 else 0.0
    return NMFResult(w, h, err)
