"""The rate-vs-α figure of an amplification sweep, drawn from the ``amplify.json`` dictionary alone."""

from __future__ import annotations

from pathlib import Path


def rates_figure(data: dict, path: str | Path) -> Path:
    """Line plot: share of completions containing the target at each α, with the base alone as a line.

    α = 0 (the fine-tuned model alone) is marked on the curve; settings without a
    rate (no target) are skipped.
    """
    from diffing.plotting import pyplot, save_figure

    plt = pyplot()

    runs = [r for r in data["alphas"] if r["rate"] is not None]
    runs.sort(key=lambda r: r["alpha"])
    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.plot([r["alpha"] for r in runs], [r["rate"] for r in runs], "o-", color="#c44e52",
            label=f"amplified ({data['formula']})")  # fmt: skip
    ft = [r for r in runs if r["alpha"] == 0]
    if ft:
        ax.plot(
            [0], [ft[0]["rate"]], "s", color="#4c72b0", markersize=9, label="fine-tuned (α = 0)"
        )
    base = data.get("base_model")
    if base and base["rate"] is not None:
        ax.axhline(base["rate"], color="#55a868", linestyle="--", label="base")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("α")
    ax.set_ylabel("share of completions")
    ax.set_title(f"completions containing {data['target']!r}")
    ax.legend(fontsize=7, loc="best")
    return save_figure(fig, path)
