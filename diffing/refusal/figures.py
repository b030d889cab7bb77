"""Heat maps of candidate scores by layer and post-instruction position."""

from __future__ import annotations

from pathlib import Path


def plot_scores(
    scores,
    positions: list[int],
    out: str | Path,
    *,
    selected: tuple[int, int] | None = None,
    title: str = "",
) -> Path:
    """Write a PNG with one heat map per score (bypass, induce, KL); the selected candidate is circled.

    ``scores`` is a :class:`~diffing.refusal.select.CandidateScores`; NaN cells (skipped zero
    candidates) stay blank; candidates failing a filter are hatched-out by a dot.
    """
    from diffing.plotting import pyplot, save_figure

    plt = pyplot()

    panels = (
        ("bypass (lower = refusal removed)", scores.bypass),
        ("induce (higher = refusal added)", scores.induce),
        ("KL on harmless (ablation)", scores.kl),
    )
    n_layers = scores.bypass.shape[0]
    fig, axes = plt.subplots(
        1, 3, figsize=(3 * (2.0 + 0.35 * len(positions)), 2.5 + 0.25 * n_layers), squeeze=False
    )
    for ax, (name, values) in zip(axes[0], panels):
        img = ax.imshow(values.float().numpy(), aspect="auto", origin="lower", cmap="viridis")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("position (from end)")
        ax.set_ylabel("layer (block input)")
        ax.set_yticks(range(n_layers))
        ax.set_xticks(range(len(positions)), [str(p) for p in positions], fontsize=7)
        bad = (~scores.valid).nonzero().tolist()
        if bad:
            ys, xs = zip(*bad)
            ax.scatter(xs, ys, s=6, c="white", marker=".", linewidths=0)
        if selected is not None:
            ax.scatter(
                [selected[1]],
                [selected[0]],
                s=120,
                facecolors="none",
                edgecolors="red",
                linewidths=1.5,
            )
        fig.colorbar(img, ax=ax, fraction=0.05)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, out, dpi=100)


def selected_index(direction, positions: list[int]) -> tuple[int, int]:
    """``(layer, column)`` of a direction in the heat maps."""
    return direction.layer, positions.index(direction.position)


__all__ = ["plot_scores", "selected_index"]
