"""Figures of a crosscoder analysis, as PNG files (matplotlib, Agg backend: no display needed).

* the relative-decoder-norm histogram (Minder et al. 2025 report it, not only the class counts);
* ν_ε against ν_r for the latents Latent Scaling looked at;
* the decoder-cosine histogram of shared latents (low cosine: the concept's direction moved).
"""

from __future__ import annotations

from pathlib import Path

import torch

from diffing.plotting import pyplot, save_figure


def delta_histogram_png(
    delta: torch.Tensor, path: str | Path, *, thresholds=None, bins: int = 50
) -> Path:
    """Histogram of Δ over [0, 1] with the class thresholds drawn; log count axis (shared latents dominate)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(delta.float().clamp(0, 1).numpy(), bins=bins, range=(0, 1), color="#4c72b0")
    ax.set_yscale("log")
    if thresholds is not None:
        for x in (
            thresholds.base_only_below,
            thresholds.shared_low,
            thresholds.shared_high,
            thresholds.chat_only_above,
        ):
            ax.axvline(x, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("relative decoder norm Δ (0 base-only, 1 chat-only)")
    ax.set_ylabel("latents")
    return save_figure(fig, path)


def nu_scatter_png(
    nu_error: torch.Tensor,
    nu_recon: torch.Tensor,
    labels: list[str],
    path: str | Path,
    *,
    thresholds=None,
) -> Path:
    """ν_ε (x) against ν_r (y), one point per latent, coloured by ``labels`` (e.g. ``chat_only``/``base_only``)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 4.5))
    colours = {"chat_only": "#c44e52", "base_only": "#4c72b0"}
    for label in sorted(set(labels)):
        sel = torch.tensor([lab == label for lab in labels], dtype=torch.bool)
        ax.scatter(
            nu_error[sel].numpy(),
            nu_recon[sel].numpy(),
            s=8,
            alpha=0.7,
            label=label,
            color=colours.get(label),
        )
    if thresholds is not None:
        ax.axvline(thresholds.shrinkage_above, color="grey", lw=0.8, ls="--")
        ax.axhline(thresholds.decoupling_above, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("ν_ε (high: complete shrinkage)")
    ax.set_ylabel("ν_r (high: latent decoupling)")
    if labels:
        ax.legend(fontsize=8)
    return save_figure(fig, path)


def cosine_histogram_png(cosine: torch.Tensor, path: str | Path, *, bins: int = 40) -> Path:
    """Histogram of decoder cosines (pass the shared latents' values)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(cosine.float().numpy(), bins=bins, range=(-1, 1), color="#55a868")
    ax.set_xlabel("cos(d_j^base, d_j^chat)")
    ax.set_ylabel("latents")
    return save_figure(fig, path)
