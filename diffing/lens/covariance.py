"""Streaming second moments of difference vectors, in float64, and their eigendecomposition.

Sums (count, ``sum x``, ``sum x x^T``) add exactly across batches, so the corpus never has to
fit in memory: memory is ``d_model^2`` doubles per layer whatever the number of tokens.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class Decomposition(NamedTuple):
    """Uncentred and centred principal directions of a set of vectors."""

    count: int
    """Vectors accumulated."""
    mean: torch.Tensor
    """``[d]`` their mean (the Activation Difference Lens vector when they are differences)."""
    first: torch.Tensor
    """``[d]`` unit top eigenvector of the uncentred second moment ``E[x x^T]``, signed so ``first . mean >= 0``."""
    first_ratio: float
    """Share of ``E[||x||^2]`` along ``first``."""
    mean_share: float
    """Share of ``E[||x||^2]`` that is the mean's (``||mean||^2 / E[||x||^2]``): 1 for a constant shift."""
    components: torch.Tensor
    """``[k, d]`` unit eigenvectors of the covariance ``E[(x - mean)(x - mean)^T]``, largest first,
    each signed so ``component . mean >= 0``."""
    variance: torch.Tensor
    """``[k]`` their eigenvalues (variance along each)."""
    variance_ratio: torch.Tensor
    """``[k]`` eigenvalue over total variance (the explained variance ratio)."""
    total_variance: float
    """Trace of the covariance."""


class SecondMoments:
    """Running ``count``, ``sum x`` and ``sum x x^T`` of ``d``-dimensional vectors in float64."""

    def __init__(self, d: int):
        self.d = d
        self.count = 0
        self.sum: torch.Tensor | None = None  # [d] float64, on the first batch's device
        self.outer: torch.Tensor | None = None  # [d, d] float64

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Add rows ``x`` ``[n, d]`` (summed on their own device, in float64)."""
        if x.shape[0] == 0:
            return
        x = x.double()  # [n, d]
        if self.sum is None:
            self.sum = torch.zeros(self.d, dtype=torch.float64, device=x.device)
            self.outer = torch.zeros(self.d, self.d, dtype=torch.float64, device=x.device)
        x = x.to(self.sum.device)
        self.sum += x.sum(0)
        self.outer += x.T @ x
        self.count += int(x.shape[0])

    @torch.no_grad()
    def decompose(self, k: int) -> Decomposition:
        """Eigendecomposition of the uncentred second moment and of the covariance (``k`` components)."""
        n = max(self.count, 1)
        d = self.d
        s = self.sum.cpu() if self.sum is not None else torch.zeros(d, dtype=torch.float64)
        o = self.outer.cpu() if self.outer is not None else torch.zeros(d, d, dtype=torch.float64)
        mean = s / n  # [d]
        second = (o + o.T) / (2 * n)  # [d, d] symmetrised against rounding
        cov = second - torch.outer(mean, mean)  # [d, d]
        energy = float(second.diagonal().sum())
        vals_u, vecs_u = torch.linalg.eigh(second)  # ascending
        first = _orient(vecs_u[:, -1], mean)
        vals_c, vecs_c = torch.linalg.eigh(cov)
        k = min(k, d)
        variance = vals_c.flip(0)[:k].clamp_min(0)  # [k]
        comps = vecs_c.flip(1)[:, :k].T.contiguous()  # [k, d]
        comps = torch.stack([_orient(c, mean) for c in comps]) if k else comps
        total = float(cov.diagonal().sum().clamp_min(0))
        return Decomposition(
            count=self.count,
            mean=mean.float(),
            first=first.float(),
            first_ratio=float(vals_u[-1]) / energy if energy > 0 else 0.0,
            mean_share=float(mean @ mean) / energy if energy > 0 else 0.0,
            components=comps.float(),
            variance=variance.float(),
            variance_ratio=(variance / total).float()
            if total > 0
            else torch.zeros_like(variance).float(),
            total_variance=total,
        )


def _orient(v: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """``v`` or ``-v``, whichever has a non-negative dot product with ``mean`` (eigenvectors have no sign)."""
    return -v if float(v @ mean) < 0 else v
