"""Latent Scaling (Minder et al. 2025, arXiv 2504.02922, section 3): is a "chat-only" latent really new?

A latent whose base decoder is (near) zero can mean three things. The fine-tuned
model has a concept the base lacks (**genuine**); or the base does carry the
concept but the sparsity penalty zeroed its base decoder (**complete shrinkage**);
or the base represents it through other latents (**latent decoupling**). Latent
Scaling tells them apart by fitting, for latent ``j`` and model ``m``, one scalar

    β = argmin_β Σ_t || β f_j(x_t) d_j − y_t ||²
      = Σ_t f_j(x_t) ⟨d_j, y_t⟩ / (||d_j||² Σ_t f_j(x_t)²)

over the tokens where ``j`` is active, with ``d_j`` the latent's decoder vector in
its *own* model (the fine-tuned one for chat-only latents, as in the paper; the
base one for base-only latents, the mirror case), for two targets:

* error: ``y = x^m − x̂^m + f_j d_j^m`` (what the crosscoder misses, plus j's own part);
* reconstruction without j: ``y = x̂^m − f_j d_j^m`` (what the other latents explain).

Ratios ``ν_ε = β_ε^other / β_ε^own`` and ``ν_r = β_r^other / β_r^own`` (other = the
model the latent is *not* specific to). Near 0: genuine. High ``ν_ε``: complete
shrinkage. High ``ν_r``: latent decoupling.

Streaming and vectorised: with ``e = x − x̂``, ``⟨d_j, y⟩`` is ``⟨d_j, e⟩ + f_j⟨d_j, d_j^m⟩``
(error) or ``⟨d_j, x̂⟩ − f_j⟨d_j, d_j^m⟩`` (reconstruction). Since ``f_j = 0`` off
the active tokens, each batch needs only the projections of ``x`` and ``x̂`` on
``d_j`` at the (token, latent) pairs where a selected latent is active: one batched
product over those pairs updates every latent's sums at once, and no activation is
kept between batches.

Deviation from the paper, documented in docs/crosscoder-analysis.md: a genuinely
new latent has ``β_r^own ≈ 0`` too, which makes ``ν_r`` a ratio of two noise terms.
The denominators are therefore floored at :attr:`ScalingThresholds.ratio_floor`
(β is dimensionless: ``β_ε^own ≈ 1`` for a latent the crosscoder reconstructs well).
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import torch

from diffing.crosscoder.analysis import SparseCodes, sparse_codes
from diffing.crosscoder.analysis_config import ScalingThresholds  # noqa: F401 - re-exported

FLAGS: tuple[str, ...] = ("genuine", "complete_shrinkage", "latent_decoupling", "inactive")
"""Latent Scaling verdicts (``inactive``: the latent never fired on the tokens read)."""


class LatentScaling(NamedTuple):
    """Latent Scaling results for a set of latents (all tensors indexed like ``latents``)."""

    latents: torch.Tensor
    """``[k]`` latent indices."""
    own: torch.Tensor
    """``[k]`` the model each latent is specific to (1 fine-tuned for chat-only, 0 base for base-only)."""
    beta_error: torch.Tensor
    """``[2, k]`` β for the error target in the base (row 0) and the fine-tuned model (row 1)."""
    beta_recon: torch.Tensor
    """``[2, k]`` β for the reconstruction-without-j target, base and fine-tuned."""
    nu_error: torch.Tensor
    """``[k]`` ν_ε = β_ε^other / β_ε^own (floored denominator)."""
    nu_recon: torch.Tensor
    """``[k]`` ν_r = β_r^other / β_r^own (floored denominator)."""
    n_active: torch.Tensor
    """``[k]`` tokens on which the latent was active (the fit's sample size)."""
    reliable: torch.Tensor
    """``[k]`` bool: at least ``min_active`` active tokens."""
    flags: list[str]
    """Verdict per latent, one of :data:`FLAGS`."""


class LatentScalingAccumulator:
    """Streaming sums for Latent Scaling of selected latents of a two-model crosscoder.

    Args:
        W_dec: ``[2, n, d]`` decoders (normalised activation space).
        latents: indices of the latents to fit.
        own: for each latent, the model it is specific to (1 fine-tuned, 0 base).
    """

    def __init__(self, W_dec: torch.Tensor, latents: torch.Tensor, own: torch.Tensor):
        self.latents = torch.as_tensor(latents, dtype=torch.long)
        self.own = torch.as_tensor(own, dtype=torch.long)
        W = W_dec.detach().float()
        k = len(self.latents)
        # [k, d] each latent's decoder vector in its own model
        self.D = W[self.own, self.latents] if k else W.new_zeros(0, W.shape[-1])
        self.D_sq = (self.D * self.D).sum(-1)  # [k] ||d_j||²
        # [2, k] ⟨d_j, d_j^m⟩ for both models
        self.cross = torch.stack([(self.D * W[m, self.latents]).sum(-1) for m in range(2)])
        self.num_error = torch.zeros(2, k, dtype=torch.float64)
        self.num_recon = torch.zeros(2, k, dtype=torch.float64)
        self.f_sq = torch.zeros(k, dtype=torch.float64)
        self.n_active = torch.zeros(k, dtype=torch.long)
        # [n] latent -> its position in the selection, -1 when not selected
        self.pos_of = torch.full((W.shape[1],), -1, dtype=torch.long)
        self.pos_of[self.latents] = torch.arange(k)

    @torch.no_grad()
    def update(self, x: torch.Tensor, x_hat: torch.Tensor, f) -> None:
        """Add one batch: activations ``x [B, 2, d]``, reconstructions ``x_hat [B, 2, d]``, latents ``f [B, n]``.

        ``f`` may also be its :class:`~diffing.crosscoder.analysis.SparseCodes`. Only the
        active entries of the selected latents are touched: for each, the projections
        of its token's ``x`` and ``x̂`` on the latent's decoder vector (``[E, 4]``) are
        summed into the latent's numerators.
        """
        if len(self.latents) == 0:
            return
        codes = f if isinstance(f, SparseCodes) else sparse_codes(f)
        pos = self.pos_of.to(codes.cols.device)[codes.cols]  # [nnz] position in the selection
        keep = pos >= 0
        rows, pos, v = codes.rows[keep], pos[keep].cpu(), codes.vals[keep].float()  # [E]
        D = self.D[pos].to(x.device)  # [E, d]
        p_x = torch.einsum("emd,ed->em", x[rows].float(), D).cpu()  # [E, 2] ⟨d_j, x^m⟩
        p_hat = torch.einsum("emd,ed->em", x_hat[rows].float(), D).cpu()  # [E, 2] ⟨d_j, x̂^m⟩
        v = v.cpu()
        v2 = v * v  # [E]
        cross = self.cross[:, pos].T  # [E, 2] ⟨d_j, d_j^m⟩
        err = v[:, None] * (p_x - p_hat) + v2[:, None] * cross  # [E, 2]
        rec = v[:, None] * p_hat - v2[:, None] * cross  # [E, 2]
        self.num_error.index_add_(1, pos, err.T.double())
        self.num_recon.index_add_(1, pos, rec.T.double())
        self.f_sq.index_add_(0, pos, v2.double())
        self.n_active.index_add_(0, pos, torch.ones_like(pos))

    def result(self, thresholds: ScalingThresholds | None = None) -> LatentScaling:
        """β, ν and verdicts from the accumulated sums (warns when some estimates rest on few tokens)."""
        t = thresholds or ScalingThresholds()
        denom = self.D_sq.double()[None] * self.f_sq[None]  # [1, k]
        live = self.f_sq > 0
        beta_e = torch.where(live[None], self.num_error / denom.clamp_min(1e-30), torch.nan).float()
        beta_r = torch.where(live[None], self.num_recon / denom.clamp_min(1e-30), torch.nan).float()
        idx = torch.arange(len(self.latents))
        other = 1 - self.own
        nu_e = ratio(beta_e[other, idx], beta_e[self.own, idx], t.ratio_floor)
        nu_r = ratio(beta_r[other, idx], beta_r[self.own, idx], t.ratio_floor)
        reliable = self.n_active >= t.min_active
        flags = [flag_of(float(e), float(r), bool(a), t) for e, r, a in zip(nu_e, nu_r, live)]
        weak = int((~reliable & live).sum())
        if weak:
            warnings.warn(
                f"Latent Scaling: {weak} of {len(self.latents)} latents were active on fewer than "
                f"{t.min_active} tokens, so their β is unstable (marked beta_reliable: false); "
                "read more tokens from the store for stable estimates",
                stacklevel=2,
            )
        n_active = self.n_active.clone()
        return LatentScaling(
            self.latents, self.own, beta_e, beta_r, nu_e, nu_r, n_active, reliable, flags
        )


def ratio(other: torch.Tensor, own: torch.Tensor, floor: float) -> torch.Tensor:
    """``other / max(own, floor)`` elementwise: the Latent Scaling ratio with a stabilised denominator."""
    return other / own.clamp_min(floor)


def flag_of(nu_error: float, nu_recon: float, active: bool, t: ScalingThresholds) -> str:
    """The verdict for one latent's ratios (shrinkage checked before decoupling)."""
    if not active:
        return "inactive"
    if nu_error >= t.shrinkage_above:
        return "complete_shrinkage"
    if nu_recon >= t.decoupling_above:
        return "latent_decoupling"
    return "genuine"


@torch.no_grad()
def latent_scaling(
    cc, batches, latents, own, *, thresholds: ScalingThresholds | None = None
) -> LatentScaling:
    """Latent Scaling of ``latents`` over ``batches`` of normalised activations ``[B, 2, d]``.

    ``cc`` is a crosscoder (``encode``, ``decode``, ``W_dec``); ``batches`` yields
    tensors or objects with an ``acts`` field (a store's ``StoreBatch``).
    """
    acc = LatentScalingAccumulator(cc.W_dec, latents, own)
    for batch in batches:
        x = getattr(batch, "acts", batch).float()  # [B, 2, d]
        f = cc.encode(x)  # [B, n]
        acc.update(x, cc.decode(f), f)
    return acc.result(thresholds)
