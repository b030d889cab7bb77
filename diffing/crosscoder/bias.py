"""The part of fine-tuning no latent carries: the difference of the crosscoder's decoder biases.

A crosscoder has one decoder bias per model, so whatever fine-tuning adds on every
token alike ends up in ``b_dec^f − b_dec^b`` and in no latent. Counting chat-only
latents cannot see it, yet narrow fine-tunes leave exactly such a near-constant
shift, and reading it through the logit lens names what they were tuned on
(Minder et al. 2025, "Narrow Finetuning Leaves Clearly Readable Traces in
Activation Differences"; docs/methods.md section 5). The analysis therefore reports the
bias difference in the model's raw units, how much of the activation difference on
the analysed tokens is one constant vector, its logit lens through the fine-tuned
model, and (in the causal check) how much of the fine-tuned model's behaviour adding
it to the base's activations restores.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from diffing.crosscoder.analysis import json_number


class DifferenceMoments:
    """Running mean and mean squared norm of ``x_f − x_b`` (raw units) over a stream of store batches."""

    def __init__(self, d_model: int, norm_scales):
        self.s_b, self.s_f = (float(s) for s in norm_scales)
        self.sum = torch.zeros(d_model, dtype=torch.float64)  # [d]
        self.sq = 0.0
        self.n = 0

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Add a batch ``x [B, 2, d]`` of store-normalised activations (base = 0, fine-tuned = 1)."""
        diff = x[:, 1].double() / self.s_f - x[:, 0].double() / self.s_b  # [B, d]
        self.sum += diff.sum(0).cpu()
        self.sq += float(diff.pow(2).sum())
        self.n += diff.shape[0]

    def mean(self) -> torch.Tensor:
        """``[d]`` mean difference ``E_t[x_f − x_b]``."""
        return self.sum / max(self.n, 1)

    def mean_square(self) -> float:
        """``E_t ||x_f − x_b||²``."""
        return self.sq / max(self.n, 1)


class BiasShift(NamedTuple):
    """The decoder-bias difference and how it compares with the activation difference it summarises."""

    difference: torch.Tensor
    """``[d]`` ``b_dec^f / s_f − b_dec^b / s_b``: the shift the crosscoder adds to every token, raw units."""
    norm: float
    """Norm of ``difference``."""
    mean_difference_norm: float
    """``||E_t[x_f − x_b]||`` over the analysed tokens (raw units)."""
    rms_difference: float
    """``sqrt(E_t ||x_f − x_b||²)``: the typical size of the whole activation difference."""
    constant_fraction: float
    """``||E_t[x_f − x_b]||² / E_t ||x_f − x_b||²``: share of the difference's energy that is one
    constant vector (0: it varies from token to token; 1: fine-tuning added the same vector everywhere)."""
    bias_cosine: float
    """Cosine between ``difference`` and the mean activation difference (NaN when either is zero)."""
    n_tokens: int
    """Tokens the moments are over."""


@torch.no_grad()
def bias_shift(cc, moments: DifferenceMoments) -> BiasShift:
    """The crosscoder's decoder-bias difference, set against the moments of the activation difference."""
    b = cc.b_dec.detach().double().cpu()  # [2, d] store-normalised
    diff = b[1] / moments.s_f - b[0] / moments.s_b  # [d] raw units
    mean = moments.mean()  # [d]
    ms = moments.mean_square()
    denom = float(diff.norm() * mean.norm())
    return BiasShift(
        difference=diff.float(),
        norm=float(diff.norm()),
        mean_difference_norm=float(mean.norm()),
        rms_difference=math.sqrt(ms),
        constant_fraction=float(mean.pow(2).sum()) / ms if ms > 0 else float("nan"),
        bias_cosine=float(diff @ mean) / denom if denom > 0 else float("nan"),
        n_tokens=moments.n,
    )


def bias_json(shift: BiasShift, lens: dict[str, list[dict]] | None = None) -> dict:
    """``summary.json``'s ``decoder_bias`` entry: the numbers and, when computed, the logit lens per model."""
    out = {
        "norm": json_number(shift.norm),
        "mean_difference_norm": json_number(shift.mean_difference_norm),
        "rms_difference": json_number(shift.rms_difference),
        "constant_fraction": json_number(shift.constant_fraction),
        "bias_cosine": json_number(shift.bias_cosine),
        "n_tokens": shift.n_tokens,
    }
    if lens:
        out["logit_lens"] = lens
    return out
